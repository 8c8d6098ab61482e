"""Kernel PCA in numpy, for the 2-D views of positives and distractors (paper §4.3, Figure 5)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


DEFAULT_GAMMA = 1.0
"""RBF width for unit-length embeddings (squared distances lie in [0, 4]); one fixed value, so projections of
different scorers are made with identical settings, as in the paper's figure."""


def kernel_pca(x: npt.ArrayLike, n_components: int = 2, gamma: float = DEFAULT_GAMMA) -> np.ndarray:
    """Project rows of ``x`` [N, D] onto the top ``n_components`` principal axes of the centred RBF kernel.

    ``k(a, b) = exp(-gamma * |a - b|^2)``; the kernel matrix is double-centred and the coordinates are the
    eigenvectors scaled by the square roots of their eigenvalues (negative round-off clipped to 0). Each axis'
    sign is fixed so that its largest-magnitude coordinate is positive, so the output is deterministic.
    """
    data = np.asarray(x, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"x must be 2-D [N, D], got shape {data.shape}")
    if not np.isfinite(data).all():
        raise ValueError("x has non-finite values")
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    if data.shape[0] <= n_components:
        raise ValueError(
            f"kernel PCA to {n_components} components needs more than {n_components} points, got {data.shape[0]}"
        )
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    squared = np.sum(data * data, axis=1)
    distances = np.maximum(squared[:, None] + squared[None, :] - 2.0 * data @ data.T, 0.0)
    kernel = np.exp(-gamma * distances)
    n = kernel.shape[0]
    centre = np.eye(n) - np.full((n, n), 1.0 / n)
    centred = centre @ kernel @ centre
    eigenvalues, eigenvectors = np.linalg.eigh((centred + centred.T) / 2.0)
    order = np.argsort(eigenvalues)[::-1][:n_components]
    coords = eigenvectors[:, order] * np.sqrt(np.maximum(eigenvalues[order], 0.0))
    for axis in range(coords.shape[1]):
        if coords[np.argmax(np.abs(coords[:, axis])), axis] < 0:
            coords[:, axis] *= -1.0
    return coords
