"""Curation: identities in (procedural or a SynCD release), ``identities/`` shards, ``rejects/`` and a report out."""
