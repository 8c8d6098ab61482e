"""Correlations: Pearson r, the Fisher-z mean, and Mind-the-Glitch's part-level oracle and M-O alignment.

Definitions follow the NearID paper: the Fisher-z mean of appendix E.2 (Eq. 6) and the MTG oracle of §3.4 and
appendix E.3. Only numpy is imported.

Differences from the authors' evaluation code: they use pandas' pairwise-complete Pearson and map an undefined r
to 0; here the caller selects samples with ``valid`` and an undefined r (constant input) raises. They clip r to
+-0.999 before the Fisher transform for MTG (+-0.9999 for DreamBench++); the clip here is a parameter (default
0.9999) and only matters when some ``|r|`` exceeds it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from nearid.evaluation.metrics.arrays import bool_array, float_array


FISHER_Z_MAX_ABS_R = 0.9999


def pearson(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Pearson correlation of two finite 1-D arrays of equal length (at least 2).

    Raises ``ValueError`` when either input is constant, where r is undefined.
    """
    xs = float_array("x", x, 1)
    ys = float_array("y", y, 1)
    if xs.shape != ys.shape:
        raise ValueError(f"x and y must have the same length, got {xs.shape[0]} and {ys.shape[0]}")
    if xs.shape[0] < 2:
        raise ValueError(f"Pearson r needs at least 2 points, got {xs.shape[0]}")
    for name, values in (("x", xs), ("y", ys)):
        if not np.isfinite(values).all():
            raise ValueError(f"{name} has non-finite values at indices {np.flatnonzero(~np.isfinite(values))[:10]}")
        if np.ptp(values) == 0:
            raise ValueError(f"{name} is constant ({values[0]}); Pearson r is undefined")
    dx = xs - xs.mean()
    dy = ys - ys.mean()
    r = float(np.dot(dx, dy) / math.sqrt(float(np.dot(dx, dx)) * float(np.dot(dy, dy))))
    return min(1.0, max(-1.0, r))


def fisher_z_mean(rs: npt.ArrayLike, max_abs_r: float = FISHER_Z_MAX_ABS_R) -> float:
    """Mean correlation through Fisher's z (appendix E.2, Eq. 6): ``tanh(mean(arctanh(r)))``.

    ``arctanh`` is infinite at ``|r| = 1``, so each r is first clipped to ``[-max_abs_r, max_abs_r]``; with the
    default 0.9999 a perfect correlation counts as z ~ 4.95. Values outside [-1, 1] or NaN raise.
    """
    if not 0.0 < max_abs_r < 1.0:
        raise ValueError(f"max_abs_r must be in (0, 1), got {max_abs_r}")
    values = float_array("rs", rs, 1)
    if values.size == 0:
        raise ValueError("fisher_z_mean needs at least one correlation")
    if np.isnan(values).any() or (np.abs(values) > 1.0).any():
        raise ValueError(f"correlations must be finite and in [-1, 1], got {values.tolist()}")
    return float(np.tanh(np.mean(np.arctanh(np.clip(values, -max_abs_r, max_abs_r)))))


def mtg_oracle(
    object_mask: npt.ArrayLike | None,
    part_mask: npt.ArrayLike | None,
    threshold: float = 0.0,
) -> float:
    """MTG part-level oracle ``1 - |part| / |object|`` (paper §3.4): 1 = untouched, 0 = whole object edited.

    Pixels ``> threshold`` are foreground (0 counts any non-zero pixel, as the authors do on "L" masks).
    Edge cases, as in the authors' code: a missing mask (None) or an empty object mask gives 0.0, i.e. it is
    scored as a full edit. The ratio is not clipped, so a part mask larger than the object gives a negative
    oracle; MTG part masks lie inside their object masks.
    """
    if object_mask is None or part_mask is None:
        return 0.0
    obj = np.asarray(object_mask)
    part = np.asarray(part_mask)
    if obj.shape != part.shape:
        raise ValueError(f"object_mask and part_mask must have the same shape, got {obj.shape} and {part.shape}")
    object_area = int(np.count_nonzero(obj > threshold))
    if object_area == 0:
        return 0.0
    return 1.0 - int(np.count_nonzero(part > threshold)) / object_area


def _selected_columns(columns: Mapping[str, npt.ArrayLike], valid: npt.ArrayLike | None) -> dict[str, np.ndarray]:
    """Check same-length 1-D columns, keep the ``valid`` rows and refuse non-finite values there."""
    arrays = {name: float_array(name, values, 1) for name, values in columns.items()}
    lengths = {name: array.shape[0] for name, array in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"all inputs must have the same length, got {lengths}")
    n = next(iter(lengths.values()))
    keep = np.ones(n, dtype=bool) if valid is None else bool_array("valid", valid, (n,))
    for name, array in arrays.items():
        bad = keep & ~np.isfinite(array)
        if bad.any():
            raise ValueError(
                f"{name} is non-finite at valid sample(s) {np.flatnonzero(bad)[:10].tolist()}; "
                "exclude them with `valid`"
            )
    return {name: array[keep] for name, array in arrays.items()}


def mo_score(
    s_1_1p: npt.ArrayLike,
    s_2_2p: npt.ArrayLike,
    s_1_2p: npt.ArrayLike,
    s_2_1p: npt.ArrayLike,
    o1: npt.ArrayLike,
    o2: npt.ArrayLike,
    valid: npt.ArrayLike | None = None,
    max_abs_r: float = FISHER_Z_MAX_ABS_R,
) -> float:
    """MTG metric-to-oracle alignment M-O: Fisher-z mean of four Pearson correlations across samples.

    The pairs are (s(1,1'), o1), (s(2,2'), o2), (s(1,2'), o2) and (s(2,1'), o1): each edited image is
    compared with the original in its own background and with the original in the other one. ``valid`` [N]
    selects the samples that enter all four correlations (default: all).
    """
    cols = _selected_columns(
        {"s_1_1p": s_1_1p, "s_2_2p": s_2_2p, "s_1_2p": s_1_2p, "s_2_1p": s_2_1p, "o1": o1, "o2": o2}, valid
    )
    rs = [
        pearson(cols["s_1_1p"], cols["o1"]),
        pearson(cols["s_2_2p"], cols["o2"]),
        pearson(cols["s_1_2p"], cols["o2"]),
        pearson(cols["s_2_1p"], cols["o1"]),
    ]
    return fisher_z_mean(rs, max_abs_r)


def mo_pair(
    s_1_1p: npt.ArrayLike,
    s_2_2p: npt.ArrayLike,
    o1: npt.ArrayLike,
    o2: npt.ArrayLike,
    valid: npt.ArrayLike | None = None,
    max_abs_r: float = FISHER_Z_MAX_ABS_R,
) -> float:
    """MTG M-O pair: Fisher-z mean of the two same-background correlations (s(1,1'), o1) and (s(2,2'), o2)."""
    cols = _selected_columns({"s_1_1p": s_1_1p, "s_2_2p": s_2_2p, "o1": o1, "o2": o2}, valid)
    rs = [pearson(cols["s_1_1p"], cols["o1"]), pearson(cols["s_2_2p"], cols["o2"])]
    return fisher_z_mean(rs, max_abs_r)
