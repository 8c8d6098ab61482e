"""Device augmentations: each operation against its definition (PIL's ImageEnhance, colorsys, a pixel shift),
applied only to the rows that drew it, and drawn reproducibly from the tuple's RNG."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance

from nearid.training.augment import PARAMS, apply_augment, draw_augment


def identity_rows(n: int) -> torch.Tensor:
    return torch.from_numpy(np.stack([draw_augment(np.random.default_rng(0), 0.0, 0.0, 0.0) for _ in range(n)]))


def photo(seed: int = 0, size: int = 16) -> torch.Tensor:
    """A random RGB image as uint8-valued floats in [0, 1], ``[1, 3, size, size]``."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255


def as_pil(x: torch.Tensor) -> Image.Image:
    return Image.fromarray((x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def jitter_row(op: int, factor: float = 1.0, hue: float = 0.0) -> torch.Tensor:
    row = identity_rows(1)
    row[0, 0] = 1.0
    row[0, 1:5] = torch.tensor([op, *[o for o in range(4) if o != op]], dtype=torch.float32)
    row[0, 5 + min(op, 2)] = factor if op < 3 else 1.0
    row[0, 8] = hue
    return row


def test_identity_rows_change_nothing() -> None:
    x = torch.cat([photo(0), photo(1)])
    assert torch.equal(apply_augment(x, identity_rows(2)), x)


@pytest.mark.parametrize(
    ("op", "enhancer"), [(0, ImageEnhance.Brightness), (1, ImageEnhance.Contrast), (2, ImageEnhance.Color)]
)
@pytest.mark.parametrize("factor", [0.8, 1.2])
def test_enhancements_follow_pil(op: int, enhancer, factor: float) -> None:
    x = photo(op)
    ours = apply_augment(x, jitter_row(op, factor))
    reference = torch.from_numpy(np.array(enhancer(as_pil(x)).enhance(factor))).permute(2, 0, 1)[None] / 255
    # PIL rounds its grey level and result to uint8; we keep floats: within two uint8 steps
    assert float((ours - reference).abs().max()) <= 2.5 / 255


def test_hue_rotation_follows_colorsys() -> None:
    x = photo(3)
    shift = 0.04
    ours = apply_augment(x, jitter_row(3, hue=shift))[0].permute(1, 2, 0).reshape(-1, 3).numpy()
    for (r, g, b), got in zip(x[0].permute(1, 2, 0).reshape(-1, 3).tolist(), ours, strict=True):
        h, s, v = colorsys.rgb_to_hsv(r, g, b)
        assert got == pytest.approx(colorsys.hsv_to_rgb((h + shift) % 1.0, s, v), abs=1e-5)


def test_flip_and_affine_touch_only_their_rows() -> None:
    x = torch.cat([photo(4, 8), photo(5, 8)])
    rows = identity_rows(2)
    rows[0, 9] = 1.0  # flip image 0
    rows[1, 10], rows[1, 12] = 1.0, 0.25  # shift image 1 right by a quarter of its width (2 pixels)
    out = apply_augment(x, rows)
    assert torch.equal(out[0], x[0].flip(-1))
    torch.testing.assert_close(out[1, :, :, 2:], x[1, :, :, :-2], atol=1e-6, rtol=0)
    assert (out[1, :, :, :2] == 0).all()  # black fill


def test_draws_are_reproducible_and_in_range() -> None:
    first = draw_augment(np.random.default_rng([7, 1, 3]), 1.0, 1.0, 1.0)
    again = draw_augment(np.random.default_rng([7, 1, 3]), 1.0, 1.0, 1.0)
    assert np.array_equal(first, again) and first.shape == (PARAMS,)
    assert sorted(first[1:5].tolist()) == [0, 1, 2, 3]
    assert ((0.8 <= first[5:8]) & (first[5:8] <= 1.2)).all() and abs(first[8]) <= 0.05
    assert 0.9 <= first[11] <= 1.1 and (np.abs(first[12:14]) <= 0.1).all()


def test_wrong_parameter_shape_is_refused() -> None:
    with pytest.raises(ValueError, match=r"expected augment parameters of shape \(2, 14\)"):
        apply_augment(torch.zeros(2, 3, 4, 4), torch.zeros(1, PARAMS))
