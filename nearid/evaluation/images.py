"""What a scorer sees: evaluation conditions, content hashes of scorer inputs and foreground masking.

An image is identified by ``(condition, hash)``. For the full image the hash is the SHA-256 of its stored bytes
(or of its pixels when only a decoded image exists); for the foreground-only condition it also covers the mask and
the masking recipe, so the same picture under two masks is two inputs and an unchanged one is never recomputed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal

import numpy as np
from PIL import Image

from nearid.common.masks import clean_mask


Condition = Literal["full", "foreground"]
CONDITIONS: tuple[Condition, ...] = ("full", "foreground")
# Part of every foreground cache key: keep the text as long as the recipe is the same (it names the module that
# cleaned masks when the recipe was written, now nearid.common.masks), and bump the version when the recipe changes.
FOREGROUND_RECIPE = "fg-v1: mask cleaned (nearid.masks), nearest-resized to the image, background set to black"

ImageId = tuple[str, str]
"""(condition, content hash) of one scorer input."""
PairId = tuple[str, str, str]
"""(condition, hash of image A, hash of image B) of one ordered judge input."""


def check_conditions(conditions: Sequence[str]) -> tuple[Condition, ...]:
    """Validated, de-duplicated conditions in the given order."""
    if not conditions:
        raise ValueError(f"at least one condition is needed; choose from {list(CONDITIONS)}")
    unknown = [c for c in conditions if c not in CONDITIONS]
    if unknown:
        raise ValueError(f"unknown condition(s) {unknown}; choose from {list(CONDITIONS)}")
    return tuple(dict.fromkeys(conditions))  # type: ignore[arg-type]


def bytes_digest(data: bytes) -> str:
    """SHA-256 of stored bytes (an encoded image, a mask PNG)."""
    return hashlib.sha256(data).hexdigest()


def pixels_digest(image: Image.Image) -> str:
    """SHA-256 of a decoded image's mode, size and pixels."""
    digest = hashlib.sha256(f"{image.mode}:{image.size[0]}x{image.size[1]}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def mask_digest(mask: np.ndarray) -> str:
    """SHA-256 of a boolean mask's shape and bits."""
    array = np.asarray(mask, dtype=bool)
    digest = hashlib.sha256(f"mask:{array.shape}:".encode())
    digest.update(np.packbits(array).tobytes())
    return digest.hexdigest()


def foreground_key(image_hash: str, mask_hash: str, recipe: str = FOREGROUND_RECIPE) -> str:
    """The hash of a foreground-only input: the image, the mask and the masking recipe."""
    return hashlib.sha256(f"{recipe}\0{image_hash}\0{mask_hash}".encode()).hexdigest()


def apply_foreground(image: Image.Image, mask: np.ndarray, clean: bool = True) -> Image.Image:
    """Black out everything outside the object mask (cleaned first unless ``clean`` is False).

    A mask of another size than the image (a distractor stored at 512 px for a smaller view) is resized with
    nearest neighbour, so it stays binary.
    """
    binary = clean_mask(mask) if clean else np.asarray(mask, dtype=bool)
    if binary.shape != (image.height, image.width):
        resized = Image.fromarray(binary.astype(np.uint8) * 255).resize(image.size, Image.Resampling.NEAREST)
        binary = np.asarray(resized) > 127
    return Image.fromarray(np.asarray(image.convert("RGB")) * binary[:, :, None])
