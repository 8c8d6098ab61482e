"""The generator contract, checked for every family through ``from_pretrained`` on tiny saved weights."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from generators.base import GeneratorInputError, InpaintRequest
from generators.families import FAMILIES, build_generator
from generators.policy import dilate, resize_pair
from generators.registry import CONFIGS, get_config
from nearid.common.masks import inpaint_region
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


def ring_view(size: int = 96) -> tuple[Image.Image, np.ndarray]:
    """A view whose object is a ring (background visible through its hole) with a detached second part."""
    background, _ = render_background(size, np.random.default_rng(3))
    yy, xx = np.mgrid[:size, :size]
    radius = np.hypot(yy - size / 2, xx - size / 2.5)
    ring = (radius < size * 0.3) & (radius > size * 0.15)
    part = (np.abs(yy - size * 0.8) < size * 0.07) & (np.abs(xx - size * 0.82) < size * 0.07)
    mask = ring | part
    pixels = np.where(mask[..., None], np.array([200, 30, 40], np.uint8), background)
    return Image.fromarray(pixels.astype(np.uint8), "RGB"), mask


@pytest.mark.parametrize("name", ["powerpaint", "sdxl-1024", "qwen-1328"])  # working sizes 640, 1024, 1328
def test_background_is_the_originals_at_every_working_size(name: str, tiny_models_dir) -> None:
    """Outside the dilated mask every output pixel is the original view's at 512 (Lanczos), byte for byte; the
    background seen through the ring's hole is kept, and both parts of the object are repainted."""
    config = get_config(name).with_overrides(steps=2)
    gen = build_generator(config, model_dir=tiny_models_dir)
    gen.load("cpu", "float32")
    image, mask = ring_view()
    out = gen.generate([request(image=image, mask=mask)])[0]
    assert max(out.raw.size) >= config.resolution  # it really ran at the working size
    reference, region = resize_pair(image, inpaint_region(mask), (512, 512))  # the region the generator repaints
    outside = ~dilate(region, config.composite_dilation)
    pixels, original = np.asarray(out.image), np.asarray(reference)
    assert np.array_equal(pixels[outside], original[outside]) and out.bg_change == 0.0
    hole = np.zeros((512, 512), bool)
    hole[226:286, 175:235] = True  # the middle of the ring's hole, far from the ring
    assert (hole & outside).sum() == hole.sum() and np.array_equal(pixels[hole], original[hole])
    change = np.abs(pixels.astype(int) - original.astype(int)).sum(axis=2)
    second_part = region.copy()
    second_part[:360], second_part[:, :370] = False, False  # the detached square, right of the ring
    assert second_part.sum() > 1000 and change[second_part].mean() > 1 and change[region].mean() > 1


def test_qwen_guidance_is_its_true_cfg_scale(tiny_models_dir) -> None:
    """``guidance`` is hashed, so it must act: for Qwen-Image it is the true CFG scale (1.0: no negative pass)."""
    raws = []
    for guidance in (1.0, 50.0):  # tiny random text encoders: prompt and negative embed alike, so push it
        config = get_config("qwen-512").with_overrides(steps=2, resolution=SIZE, guidance=guidance)
        gen = build_generator(config, model_dir=tiny_models_dir)
        gen.load("cpu", "float32")
        raws.append(np.asarray(gen.generate([request()])[0].raw, np.int16))
    assert np.abs(raws[0] - raws[1]).max() > 2
