"""Per-slot training augmentations: drawn on the CPU from each tuple's keyed RNG, painted on the device.

A worker draws every slot's parameters (:func:`draw_augment`, a few numbers), so a tuple is the same in any worker
and after a resume; the device applies them to the whole batch at once (:func:`apply_augment`), where the pixel
work costs nothing next to the backbone. Colour jitter (brightness, contrast, saturation, hue, in a random order),
horizontal flip and a small translate/scale are drawn independently for every slot, so a positive and the
distractor that shares its background get different draws. Role-aware foreground masking happens before, in the
worker (``nearid.training.data``).

The operations follow PIL's ``ImageEnhance`` definitions (brightness blends with black, contrast with the mean
grey level, saturation with the greyscale image) on values in [0, 1], clamped after each one.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


JITTER, ORDER, FACTORS, HUE, FLIP, AFFINE, SCALE, SHIFT = 0, slice(1, 5), slice(5, 8), 8, 9, 10, 11, slice(12, 14)
PARAMS = 14
"""Columns of one slot's parameter row: jitter on, the order of the 4 jitter operations (0 brightness, 1 contrast,
2 saturation, 3 hue), brightness/contrast/saturation factors, hue shift (turns), flip on, affine on, affine scale,
affine shift (x, y) as fractions of the width and height."""

GREY = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, PIL's "L" conversion


def draw_augment(rng: np.random.Generator, flip_prob: float, jitter_prob: float, affine_prob: float) -> np.ndarray:
    """One slot's parameter row (identity unless a draw turns an operation on)."""
    row = np.zeros(PARAMS, dtype=np.float32)
    row[ORDER], row[FACTORS], row[SCALE] = (0, 1, 2, 3), 1.0, 1.0
    if rng.random() < jitter_prob:
        row[JITTER] = 1.0
        row[ORDER] = rng.permutation(4)
        row[FACTORS] = rng.uniform(0.8, 1.2, size=3)
        row[HUE] = rng.uniform(-0.05, 0.05)
    if rng.random() < flip_prob:
        row[FLIP] = 1.0
    if rng.random() < affine_prob:
        row[AFFINE] = 1.0
        row[SCALE] = rng.uniform(0.9, 1.1)
        row[SHIFT] = rng.uniform(-0.1, 0.1, size=2)
    return row


def _grey(x: torch.Tensor) -> torch.Tensor:
    """Luma ``[N, 1, H, W]`` of RGB values in [0, 1]."""
    weights = torch.tensor(GREY, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


def _blend(degenerate: torch.Tensor, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL's ``Image.blend(degenerate, x, factor)``, clamped to [0, 1]."""
    return (degenerate + factor.view(-1, 1, 1, 1) * (x - degenerate)).clamp(0.0, 1.0)


def _shift_hue(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``turns`` of the colour circle (HSV round trip), keeping saturation and value."""
    value, _ = x.max(dim=1)
    low, _ = x.min(dim=1)
    chroma = value - low
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    r, g, b = x.unbind(dim=1)
    hue = torch.where(
        value == r,
        ((g - b) / safe) % 6.0,
        torch.where(value == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0),
    )
    hue = torch.where(chroma > 0, hue / 6.0, torch.zeros_like(hue))
    hue = (hue + turns.view(-1, 1, 1)) % 1.0
    # back to RGB: each channel k is v - c * clamp(min(h6 - k', 4 - (h6 - k')), 0, 1) with k' = (5, 3, 1)
    h6 = hue * 6.0
    channels = []
    for offset in (5.0, 3.0, 1.0):
        k = (h6 + offset) % 6.0
        channels.append(value - chroma * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0))
    return torch.stack(channels, dim=1)


def _jitter(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Colour jitter of every image whose row turns it on, each in its own operation order."""
    on = params[:, JITTER] > 0
    if not on.any():
        return x
    x = x.clone()
    for position in range(4):
        for op in range(4):
            rows = (on & (params[:, ORDER][:, position] == op)).nonzero().squeeze(1)
            if rows.numel() == 0:
                continue
            part = x[rows]
            if op == 0:
                part = _blend(torch.zeros_like(part), part, params[rows, FACTORS.start])
            elif op == 1:
                mean = _grey(part).mean(dim=(1, 2, 3), keepdim=True).expand_as(part)
                part = _blend(mean, part, params[rows, FACTORS.start + 1])
            elif op == 2:
                part = _blend(_grey(part).expand_as(part), part, params[rows, FACTORS.start + 2])
            else:
                part = _shift_hue(part, params[rows, HUE])
            x[rows] = part
    return x


def _affine(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Scale about the centre and shift, bilinear, black outside, for the rows that turn it on."""
    rows = (params[:, AFFINE] > 0).nonzero().squeeze(1)
    if rows.numel() == 0:
        return x
    scale = params[rows, SCALE]
    shift = params[rows, SHIFT]
    # affine_grid maps output to input in [-1, 1] coordinates: x_in = (x_out - 2 * shift) / scale
    theta = torch.zeros((rows.numel(), 2, 3), dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / scale
    theta[:, :, 2] = -2.0 * shift / scale.unsqueeze(1)
    grid = F.affine_grid(theta, [rows.numel(), *x.shape[1:]], align_corners=False)
    x = x.clone()
    x[rows] = F.grid_sample(x[rows], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return x


def apply_augment(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Augment a batch ``[N, 3, H, W]`` of values in [0, 1] with per-image parameter rows ``[N, PARAMS]``."""
    if params.shape != (x.shape[0], PARAMS):
        raise ValueError(f"expected augment parameters of shape ({x.shape[0]}, {PARAMS}), got {tuple(params.shape)}")
    params = params.to(device=x.device, dtype=x.dtype)
    x = _jitter(x, params)
    flip = params[:, FLIP] > 0
    if flip.any():
        x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    return _affine(x, params)
