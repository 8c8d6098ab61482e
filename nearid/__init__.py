"""nearid: identity-aware image embeddings trained on near-identity distractors.

Importing this package is cheap (no torch); heavy libraries load inside the functions that need them.
"""

__version__ = "0.1.0"
