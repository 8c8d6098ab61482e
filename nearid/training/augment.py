"""Per-slot training augmentations with an explicit RNG (torchvision has no CPU build here).

Role-aware foreground masking blacks out the background; colour jitter, horizontal flip and a small
translate/scale are applied independently to every slot, so a positive and the distractor that shares
its background get different draws.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageEnhance


def mask_background(image: Image.Image, mask: np.ndarray) -> Image.Image:
    """Keep the foreground, black elsewhere; the mask is resized (nearest) to the image if needed."""
    if mask.shape != (image.height, image.width):
        mask = (
            np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(image.size, Image.Resampling.NEAREST)) > 0
        )
    return Image.fromarray(np.where(mask[..., None], np.asarray(image), 0).astype(np.uint8), "RGB")


def colour_jitter(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Brightness, contrast and saturation x U(0.8, 1.2) and hue shift U(-0.05, 0.05), in random order."""
    ops = list(range(4))
    rng.shuffle(ops)
    for op in ops:
        if op == 0:
            image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.8, 1.2))
        elif op == 1:
            image = ImageEnhance.Contrast(image).enhance(rng.uniform(0.8, 1.2))
        elif op == 2:
            image = ImageEnhance.Color(image).enhance(rng.uniform(0.8, 1.2))
        else:
            hsv = np.asarray(image.convert("HSV")).copy()
            hsv[..., 0] = (hsv[..., 0].astype(np.int16) + int(rng.uniform(-0.05, 0.05) * 255)) % 256
            image = Image.fromarray(hsv, "HSV").convert("RGB")
    return image


def random_affine(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Translate by up to 10 % of the size and scale by U(0.9, 1.1) about the centre, black fill."""
    width, height = image.size
    scale = rng.uniform(0.9, 1.1)
    tx, ty = rng.uniform(-0.1, 0.1) * width, rng.uniform(-0.1, 0.1) * height
    cx, cy = width / 2, height / 2
    # PIL maps output to input: x_in = (x_out - cx - tx) / scale + cx
    coeffs = (1 / scale, 0, cx - (cx + tx) / scale, 0, 1 / scale, cy - (cy + ty) / scale)
    return image.transform(image.size, Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))


def augment(
    image: Image.Image, rng: np.random.Generator, flip_prob: float, jitter_prob: float, affine_prob: float
) -> Image.Image:
    """The standard per-slot augmentations, each applied with its probability."""
    if rng.random() < jitter_prob:
        image = colour_jitter(image, rng)
    if rng.random() < flip_prob:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < affine_prob:
        image = random_affine(image, rng)
    return image
