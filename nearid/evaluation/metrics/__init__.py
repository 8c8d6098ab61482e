"""Benchmark metrics: ``discrimination`` (SSR and PA, pooling over sources, MTG) and ``correlation`` (Pearson,
Fisher-z, the MTG oracle and M-O). Only numpy is imported."""

from nearid.evaluation.metrics.correlation import (
    FISHER_Z_MAX_ABS_R,
    fisher_z_mean,
    mo_pair,
    mo_score,
    mtg_oracle,
    pearson,
)
from nearid.evaluation.metrics.discrimination import (
    SOURCE_GROUPS,
    SOURCES,
    Discrimination,
    discrimination,
    mtg_discrimination,
    pool,
    pool_group,
)


__all__ = [
    "FISHER_Z_MAX_ABS_R",
    "SOURCES",
    "SOURCE_GROUPS",
    "Discrimination",
    "discrimination",
    "fisher_z_mean",
    "mo_pair",
    "mo_score",
    "mtg_discrimination",
    "mtg_oracle",
    "pearson",
    "pool",
    "pool_group",
]
