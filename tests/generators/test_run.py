"""``nearid generate`` over a procedural dataset: shards, resume, force, selection, rejects, provenance."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from generators.families.null import NullGenerator
from generators.registry import get_config
from generators.run import generate_distractors, parse_shards
from nearid.cli import main
from nearid.common.procedural import ProceduralConfig
from nearid.curation.procedural import curate_procedural
from storage import ShardWriter, TableReader, commit_shards, load_manifest, shard_path
from storage.validate import validate


FAST = {"steps": 2, "resolution": 64}


@pytest.fixture
def data(tmp_path: Path) -> str:
    root = str(tmp_path / "data")
    curate_procedural(root, ProceduralConfig(identities=9, image_size=64, seed=2), shard_size=4, progress=False)
    return root


def test_generate_resume_force_and_provenance(data: str, tiny_models_dir) -> None:
    first = generate_distractors(
        data, ["procedural", "flux-fill-512"], model_dir=str(tiny_models_dir), overrides=FAST, progress=False
    )
    assert [(s.shards_written, s.shards_skipped) for s in first] == [(3, 0), (3, 0)]
    n_views = sum(r["n_images"] for r in TableReader(data, "identities").iter_rows(columns=["n_images"], decode=False))
    assert all(s.images_written == n_views and s.images_rejected == 0 for s in first)
    again = generate_distractors(data, ["procedural"], overrides=FAST, progress=False)
    assert (again[0].shards_written, again[0].shards_skipped) == (0, 3)
    forced = generate_distractors(data, ["procedural"], overrides=FAST, force=True, progress=False)
    assert forced[0].shards_written == 3

    identities = {r["id"]: r for r in TableReader(data, "identities").iter_rows()}
    for row in TableReader(data, "distractors/flux-fill-512").iter_rows():
        source = identities[row["id"]]
        for k in range(1, 4):
            assert (row[f"nimg{k}"] is None) == (source[f"images{k}"] is None)
            if row[f"nimg{k}"] is not None:
                assert row[f"nimg{k}"].size == (512, 512)
        assert row["config"] == "flux-fill-512" and row["family"] == "flux-fill" and row["composited"]
        assert row["params_hash"] == get_config("flux-fill-512").with_overrides(**FAST).params_hash()
        assert row["steps"] == 2 and row["working_width"] == 64 and row["model_ids"][0].startswith("black-forest-labs")
        assert [s is None for s in row["seeds"]] == [source[f"images{k}"] is None for k in range(1, 4)]
        assert all(bg == 0.0 for bg in row["qc_bg_change"] if bg is not None)
    manifest = load_manifest(data)
    assert all(
        e.stats["images_in"] == e.stats["images_written"] + e.stats["images_rejected"]
        for e in manifest.table("distractors/flux-fill-512")
    )
    # --dtype auto resolved on the CPU, recorded with each shard
    assert {(e.stats["device"], e.stats["dtype"]) for e in manifest.table("distractors/flux-fill-512")} == {
        ("cpu", "float32")
    }
    assert [p for p in validate(data, progress=False) if p.severity == "error"] == []


def test_shard_selection_leaves_other_shards_alone(data: str) -> None:
    generate_distractors(data, ["procedural"], overrides=FAST, progress=False)
    before = {e.path: e.sha256 for e in load_manifest(data).table("distractors/procedural")}
    changed = {**FAST, "prompt_strategy": "self"}
    summary = generate_distractors(data, ["procedural"], shards="1", overrides=changed, progress=False)[0]
    assert (summary.shards_written, summary.shards_skipped) == (1, 0)
    after = {e.path: e.sha256 for e in load_manifest(data).table("distractors/procedural")}
    assert set(after) == set(before)
    assert [p for p in before if before[p] != after[p]] == ["distractors/procedural/shard-00001.parquet"]


def test_bad_views_become_rejects_and_counts_reconcile(data: str) -> None:
    # replace shard 0 with a copy in which one identity's second mask has almost no foreground
    path = shard_path("identities", 0)
    rows = list(TableReader(data, "identities").iter_rows(shards=[load_manifest(data).shards[path]]))
    victim = rows[1]
    tiny = np.zeros_like(victim["masks2"])
    tiny[0, 0] = True
    victim["masks2"] = tiny
    with ShardWriter(data, "identities", path, "edited") as writer:
        for row in rows:
            writer.write(row)
    commit_shards(data, [writer.entry])
    summary = generate_distractors(data, ["procedural"], overrides=FAST, progress=False)[0]
    assert summary.images_rejected == 1
    rejects = list(TableReader(data, "rejects").iter_rows())
    assert [(r["id"], r["view"], r["reason"]) for r in rejects if r["stage"] == "generate"] == [
        (victim["id"], 2, "mask-empty")
    ]
    stored = TableReader(data, "distractors/procedural").get(victim["id"])
    assert stored["nimg2"] is None and stored["nimg1"] is not None


class _FailsOnce(NullGenerator):
    """A null generator that breaks on one identity, to check that a model error stays local."""

    def _run(self, items):
        if any(item.request.identity_id == self.bad_id for item in items):
            raise RuntimeError("CUDA error: device-side assert (simulated)")
        return super()._run(items)


def test_a_failing_image_is_isolated(data: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import generators.run as run

    bad_id = int(TableReader(data, "identities").ids()[2])

    def build(config, model_dir=None):
        gen = _FailsOnce(config, model_dir)
        gen.bad_id = bad_id
        return gen

    monkeypatch.setattr(run, "build_generator", build)
    summary = generate_distractors(data, ["null"], overrides={"batch_size": 4}, progress=False)[0]
    reasons = Counter(r["reason"] for r in TableReader(data, "rejects").iter_rows() if r["stage"] == "generate")
    n_bad = TableReader(data, "identities").get(bad_id)["n_images"]
    assert reasons == {"generation-failed": n_bad} and summary.images_rejected == n_bad
    assert bad_id not in set(TableReader(data, "distractors/null").ids().tolist())


def test_parse_shards() -> None:
    assert parse_shards(None, 3) == [0, 1, 2] and parse_shards("all", 2) == [0, 1]
    assert parse_shards("0-2, 5", 8) == [0, 1, 2, 5]
    with pytest.raises(ValueError, match="outside 0-3"):
        parse_shards("2-4", 4)
    with pytest.raises(ValueError, match="bad shard selection"):
        parse_shards("x", 4)


def test_unknown_config_and_missing_models(data: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["generate", "--data", data, "--config", "flux-fill"]) == 2
    assert "unknown generator configuration 'flux-fill'" in capsys.readouterr().err
    args = ["generate", "--data", data, "--config", "sdxl-512", "--model-dir", str(tmp_path / "none"), "--no-progress"]
    assert main(args) == 2
    assert "does not exist (stands in for diffusers/stable-diffusion-xl-1.0-inpainting-0.1)" in capsys.readouterr().err


def test_lightning_lora_is_fused_and_gone(tiny_models_dir) -> None:
    import torch
    from diffusers import QwenImageTransformer2DModel

    from generators.families import build_generator

    generator = build_generator(get_config("qwen-512"), tiny_models_dir)
    generator.load("cpu", "float32")
    transformer = generator.pipe.transformer
    assert not any("lora" in name for name, _ in transformer.named_modules())
    plain = QwenImageTransformer2DModel.from_pretrained(tiny_models_dir / "qwen-image", subfolder="transformer")
    fused_q = transformer.transformer_blocks[0].attn.to_q.weight
    assert not torch.equal(fused_q, plain.transformer_blocks[0].attn.to_q.weight)
    assert generator.config.extra("lora_scale") == 1.0


def test_cli_generate(data: str, capsys: pytest.CaptureFixture) -> None:
    args = ["generate", "--data", data, "--config", "procedural", "--set", "resolution=64", "--no-progress"]
    assert main(args) == 0
    assert "procedural       shards written 3, skipped 0" in capsys.readouterr().out


def test_split_filter(data: str) -> None:
    summary = generate_distractors(data, ["procedural"], overrides=FAST, splits=["test"], progress=False)[0]
    splits = {r["id"]: r["split"] for r in TableReader(data, "identities").iter_rows(columns=["id", "split"])}
    made = TableReader(data, "distractors/procedural").ids().tolist()
    assert made and {splits[i] for i in made} == {"test"}
    assert summary.images_written == sum(
        r["n_images"] for r in TableReader(data, "identities").iter_rows(decode=False) if r["split"] == "test"
    )
    with pytest.raises(ValueError, match="unknown splits"):
        generate_distractors(data, ["procedural"], splits=["holdout"], progress=False)
