"""Foreground mask cleaning, the same recipe for curation, generation and evaluation.

Source masks are noisy (JPEG artefacts, stray blobs, soft edges). Cleaning: Gaussian blur 5x5,
threshold at 10/255, morphological close then open with a 5x5 kernel, keep the largest connected
component, filled. The result is a boolean array of the input's size.
"""

from __future__ import annotations

import cv2
import numpy as np


BLUR_KERNEL = 5
THRESHOLD = 10
MORPH_KERNEL = 5


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


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """Blur, threshold, close, open and keep the largest component; returns a bool HxW array."""
    grey = cv2.GaussianBlur(to_grey(mask), (BLUR_KERNEL, BLUR_KERNEL), 0)
    binary = (grey > THRESHOLD).astype(np.uint8)
    kernel = np.ones((MORPH_KERNEL, MORPH_KERNEL), np.uint8)
    binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, kernel)
    binary = cv2.morphologyEx(binary, cv2.MORPH_OPEN, kernel)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return np.zeros(binary.shape, dtype=bool)
    largest = max(contours, key=cv2.contourArea)
    out = np.zeros(binary.shape, dtype=np.uint8)
    cv2.drawContours(out, [largest], -1, 1, thickness=cv2.FILLED)
    return out.astype(bool)
