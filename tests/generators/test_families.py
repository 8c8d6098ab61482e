"""The generator contract, checked for every family through ``from_pretrained`` on tiny saved weights."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from generators.base import GeneratorInputError, InpaintRequest
from generators.families import FAMILIES, build_generator
from generators.policy import dilate, resize_pair
from generators.registry import CONFIGS, get_config
from nearid.common.procedural import ObjectSpec, ViewPose, render_background, render_object


SIZE = 64
FAMILY_CONFIGS = {
    "flux-fill": "flux-fill-512",
    "flux-canny": "flux-canny-1024",
    "sdxl-inpaint": "sdxl-1024",
    "qwen-inpaint": "qwen-1328",
    "powerpaint": "powerpaint",
    "procedural": "procedural",
}


def make_view(seed: int, center: tuple[float, float] = (30, 34)) -> tuple[Image.Image, np.ndarray]:
    background, _ = render_background(SIZE, np.random.default_rng(seed))
    spec = ObjectSpec(shape="disc", colour="crimson", pattern="stripes", pattern_colour="white")
    image, mask = render_object(background, spec, ViewPose(center=center, radius=12, angle=10))
    return Image.fromarray(image, "RGB"), mask


def request(seed: int = 1, view_seed: int = 0, mask: np.ndarray | None = None, **changes) -> InpaintRequest:
    image, own_mask = make_view(view_seed)
    base = {
        "identity_id": 7,
        "view": 1,
        "image": image,
        "mask": own_mask if mask is None else mask,
        "prompt": "a scarlet disc with wide white stripes",
        "seed": seed,
    }
    return InpaintRequest(**(base | changes))


@pytest.fixture(scope="module", params=sorted(FAMILY_CONFIGS))
def generator(request: pytest.FixtureRequest, tiny_models_dir):
    config = get_config(FAMILY_CONFIGS[request.param]).with_overrides(steps=2, resolution=SIZE, batch_size=3)
    gen = build_generator(config, model_dir=tiny_models_dir)
    gen.load("cpu", "float32")
    return gen


def test_output_is_512_and_deterministic(generator) -> None:
    first = generator.generate([request(seed=5)])[0]
    again = generator.generate([request(seed=5)])[0]
    assert first.image.size == (512, 512) and first.image.mode == "RGB"
    assert first.raw.size == (SIZE, SIZE)
    assert np.array_equal(np.asarray(first.image), np.asarray(again.image))
    other_seed = generator.generate([request(seed=6)])[0]
    assert not np.array_equal(np.asarray(first.image), np.asarray(other_seed.image))


def test_a_different_mask_changes_the_output(generator) -> None:
    _, moved_mask = make_view(0, center=(36, 30))
    a = generator.generate([request()])[0]
    b = generator.generate([request(mask=moved_mask)])[0]
    assert np.abs(np.asarray(a.image, np.int16) - np.asarray(b.image, np.int16)).max() > 2


def test_compositing_keeps_the_background(generator) -> None:
    req = request()
    out = generator.generate([req])[0]
    reference, region = resize_pair(req.image, req.mask, (512, 512))
    # outside the dilated mask plus the reach of two Lanczos resizes (64 -> 512: 3 px -> 24 px each)
    outside = ~dilate(region, generator.config.composite_dilation + 2 * 24 + 1)
    assert outside.mean() > 0.3
    assert np.array_equal(np.asarray(out.image)[outside], np.asarray(reference)[outside])
    assert out.bg_change == 0.0 and out.fg_change > 0.01
    if generator.family != "procedural":  # the diffusion models repaint the background too
        uncomposited = build_generator(generator.config.with_overrides(composite=False), generator.model_dir)
        uncomposited.load("cpu", "float32")
        assert uncomposited.generate([req])[0].bg_change > 0.0


def test_batch_equals_single_calls(generator) -> None:
    requests = [request(seed=s, view_seed=s) for s in (1, 2, 3)]
    batched = generator.generate(requests)
    for req, out in zip(requests, batched, strict=True):
        single = generator.generate([req])[0]
        diff = np.abs(np.asarray(out.image, np.int16) - np.asarray(single.image, np.int16))
        assert diff.max() <= 2, f"{generator.config.name}: batch differs from single by {diff.max()}"


@pytest.mark.parametrize(
    "changes, reason",
    [
        ({"mask": np.zeros((SIZE, SIZE), dtype=bool)}, "mask-empty"),
        ({"mask": np.ones((SIZE, SIZE + 4), dtype=bool)}, "mask-size-mismatch"),
        ({"image": Image.new("L", (SIZE, SIZE))}, "not-rgb"),
        ({"prompt": "  "}, "empty-prompt"),
    ],
)
def test_bad_inputs_are_refused_with_a_reason(generator, changes: dict, reason: str) -> None:
    with pytest.raises(GeneratorInputError) as error:
        generator.generate([request(**changes)])
    assert error.value.reason == reason


def test_every_family_is_registered() -> None:
    assert set(FAMILY_CONFIGS) | {"null"} == set(FAMILIES)
    assert {c.family for c in CONFIGS.values()} == set(FAMILIES)
