"""Checked numpy views of metric inputs: a wrong rank, shape or dtype is a ``ValueError`` naming the input."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def float_array(name: str, value: npt.ArrayLike, ndim: int) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {array.shape}")
    return array


def bool_array(name: str, value: npt.ArrayLike, shape: tuple[int, ...]) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype != np.bool_:
        raise ValueError(f"{name} must be a boolean array, got dtype {array.dtype}")
    if array.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    return array
