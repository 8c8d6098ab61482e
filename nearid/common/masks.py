"""Foreground mask cleaning: the official recipe for curation and evaluation, and the region a generator repaints.

Source masks are noisy (JPEG artefacts, stray blobs, soft edges). :func:`clean_mask` is the authors' evaluation
recipe: Gaussian blur 5x5, threshold at 10/255, morphological close then open with a 5x5 kernel, keep the largest
connected component, filled. :func:`inpaint_region` denoises the same way but keeps what a generator must not
destroy or leave behind: interior holes (background seen through a ring stays the original's) and every
significant component (a multi-part object is replaced whole). Both return a boolean array of the input's size.
"""

from __future__ import annotations

import cv2
import numpy as np


BLUR_KERNEL = 5
THRESHOLD = 10
MORPH_KERNEL = 5
MIN_COMPONENT_SHARE = 0.05
"""A part of an object is kept when its area is at least this share of the largest part's (stray blobs are not)."""


def to_grey(mask: np.ndarray) -> np.ndarray:
    """A uint8 HxW array from a bool, uint8 greyscale or RGB mask."""
    arr = np.asarray(mask)
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.ndim == 3:
        arr = arr.max(axis=2)  # any channel lit counts, as the SynCD loader's `> 0` does
    if arr.ndim != 2:
        raise ValueError(f"a mask must be HxW or HxWxC, got shape {arr.shape}")
    return arr.astype(np.uint8)


def _denoised(mask: np.ndarray) -> np.ndarray:
    """Blur, threshold, close, open: a uint8 0/1 HxW array."""
    grey = cv2.GaussianBlur(to_grey(mask), (BLUR_KERNEL, BLUR_KERNEL), 0)
    binary = (grey > THRESHOLD).astype(np.uint8)
    kernel = np.ones((MORPH_KERNEL, MORPH_KERNEL), np.uint8)
    binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, kernel)
    return cv2.morphologyEx(binary, cv2.MORPH_OPEN, kernel)


def inpaint_region(mask: np.ndarray) -> np.ndarray:
    """Denoise, then keep every component of at least ``MIN_COMPONENT_SHARE`` of the largest one, holes and all."""
    binary = _denoised(mask)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    if count <= 1:
        return np.zeros(binary.shape, dtype=bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = 1 + np.flatnonzero(areas >= MIN_COMPONENT_SHARE * areas.max())
    return np.isin(labels, keep)


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """Blur, threshold, close, open and keep the largest component, filled; returns a bool HxW array."""
    binary = _denoised(mask)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return np.zeros(binary.shape, dtype=bool)
    largest = max(contours, key=cv2.contourArea)
    out = np.zeros(binary.shape, dtype=np.uint8)
    cv2.drawContours(out, [largest], -1, 1, thickness=cv2.FILLED)
    return out.astype(bool)
