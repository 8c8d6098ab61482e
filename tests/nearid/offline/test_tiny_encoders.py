"""Tiny encoders: saved, reloaded through the real vision-only loaders, identical outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nearid.offline.tiny_encoders import ENCODER_BUILDERS
from nearid.offline.tiny_models import INDEX_NAME, build_tiny_models


@pytest.fixture(scope="module")
def image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 110, 3), dtype=np.uint8))


def _vision_loader(name: str):
    from transformers import CLIPVisionModelWithProjection, Dinov2Model, SiglipVisionModel

    return {"siglip2": SiglipVisionModel, "clip-vit": CLIPVisionModelWithProjection, "dinov2": Dinov2Model}[name]


@pytest.mark.parametrize("name", ["clip-vit", "dinov2", "siglip2"])  # the VLM judge's reload: test_scorers.py
def test_saved_encoder_reloads_with_identical_outputs(name: str, tiny_models_dir, image) -> None:
    from transformers import AutoImageProcessor

    builder, _ = ENCODER_BUILDERS[name]
    seed = 10 * list(ENCODER_BUILDERS).index(name)  # the seed build_tiny_models used for this folder
    in_memory, processor = builder(seed)
    loaded = _vision_loader(name).from_pretrained(tiny_models_dir / name)
    assert not loaded.training
    pixels = processor(images=image, return_tensors="pt")["pixel_values"]
    reloaded_pixels = AutoImageProcessor.from_pretrained(tiny_models_dir / name)(images=image, return_tensors="pt")
    assert torch.equal(pixels, reloaded_pixels["pixel_values"])
    with torch.no_grad():
        out = loaded(pixel_values=pixels)
        if name == "clip-vit":
            # The tower reloads bit for bit and so does the projection; the projected embedding is compared with a
            # float32 tolerance, because the full model and the vision-only class hand the projection differently
            # laid-out inputs, and BLAS may then sum in another order (seen with transformers 5.24: 2.4e-7 apart).
            expected, got = in_memory.vision_model(pixel_values=pixels).pooler_output, loaded.vision_model(pixels)
            got = got.pooler_output
            assert torch.equal(in_memory.visual_projection.weight, loaded.visual_projection.weight)
            torch.testing.assert_close(out.image_embeds, in_memory.visual_projection(expected), rtol=0, atol=1e-6)
        elif name == "siglip2":
            expected, got = in_memory.vision_model(pixel_values=pixels).pooler_output, out.pooler_output
        else:
            expected, got = in_memory(pixel_values=pixels).last_hidden_state, out.last_hidden_state
    assert torch.equal(expected, got)
    assert got.abs().sum() > 0


def test_siglip_has_its_own_map_head(tiny_models_dir) -> None:
    from transformers import SiglipVisionModel

    model = SiglipVisionModel.from_pretrained(tiny_models_dir / "siglip2")
    head = model.head  # transformers 5: the vision model is flat, the MAP head sits at .head
    assert type(head).__name__ == "SiglipMultiheadAttentionPoolingHead"
    assert model.config.image_size == 64 and model.config.hidden_size == 128


def test_build_is_reused_and_index_written_last(tmp_path) -> None:
    out = tmp_path / "tiny"
    index = build_tiny_models(out)
    names = set(index["models"])
    assert {"siglip2", "clip-vit", "dinov2", "flux-fill", "flux-canny", "sdxl-inpaint", "qwen-image"} <= names
    assert {"qwen-controlnet-inpaint", "qwen-lightning"} <= names
    assert json.loads((out / INDEX_NAME).read_text()) == index
    stamp = (out / "siglip2" / "model.safetensors").stat().st_mtime_ns
    build_tiny_models(out)
    assert (out / "siglip2" / "model.safetensors").stat().st_mtime_ns == stamp
    (out / INDEX_NAME).unlink()  # an interrupted build has no index: it is rebuilt
    build_tiny_models(out)
    assert (out / INDEX_NAME).is_file()


def test_docs_state_the_build_size(tiny_models_dir) -> None:
    """docs/offline-models.md and the README give the build's size; the build the suite made must match it."""
    root = Path(__file__).resolve().parents[3]
    stated = int(re.search(r"The build is (\d+) MB", (root / "docs" / "offline-models.md").read_text()).group(1))
    assert f"; {stated} MB." in (root / "README.md").read_text()
    size_mb = sum(p.stat().st_size for p in Path(tiny_models_dir).rglob("*") if p.is_file()) / 2**20
    assert abs(size_mb - stated) <= 0.15 * stated, f"the build is {size_mb:.1f} MB, the docs say {stated} MB"
    index = json.loads((Path(tiny_models_dir) / INDEX_NAME).read_text())
    readme_row = next(line for line in (root / "README.md").read_text().splitlines() if "nearid tiny-models" in line)
    for name, words in {"qwen3-vl": "Qwen3-VL", "powerpaint": "PowerPaint", "flux-canny": "FLUX Canny"}.items():
        assert name in index["models"] and words in readme_row
