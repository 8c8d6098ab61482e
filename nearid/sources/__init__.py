"""Sources of identities: where curation reads multi-view objects from."""
