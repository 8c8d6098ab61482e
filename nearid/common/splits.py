"""Deterministic train/val/test splits chosen by a stable hash of the identity id."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


SPLIT_SALT = "nearid-split-v1"
VAL_CAP, TEST_CAP = 100, 500
VAL_FRACTION, TEST_FRACTION = 0.05, 0.15


def default_split_sizes(n: int, val_cap: int = VAL_CAP, test_cap: int = TEST_CAP) -> tuple[int, int]:
    """Validation and test sizes for ``n`` identities.

    The paper's 100 / 500 at full scale; for smaller inputs 5 % / 15 % of ``n`` (at least one each),
    which reaches the caps at about 3,334 identities, so small demo datasets still get a test set
    large enough to measure on.
    """
    if n < 3:
        raise ValueError(f"need at least 3 identities to make train/val/test splits, got {n}")
    n_val = min(val_cap, max(1, round(n * VAL_FRACTION)))
    n_test = min(test_cap, max(1, round(n * TEST_FRACTION)))
    return n_val, n_test


def _rank_key(identity_id: int, salt: str) -> str:
    return hashlib.sha256(f"{salt}:{identity_id}".encode()).hexdigest()


def assign_splits(ids: Iterable[int], n_val: int, n_test: int, salt: str = SPLIT_SALT) -> dict[int, str]:
    """Map each id to ``train``/``val``/``test``: ids sorted by hash, the first ``n_val`` are val,
    the next ``n_test`` test. Independent of input order; a different ``salt`` gives another draw."""
    unique = sorted({int(i) for i in ids}, key=lambda i: _rank_key(i, salt))
    if n_val < 0 or n_test < 0 or n_val + n_test >= len(unique):
        raise ValueError(f"cannot take {n_val} val + {n_test} test from {len(unique)} identities and keep a train set")
    return {
        identity_id: "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
        for rank, identity_id in enumerate(unique)
    }
