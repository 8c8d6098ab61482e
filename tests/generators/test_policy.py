from __future__ import annotations

import numpy as np
from PIL import Image

from generators.policy import composite, derive_seed, scaled_pixels, working_size
from generators.prompts import PromptBook
from generators.registry import get_config


def test_working_sizes_respect_each_family() -> None:
    assert working_size(get_config("qwen-1328"), 512, 512) == (1328, 1328)
    assert working_size(get_config("flux-fill-1024"), 700, 500) == (1024, 1024)
    assert working_size(get_config("powerpaint"), 512, 512) == (640, 640)
    assert working_size(get_config("powerpaint"), 1000, 700) == (912, 640)  # 914.3 floored to a multiple of 8
    assert working_size(get_config("powerpaint"), 333, 1001) == (640, 1920)


def test_seeds_depend_on_config_identity_and_view_only() -> None:
    assert derive_seed("sdxl-512", 17, 2) == derive_seed("sdxl-512", 17, 2)
    seeds = {derive_seed(c, i, v) for c in ("sdxl-512", "sdxl-1024") for i in (1, 2) for v in (1, 2, 3)}
    assert len(seeds) == 12 and all(0 <= s < 2**31 for s in seeds)


def test_composite_and_scaling() -> None:
    original = Image.new("RGB", (20, 20), (10, 20, 30))
    generated = Image.new("RGB", (20, 20), (200, 0, 0))
    mask = np.zeros((20, 20), dtype=bool)
    mask[8:12, 8:12] = True
    out = np.asarray(composite(generated, original, mask, dilation=2))
    assert (
        (out[6:14, 6:14] == (200, 0, 0)).all() and (out[:5] == (10, 20, 30)).all() and (out[15:] == (10, 20, 30)).all()
    )
    assert scaled_pixels(7, 512, 1024) == 14 and scaled_pixels(7, 512, 64) == 1 and scaled_pixels(0, 512, 64) == 0


def test_prompts_nearest_and_self() -> None:
    descriptions = {1: "a red striped mug", 2: "a blue striped mug", 3: "a wooden chair", 4: "an oak chair with arms"}
    nearest = PromptBook(descriptions, "nearest", "a photo of {description}")
    assert nearest.prompt(1) == "a photo of a blue striped mug" and nearest.source_of(2) == 1
    assert nearest.source_of(3) == 4
    own = PromptBook(descriptions, "self", "{description}")
    assert own.prompt(3) == "a wooden chair"
    assert own.digest() != nearest.digest()
    assert (
        PromptBook({**descriptions, 5: "x"}, "nearest", "{description}").digest()
        != PromptBook(descriptions, "nearest", "{description}").digest()
    )
