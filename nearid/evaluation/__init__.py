"""Evaluation: metrics (SSR/PA, pooling, correlations), benchmarks (NearID, MTG, DreamBench++), scorers and their
embedding cache, the ``evaluate`` runner and the report."""
