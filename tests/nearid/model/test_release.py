"""The release checkpoint layout: round trip, key layout, and refusals of broken folders."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from nearid.model.release import KEY_PREFIX, ReleaseLayoutError, is_release_dir, load_release, save_release


@pytest.fixture(scope="module")
def parts(tiny_models_dir: Path):
    from transformers import AutoImageProcessor, SiglipVisionModel

    backbone = SiglipVisionModel.from_pretrained(tiny_models_dir / "siglip2").eval()
    head = copy.deepcopy(backbone.head)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=generator))
    processor = AutoImageProcessor.from_pretrained(tiny_models_dir / "siglip2", backend="pil")
    return backbone, head, processor


@pytest.fixture
def release(parts, tmp_path: Path) -> Path:
    backbone, head, processor = parts
    return save_release(backbone, head, processor, tmp_path / "release")


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(3)]


def test_round_trip_matches_the_backbone_with_the_trained_head(parts, release: Path) -> None:
    backbone, head, processor = parts
    trained = copy.deepcopy(backbone)
    trained.head = copy.deepcopy(head)
    pixels = processor(images=_images(), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = torch.nn.functional.normalize(trained(pixel_values=pixels).pooler_output, dim=-1)
        frozen = torch.nn.functional.normalize(backbone(pixel_values=pixels).pooler_output, dim=-1)
    model, loaded_processor = load_release(release)
    got = model.embed(loaded_processor(images=_images(), return_tensors="pt")["pixel_values"])
    assert got.shape == (3, backbone.config.hidden_size)
    torch.testing.assert_close(got, expected, atol=5e-3, rtol=0)  # fp16 weights
    torch.testing.assert_close(got.norm(dim=-1), torch.ones(3))
    assert (got - frozen).abs().max() > 5e-2  # the trained head, not the frozen one, was saved


def test_layout_on_disk(parts, release: Path) -> None:
    backbone, head, _ = parts
    config = json.loads((release / "config.json").read_text())
    assert config["model_type"] == "nearid" and config["normalize_embeddings"] is True
    assert config["embed_dim"] == backbone.config.hidden_size == config["vision_config"]["hidden_size"]
    assert (release / "preprocessor_config.json").is_file() and is_release_dir(release)
    tensors = load_file(str(release / "model.safetensors"))
    assert set(tensors) == {KEY_PREFIX + k for k in backbone.state_dict()}
    assert all(t.dtype == torch.float16 for t in tensors.values())
    assert torch.equal(tensors[KEY_PREFIX + "head.probe"], head.probe.detach().half())
    assert "backbone.vision_model.encoder.layers.0.self_attn.q_proj.weight" in tensors


def test_broken_folders_are_refused(release: Path, tmp_path: Path) -> None:
    tensors = load_file(str(release / "model.safetensors"))
    missing = dict(tensors)
    del missing[KEY_PREFIX + "head.probe"]
    save_file(missing, str(release / "model.safetensors"))
    with pytest.raises(ReleaseLayoutError, match=r"missing tensors \['backbone.vision_model.head.probe'\]"):
        load_release(release)
    save_file({**tensors, "extra.weight": torch.zeros(1)}, str(release / "model.safetensors"))
    with pytest.raises(ReleaseLayoutError, match=r"unexpected tensors \['extra.weight'\]"):
        load_release(release)
    save_file({**tensors, KEY_PREFIX + "head.probe": torch.zeros(1, 1, 3)}, str(release / "model.safetensors"))
    with pytest.raises(ReleaseLayoutError, match="wrong shape"):
        load_release(release)
    config = json.loads((release / "config.json").read_text())
    (release / "config.json").write_text(json.dumps({**config, "model_type": "siglip"}))
    with pytest.raises(ReleaseLayoutError, match="expected 'nearid'"):
        load_release(release)
    assert not is_release_dir(release) and not is_release_dir(tmp_path / "nowhere")


def test_bad_heads_are_refused(parts, tmp_path: Path) -> None:
    backbone, head, processor = parts
    with pytest.raises(ValueError, match="embed_dim 64 differs"):
        save_release(backbone, head, processor, tmp_path / "a", embed_dim=64)
    with pytest.raises(ValueError, match="missing"):
        save_release(backbone, torch.nn.Linear(2, 2), processor, tmp_path / "b")


def test_card_loading_lines_work_in_a_fresh_process(release: Path) -> None:
    """The release's README shows how to load it; that exact code runs in a new interpreter and gives the
    embeddings this process gets."""
    import re
    import subprocess
    import sys

    from PIL import Image

    card = (release / "README.md").read_text()
    assert "trust_remote_code=True" not in card and "auto_map" not in (release / "config.json").read_text()
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    script = code + "print(embeddings.shape[1], round(float(embeddings[0, 0]), 5), round(float(embeddings.norm()), 4))"
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=release.parent, capture_output=True, text=True, timeout=120, check=True
    )
    model, processor = load_release(release)
    pixels = processor(images=[Image.new("RGB", (64, 64), "white")], return_tensors="pt").pixel_values
    expected = model.embed(pixels)
    assert result.stdout.split() == [str(expected.shape[1]), str(round(float(expected[0, 0]), 5)), "1.0"]
