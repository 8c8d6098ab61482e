"""The policy every generator shares: working sizes, per-image seeds, compositing, the 512 output, QC.

Order for one view: clean the mask, resize the image (Lanczos) and the mask (nearest) to the working
size, generate, optionally composite the generated foreground onto the untouched background through
the dilated mask, then Lanczos down to ``output_size`` x ``output_size``.
"""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
from PIL import Image

from generators.config import GeneratorConfig


def working_size(config: GeneratorConfig, width: int, height: int) -> tuple[int, int]:
    """(width, height) the model runs at: ``resolution`` squared, or the shortest side at ``resolution``;
    both sides floored to the family's size multiple."""
    m = config.size_multiple
    if config.resize_mode == "square":
        return config.resolution, config.resolution
    scale = config.resolution / min(width, height)
    return max(m, int(round(width * scale)) // m * m), max(m, int(round(height * scale)) // m * m)


def derive_seed(config_name: str, identity_id: int, view: int) -> int:
    """The seed of one image, from (configuration, identity id, view): any image can be regenerated alone."""
    digest = hashlib.sha256(f"{config_name}:{identity_id}:{view}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def resize_pair(image: Image.Image, mask: np.ndarray, size: tuple[int, int]) -> tuple[Image.Image, np.ndarray]:
    """Image with Lanczos, mask with nearest neighbour (a mask must stay binary)."""
    resized = image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)
    mask_image = Image.fromarray(mask.astype(np.uint8) * 255, "L")
    if mask_image.size != size:
        mask_image = mask_image.resize(size, Image.Resampling.NEAREST)
    return resized, np.asarray(mask_image) > 0


def dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Grow a boolean mask by ``pixels`` (square structuring element)."""
    if pixels <= 0:
        return mask
    kernel = np.ones((2 * pixels + 1, 2 * pixels + 1), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel) > 0


LANCZOS_RADIUS = 3
"""Lanczos-3 reaches 3 source pixels: how far a resize spreads a change."""


def scaled_pixels(pixels: int, from_size: int, to_size: int) -> int:
    """``pixels`` measured at ``from_size`` expressed at ``to_size`` (at least 1 when ``pixels`` > 0)."""
    return 0 if pixels <= 0 else max(1, round(pixels * to_size / from_size))


def composite(generated: Image.Image, original: Image.Image, mask: np.ndarray, dilation: int) -> Image.Image:
    """Generated pixels inside the mask dilated by ``dilation`` pixels, ``original``'s everywhere else, at
    ``original``'s size (the mask is resized with nearest neighbour to it, the generated image with Lanczos)."""
    if generated.size != original.size:
        generated = generated.resize(original.size, Image.Resampling.LANCZOS)
    _, mask = resize_pair(original, mask, original.size)
    region = dilate(mask, dilation)[..., None]
    out = np.where(region, np.asarray(generated.convert("RGB")), np.asarray(original.convert("RGB")))
    return Image.fromarray(out.astype(np.uint8), "RGB")


def to_output(image: Image.Image, size: int) -> Image.Image:
    """The stored distractor: ``size`` x ``size``, Lanczos."""
    return image if image.size == (size, size) else image.resize((size, size), Image.Resampling.LANCZOS)


def qc_scores(output: Image.Image, original: Image.Image, mask: np.ndarray, margin: int) -> tuple[float, float]:
    """(foreground change, background change): mean absolute difference in [0, 1] inside the mask and
    more than ``margin`` output pixels away from it. A distractor should change the first, not the second;
    with compositing, the second is exactly 0 once ``margin`` covers the dilation and the resize kernels."""
    size = output.size
    reference, region = resize_pair(original, mask, size)
    diff = np.abs(np.asarray(output, np.float32) - np.asarray(reference, np.float32)).mean(axis=2) / 255.0
    outside = ~dilate(region, margin)
    fg = float(diff[region].mean()) if region.any() else 0.0
    bg = float(diff[outside].mean()) if outside.any() else 0.0
    return fg, bg
