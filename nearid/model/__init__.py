"""The NearID embedding model (frozen SigLIP2 backbone + trainable MAP head) and its published release layout,
shared by training (which writes it) and evaluation (which scores with it)."""
