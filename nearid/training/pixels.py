"""Pixels for the backbone: the workers ship decoded uint8 images, the device resizes and normalises whole batches.

The recipe is the backbone's own image processor (its height x width, resampling filter, rescale factor, mean and
std), read once with :meth:`PixelSpec.from_processor`. Resizing is antialiased and separable as PIL's is, rounded to
whole uint8 steps after each pass as PIL's uint8 images are, so an un-augmented image reaches the backbone within
one uint8 step per pixel (two when upscaling) of what the processor makes of it at evaluation time; the test
``tests/nearid/training/test_pixels.py`` checks pixels and embeddings. Shipping uint8 at the stored size and doing
the float work on the device keeps the CPU cost of a training image at one PNG decode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F


RESAMPLING: dict[int, Literal["bilinear", "bicubic"]] = {2: "bilinear", 3: "bicubic"}
"""PIL resampling codes the device path reproduces (PIL's BILINEAR = 2, BICUBIC = 3)."""


@dataclass(frozen=True)
class PixelSpec:
    """What the backbone expects: size, filter, rescale factor and per-channel mean and std."""

    height: int
    width: int
    mode: Literal["bilinear", "bicubic"]
    rescale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ValueError(f"pixel size must be positive, got {self.height}x{self.width}")
        if self.mode not in RESAMPLING.values():
            raise ValueError(f"resampling {self.mode!r} is not reproduced on the device; use one of {RESAMPLING}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 channels and std > 0, got {self.mean} and {self.std}")

    @classmethod
    def from_processor(cls, processor: Any) -> PixelSpec:
        """The recipe of a fixed-size image processor (SigLIP's); anything it would do that we cannot is refused."""
        size = processor.size
        height, width = getattr(size, "height", None), getattr(size, "width", None)
        if isinstance(size, dict):
            height, width = size.get("height"), size.get("width")
        if not (height and width) or not getattr(processor, "do_resize", True):
            raise ValueError(f"{type(processor).__name__} does not resize to a fixed height x width (size {size})")
        if getattr(processor, "do_center_crop", False) or getattr(processor, "do_pad", False):
            raise ValueError(f"{type(processor).__name__} crops or pads; the training pixel path only resizes")
        resample = int(getattr(processor, "resample", 2))
        if resample not in RESAMPLING:
            raise ValueError(f"processor resampling {resample} is not one of {sorted(RESAMPLING)} (bilinear, bicubic)")
        normalise = getattr(processor, "do_normalize", True)
        return cls(
            height=int(height),
            width=int(width),
            mode=RESAMPLING[resample],
            rescale=float(processor.rescale_factor) if getattr(processor, "do_rescale", True) else 1.0,
            mean=tuple(float(v) for v in processor.image_mean) if normalise else (0.0, 0.0, 0.0),
            std=tuple(float(v) for v in processor.image_std) if normalise else (1.0, 1.0, 1.0),
        )


def _resize_like_pil(x: torch.Tensor, height: int, width: int, mode: str) -> torch.Tensor:
    """Antialiased resize of uint8-valued floats in two passes, rows then columns, each rounded and clamped to
    whole uint8 steps as PIL's intermediate image is: within one uint8 step of PIL's result everywhere."""
    if x.shape[-1] != width:
        x = F.interpolate(x, size=(x.shape[-2], width), mode=mode, antialias=True, align_corners=False)
        x = x.round_().clamp_(0.0, 255.0)
    if x.shape[-2] != height:
        x = F.interpolate(x, size=(height, width), mode=mode, antialias=True, align_corners=False)
        x = x.round_().clamp_(0.0, 255.0)
    return x


def to_unit(images: Sequence[torch.Tensor], spec: PixelSpec, device: torch.device | str) -> torch.Tensor:
    """uint8 ``H x W x 3`` images (any sizes) -> ``[N, 3, height, width]`` float32 on ``device`` in [0, 1].

    Images of one size are moved and resized together; an image already at the target size is not touched.
    """
    out = torch.empty((len(images), 3, spec.height, spec.width), dtype=torch.float32, device=device)
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[2] != 3:
            raise ValueError(f"image {index}: expected uint8 H x W x 3, got {image.dtype} {tuple(image.shape)}")
        groups.setdefault(tuple(image.shape), []).append(index)
    for indices in groups.values():
        x = torch.stack([images[i] for i in indices]).to(device, non_blocking=True)
        x = _resize_like_pil(x.permute(0, 3, 1, 2).float(), spec.height, spec.width, spec.mode)
        out[torch.tensor(indices, device=device)] = x / 255.0
    return out


def normalise(x: torch.Tensor, spec: PixelSpec) -> torch.Tensor:
    """Values in [0, 1] -> the backbone's input: ``(value * 255 * rescale - mean) / std`` per channel."""
    mean = torch.tensor(spec.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * (255.0 * spec.rescale) - mean) / std
