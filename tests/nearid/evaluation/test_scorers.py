"""Scorers: registry, model resolution, fingerprints, and each tiny scorer against the library computed directly."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nearid.evaluation.scorers import (
    SCORERS,
    ClipScorer,
    ScorerSettings,
    SiglipMapScorer,
    VlmJudgeScorer,
    build_scorer,
)
from nearid.evaluation.vlm_judge import PROBLEMS
from tests.nearid.evaluation.fixtures import single_thread


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


@pytest.fixture(scope="module")
def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((64, 64), (90, 70), (512, 512))
    ]


def test_registry_names_and_unknown_scorers(tmp_path: Path) -> None:
    assert {"siglip2-map", "siglip2-mean", "clip", "dinov2", "vlm-judge"} <= set(SCORERS)
    with pytest.raises(ValueError, match=r"unknown scorer 'siglip3'.*'clip'.*'vlm-judge'"):
        build_scorer("siglip3")
    (tmp_path / "config.json").write_text('{"model_type": "siglip"}')
    with pytest.raises(ValueError, match="without a release config.json"):
        build_scorer(str(tmp_path))


def test_settings_are_validated_and_resolve_models(tiny_models_dir: Path) -> None:
    with pytest.raises(ValueError, match="unknown dtype"):
        ScorerSettings(dtype="int8")
    with pytest.raises(ValueError, match="batch_size"):
        ScorerSettings(batch_size=0)
    with pytest.raises(ValueError, match=r"unknown scorer\(s\) \['clip-l'\]"):
        ScorerSettings(models=(("clip-l", "x"),))
    with pytest.raises(ValueError, match="more than one model"):
        ScorerSettings(models=(("clip", "a"), ("clip", "b")))
    assert ScorerSettings(dtype="bf16").dtype == "bfloat16"
    assert build_scorer("clip").model == "openai/clip-vit-large-patch14"
    assert build_scorer("vlm-judge").model == "Qwen/Qwen3-VL-30B-A3B-Instruct"
    in_dir = ScorerSettings(model_dir=str(tiny_models_dir))
    assert build_scorer("siglip2-mean", in_dir).model == str(tiny_models_dir / "siglip2")
    assert build_scorer("vlm-judge", in_dir).model == str(tiny_models_dir / "qwen3-vl")
    overridden = ScorerSettings(model_dir=str(tiny_models_dir), models=(("clip", "some/clip"),))
    assert build_scorer("clip", overridden).model == "some/clip"
    with pytest.raises(ValueError, match="holds no siglip2/"):
        build_scorer("siglip2-map", ScorerSettings(model_dir=str(tiny_models_dir / "dinov2")))


def test_fingerprints_follow_model_content_and_output_settings(tiny_models_dir: Path, tmp_path: Path) -> None:
    base = ScorerSettings(model_dir=str(tiny_models_dir))
    fp = build_scorer("dinov2", base).fingerprint
    assert build_scorer("dinov2", ScorerSettings(model_dir=str(tiny_models_dir), batch_size=3)).fingerprint == fp
    assert build_scorer("dinov2", ScorerSettings(model_dir=str(tiny_models_dir), dtype="bf16")).fingerprint != fp
    copy = tmp_path / "dinov2"
    shutil.copytree(tiny_models_dir / "dinov2", copy)
    assert build_scorer("dinov2", ScorerSettings(models=(("dinov2", str(copy)),))).fingerprint == fp
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert build_scorer("dinov2", ScorerSettings(models=(("dinov2", str(copy)),))).fingerprint != fp
    assert build_scorer("siglip2-map", base).fingerprint != build_scorer("siglip2-mean", base).fingerprint
    judge = build_scorer("vlm-judge", base).fingerprint
    assert (
        build_scorer("vlm-judge", ScorerSettings(model_dir=str(tiny_models_dir), max_new_tokens=8)).fingerprint
        != judge
    )
    assert (
        build_scorer("vlm-judge", ScorerSettings(model_dir=str(tiny_models_dir), device="meta")).fingerprint == judge
    )


def _unit(x: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(x.float(), dim=-1).numpy()


def test_embedding_scorers_match_the_library_readouts(tiny_models_dir: Path, images: list[Image.Image]) -> None:
    from transformers import AutoImageProcessor, CLIPVisionModelWithProjection, Dinov2Model, SiglipVisionModel

    settings = ScorerSettings(model_dir=str(tiny_models_dir))
    readouts = {
        "siglip2-map": (SiglipVisionModel, "siglip2", lambda out: out.pooler_output),
        "siglip2-mean": (SiglipVisionModel, "siglip2", lambda out: out.last_hidden_state.mean(1)),
        "clip": (CLIPVisionModelWithProjection, "clip-vit", lambda out: out.image_embeds),
        "dinov2": (Dinov2Model, "dinov2", lambda out: out.last_hidden_state[:, 0]),
    }
    got = {}
    for name, (cls, folder, readout) in readouts.items():
        model = cls.from_pretrained(tiny_models_dir / folder).eval()
        pixels = AutoImageProcessor.from_pretrained(tiny_models_dir / folder, backend="pil")(
            images=images, return_tensors="pt"
        )["pixel_values"]
        with torch.no_grad():
            expected = _unit(readout(model(pixel_values=pixels)))
        got[name] = build_scorer(name, settings).embed(images)
        assert got[name].dtype == np.float32 and got[name].shape == expected.shape
        np.testing.assert_allclose(got[name], expected, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(got[name], axis=1), 1.0, atol=1e-5)
    assert not np.allclose(got["siglip2-map"], got["siglip2-mean"][:, : got["siglip2-map"].shape[1]])


def test_release_folder_is_the_release_scorer(
    tiny_models_dir: Path, tmp_path: Path, images: list[Image.Image]
) -> None:
    from transformers import AutoImageProcessor, SiglipVisionModel

    from nearid.model.release import save_release

    backbone = SiglipVisionModel.from_pretrained(tiny_models_dir / "siglip2")
    processor = AutoImageProcessor.from_pretrained(tiny_models_dir / "siglip2", backend="pil")
    save_release(backbone, backbone.head, processor, tmp_path / "ckpt")
    scorer = build_scorer(str(tmp_path / "ckpt"))
    assert scorer.label == "release:ckpt" and scorer.kind == "embedding"
    frozen = build_scorer("siglip2-map", ScorerSettings(model_dir=str(tiny_models_dir))).embed(images)
    np.testing.assert_allclose(scorer.embed(images), frozen, atol=2e-2)  # fp16 weights of the same head


def test_tiny_judge_reloads_and_answers_deterministically(tiny_models_dir: Path, images: list[Image.Image]) -> None:
    from transformers import AutoModelForImageTextToText

    from nearid.offline.tiny_encoders import tiny_qwen3_vl

    loaded = AutoModelForImageTextToText.from_pretrained(tiny_models_dir / "qwen3-vl")
    assert type(loaded).__name__ == "Qwen3VLForConditionalGeneration"
    seed = 10 * 3  # the seed build_tiny_models gives the fourth encoder
    in_memory, _ = tiny_qwen3_vl(seed)
    reloaded = loaded.state_dict()
    assert set(reloaded) == set(in_memory.state_dict())
    for name, tensor in in_memory.state_dict().items():
        assert torch.equal(tensor, reloaded[name]), name

    judge = build_scorer("vlm-judge", ScorerSettings(model_dir=str(tiny_models_dir), max_new_tokens=6))
    assert isinstance(judge, VlmJudgeScorer) and judge.kind == "judge"
    pairs = [(images[0], images[1]), (images[2], images[0])]
    first = judge.judge(pairs)
    assert judge.judge(pairs) == first and len(first) == 2
    for verdict, answer in first:
        assert isinstance(answer, str)
        assert (verdict.score is None) == (verdict.problem in PROBLEMS)


def test_scorer_classes_name_their_default_checkpoints() -> None:
    assert SiglipMapScorer.default_model == "google/siglip2-so400m-patch14-384"
    assert ClipScorer.default_model == "openai/clip-vit-large-patch14"
    assert SCORERS["dinov2"].default_model == "facebook/dinov2-large"
