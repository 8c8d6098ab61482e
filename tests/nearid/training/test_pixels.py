"""The device pixel path reproduces the evaluation image processor: pixels within one uint8 step (two when
upscaling), the same embeddings, and a clear refusal of processors it cannot reproduce."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import SiglipImageProcessorPil

from nearid.common.procedural import ProceduralConfig, plan_identities, render_identity
from nearid.training.pixels import PixelSpec, normalise, to_unit
from storage.codecs import decode_rgb, decode_rgb_array, encode_png


STEP = 1 / 255 / 0.5  # one uint8 step after SigLIP's normalisation (std 0.5)


def views(size: int, n: int = 4) -> list[np.ndarray]:
    config = ProceduralConfig(identities=n, image_size=size, seed=2)
    return [np.asarray(render_identity(plan, config)["images1"]) for plan in plan_identities(config)]


def device_pixels(images: list[np.ndarray], processor) -> torch.Tensor:
    spec = PixelSpec.from_processor(processor)
    return normalise(to_unit([torch.from_numpy(a.copy()) for a in images], spec, "cpu"), spec)


@pytest.mark.parametrize("resample", [2, 3])  # PIL bilinear, bicubic
@pytest.mark.parametrize(("size", "target", "steps"), [(512, 384, 1), (200, 64, 1), (100, 384, 2), (64, 64, 0)])
def test_pixels_match_the_processor(resample: int, size: int, target: int, steps: int) -> None:
    processor = SiglipImageProcessorPil(size={"height": target, "width": target}, resample=resample)
    images = views(size)
    ours = device_pixels(images, processor)
    reference = processor(images=images, return_tensors="pt")["pixel_values"]
    assert ours.shape == reference.shape
    difference = (ours - reference).abs()
    assert float(difference.max()) <= steps * STEP + 1e-6
    assert float(difference.mean()) < 0.2 * STEP


def test_mixed_sizes_in_one_batch_keep_their_order() -> None:
    processor = SiglipImageProcessorPil(size={"height": 64, "width": 64}, resample=3)
    images = [views(128)[0], views(64)[0], views(96)[1]]
    ours = device_pixels(images, processor)
    for k, image in enumerate(images):
        alone = processor(images=[image], return_tensors="pt")["pixel_values"][0]
        assert float((ours[k] - alone).abs().max()) <= STEP + 1e-6


def test_embeddings_match_the_evaluation_path(tiny_models_dir) -> None:
    from transformers import AutoImageProcessor

    from nearid.model.nearid_model import NearIDModel

    processor = AutoImageProcessor.from_pretrained(tiny_models_dir / "siglip2")  # 64 px, bicubic
    model = NearIDModel.from_pretrained(str(tiny_models_dir / "siglip2"))
    images = views(200)
    with torch.no_grad():
        ours = model.embed(device_pixels(images, processor))
        reference = model.embed(processor(images=images, return_tensors="pt")["pixel_values"])
    cosine = (ours * reference).sum(dim=1)  # unit vectors
    assert float(cosine.min()) > 0.9999


def test_fast_decode_equals_the_reference_decode() -> None:
    data = encode_png(views(96)[0])
    assert np.array_equal(decode_rgb_array(data), np.asarray(decode_rgb(data)))


@pytest.mark.parametrize(
    ("processor", "message"),
    [
        (SiglipImageProcessorPil(size={"height": 64, "width": 64}, resample=1), "resampling 1 is not one of"),
        (SiglipImageProcessorPil(size={"shortest_edge": 64}), "does not resize to a fixed height x width"),
    ],
)
def test_processors_it_cannot_reproduce_are_refused(processor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PixelSpec.from_processor(processor)


def test_images_must_be_uint8_rgb() -> None:
    spec = PixelSpec(height=8, width=8, mode="bilinear", rescale=1 / 255, mean=(0.5,) * 3, std=(0.5,) * 3)
    with pytest.raises(ValueError, match="image 1: expected uint8 H x W x 3"):
        to_unit([torch.zeros(8, 8, 3, dtype=torch.uint8), torch.zeros(8, 8, 3)], spec, "cpu")
