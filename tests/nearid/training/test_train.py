"""Training: schedule, configs, tuples, a CPU run that resumes exactly, and the 2-process launch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from generators.run import generate_distractors
from nearid.common.procedural import ProceduralConfig
from nearid.curation.procedural import curate_procedural
from nearid.offline.mtg_layout import write_procedural_mtg
from nearid.training.config import DataConfig, TrainConfig
from nearid.training.data import SplitLeakError, TupleDataset, check_splits, collate_tuples
from nearid.training.run_folder import next_run_folder, trim_metrics
from nearid.training.train import lr_factor


@pytest.fixture(scope="module")
def train_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("train")
    root = str(base / "data")
    curate_procedural(root, ProceduralConfig(identities=40, image_size=64, seed=5), shard_size=16, progress=False)
    generate_distractors(root, ["procedural"], overrides={"resolution": 64}, progress=False)
    write_procedural_mtg(base / "mtg", ProceduralConfig(identities=10, image_size=64, seed=6), {"train": 6, "test": 4})
    return base


def write_config(base: Path, tiny_models_dir: Path, out: str, log_every: int = 2, **optim) -> Path:
    config = {
        "data": {
            "root": str(base / "data"),
            "sources": ["procedural"],
            "mtg": str(base / "mtg"),
            "num_workers": 0,
            "cache_dir": str(base / "cache"),
        },
        "model": {"backbone": str(tiny_models_dir / "siglip2")},
        "optim": {"lr": 1e-3, "warmup_steps": 2, "epochs": 3, "global_batch": 8, **optim},
        "run": {"out": str(base / out), "log_every": log_every, "eval_every": 5, "checkpoint_every": 5},
    }
    path = base / f"{out}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def train(config: Path, *extra: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "nearid.training.train", "--config", str(config), *extra],
        check=True,
        capture_output=True,
    )


def test_lr_schedule() -> None:
    assert lr_factor(0, 100, 1000) == pytest.approx(0.01) and lr_factor(99, 100, 1000) == pytest.approx(1.0)
    assert lr_factor(100, 100, 1000) == pytest.approx(1.0)
    assert lr_factor(550, 100, 1000) == pytest.approx(0.5)
    assert lr_factor(1000, 100, 1000) == pytest.approx(0.0)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"data": {"root": "x", "sources": ["a"], "splits": ["train", "test"]}}, "training on \\['test'\\]"),
        ({"data": {"root": "x", "sources": ["a"], "mtg": "m", "mtg_split": "test"}}, "MTG test split"),
        ({"data": {"root": "x", "sources": []}}, "at least one distractor"),
        ({"data": {"root": "x", "sources": ["a"], "colour": 1}}, "unknown keys in data"),
        ({"loss": {"name": "triplet"}}, "unknown loss 'triplet'"),
        ({"loss": {"params": {"gamma": 2.0}}}, "does not take gamma"),
        ({"optim": {"lr": 0}}, "lr and grad_clip must be > 0"),
        ({"extra": {}}, "unknown config sections"),
    ],
)
def test_bad_configs_are_refused(change: dict, message: str) -> None:
    config = {"data": {"root": "x", "sources": ["a"]}, "run": {"out": "o"}} | change
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(config)


def test_split_leak_is_refused() -> None:
    check_splits({1: "train", 2: "train"}, [1, 2])
    with pytest.raises(SplitLeakError, match="1 held-out identities would be used for training: 3 \\(val\\)"):
        check_splits({1: "train", 3: "val"}, [1, 3])


def data_config(train_data: Path, **changes: object) -> DataConfig:
    """The test data without role-aware masking (unless ``changes`` turn it on), read by the main process."""
    fields = {"anchor_mask_prob": 0, "positive_mask_prob": 0, "distractor_mask_prob": 0, "num_workers": 0}
    root, cache = str(train_data / "data"), str(train_data / "cache")
    return DataConfig(root=root, sources=("procedural",), cache_dir=cache, **{**fields, **changes})


def test_tuples(train_data: Path) -> None:
    from storage import TableReader

    plain = data_config(train_data, mtg=str(train_data / "mtg"), flip_prob=0, jitter_prob=0, affine_prob=0)
    dataset = TupleDataset(plain)
    identities = [r for r in TableReader(str(train_data / "data"), "identities").iter_rows() if r["split"] == "train"]
    assert len(dataset) == len(identities) + 6 * 4  # MTG train rows mixed in x4
    distractors = TableReader(str(train_data / "data"), "distractors/procedural")
    for index in range(6):  # each distractor slot holds the distractor of its positive slot's view, as stored
        item = dataset[index]
        row = identities[index]
        views = {k: np.asarray(row[f"images{k}"]) for k in range(1, 4) if row[f"images{k}"] is not None}
        assert len(item["images"]) == 2 * len(views) == len(item["augment"])  # every view has its distractor
        anchor = item["images"][0].numpy()
        (anchor_view,) = [k for k, v in views.items() if np.array_equal(v, anchor)]
        expected = np.asarray(distractors.get(row["id"])[f"nimg{anchor_view}"])
        assert np.array_equal(item["images"][len(views)].numpy(), expected)
        assert int(item["positive_mask"].sum()) == row["n_images"] - 1
        assert not item["augment"][:, [0, 9, 10]].any()  # no jitter, flip or affine drawn
    first = dataset[0]
    dataset.set_epoch(1)
    anchors = {tuple(dataset[i]["images"][0].flatten()[:64].tolist()) for i in range(3)}
    dataset.set_epoch(0)
    assert all(torch.equal(a, b) for a, b in zip(dataset[0]["images"], first["images"], strict=True))
    assert len(anchors) == 3
    mtg = dataset[len(identities)]
    assert mtg["kind"] == 1 and mtg["margins"][:2].gt(0).all() and not mtg["positive_mask"][1]

    batch = collate_tuples([dataset[0], dataset[1], mtg])
    valid = torch.cat([batch["anchor_valid"][:, None], batch["positive_mask"], batch["distractor_mask"]], 1)
    assert batch["slot_index"].tolist() == valid.flatten().nonzero().squeeze(1).tolist()
    assert len(batch["images"]) == len(batch["slot_index"]) == len(batch["augment"]) == int(valid.sum())


def test_masking_and_augmentation_are_drawn_per_slot(train_data: Path) -> None:
    config = data_config(train_data, anchor_mask_prob=1, jitter_prob=1)
    item = TupleDataset(config)[0]
    anchor = item["images"][0].numpy()
    assert (anchor == 0).all(axis=2).mean() > 0.3  # the anchor's background is black, the others are untouched
    assert (item["images"][1].numpy() == 0).all(axis=2).mean() < 0.05
    assert item["augment"][:, 0].all() and len({tuple(r) for r in item["augment"][:, 5:9].tolist()}) == len(
        item["images"]
    )


@pytest.fixture(scope="module")
def trained_run(train_data: Path, tiny_models_dir: Path) -> Path:
    train(write_config(train_data, tiny_models_dir, "full"))
    return train_data / "full"


def test_training_resumes_exactly(train_data: Path, tiny_models_dir: Path, trained_run: Path) -> None:
    out = trained_run
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    assert losses[-1] < losses[0] and all(np.isfinite(losses))
    assert any("val_ssr" in m for m in metrics)
    assert list((out / "nearid").glob("events.out.tfevents.*"))  # TensorBoard
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000015", "step-0000020", "step-0000021"]

    resumed = write_config(train_data, tiny_models_dir, "resumed")
    train(resumed, "--resume", str(out / "checkpoints" / "step-0000015"))  # mid-epoch: epoch 2, batch 1
    a, b = load_file(str(out / "head.safetensors")), load_file(str(train_data / "resumed" / "head.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(subprocess.CalledProcessError):
        train(resumed, "--resume", str(train_data / "nowhere"))


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_two_real_processes_follow_the_one_process_run(train_data: Path, tiny_models_dir: Path) -> None:
    """``nearid train --num-processes 2 --cpu`` starts two gloo processes that see the same LR at every step, the
    same global loss and end with the same head as one process on the same global batch."""
    from nearid.cli import main

    schedule = {"max_steps": 8, "warmup_steps": 3, "log_every": 1}
    single = write_config(train_data, tiny_models_dir, "single", **schedule)
    double = write_config(train_data, tiny_models_dir, "double", **schedule)
    assert main(["train", "--config", str(single), "--num-processes", "1", "--cpu"]) == 0
    assert main(["train", "--config", str(double), "--num-processes", "2", "--cpu"]) == 0
    final = sorted((train_data / "double" / "checkpoints").iterdir())[-1]
    assert sorted(p.name for p in final.glob("rng_*")) == ["rng_0.safetensors", "rng_1.safetensors"]  # 2 processes

    one = [m for m in _metrics(train_data / "single") if "loss" in m]
    two = [m for m in _metrics(train_data / "double") if "loss" in m]
    assert [m["step"] for m in one] == [m["step"] for m in two] == list(range(1, 9))
    assert [m["lr"] for m in one] == [m["lr"] for m in two]
    assert [m["lr"] for m in one][:4] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3, 1e-3 * lr_factor(3, 3, 8)])
    for a, b in zip(one, two, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=0.03)
    a, b = (
        load_file(str(train_data / "single" / "head.safetensors")),
        load_file(str(train_data / "double" / "head.safetensors")),
    )
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-4) for k in a)
    assert json.loads((train_data / "double" / "run.json").read_text())["world_size"] == 2

    # a checkpoint written by 2 processes resumes with 1, says so, and ends where the 2-process run ended
    regrouped = write_config(train_data, tiny_models_dir, "regrouped", **schedule)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "nearid.training.train",
            "--config",
            str(regrouped),
            "--resume",
            str(train_data / "double" / "checkpoints" / "step-0000005"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "written by 2 process(es) with 1" in result.stderr
    c = load_file(str(train_data / "regrouped" / "head.safetensors"))
    assert all(torch.allclose(b[k], c[k], atol=1e-4) for k in b)
    assert [m["lr"] for m in _metrics(train_data / "regrouped") if "loss" in m] == [m["lr"] for m in two[5:]]


def test_shipped_paper_config_parses() -> None:
    config = TrainConfig.from_yaml(Path(__file__).parents[3] / "configs" / "nearid-paper.yaml")
    assert config.optim.global_batch == 128 and config.optim.epochs == 11 and config.loss.params["tau"] == 0.07
    assert config.data.mtg_repeat == 4 and config.data.sources == (
        "flux-fill-512",
        "flux-fill-1024",
        "qwen-512",
        "qwen-1328",
    )


def test_export_reloads_with_the_same_embeddings(trained_run: Path, tmp_path: Path, tiny_models_dir: Path) -> None:
    from transformers import AutoImageProcessor

    from nearid.cli import main
    from nearid.common.procedural import plan_identities, render_identity
    from nearid.model.nearid_model import NearIDModel
    from nearid.model.release import load_release

    assert main(["export-model", str(trained_run), "--out", str(tmp_path / "release")]) == 0
    config = json.loads((tmp_path / "release" / "config.json").read_text())
    assert config["model_type"] == "nearid" and config["normalize_embeddings"] is True
    embedder, processor = load_release(tmp_path / "release")
    trained = NearIDModel.from_pretrained(str(tiny_models_dir / "siglip2"))
    trained.head.load_state_dict(load_file(str(trained_run / "head.safetensors")))
    plans = plan_identities(ProceduralConfig(identities=4, image_size=64, seed=8))
    images = [render_identity(p, ProceduralConfig(identities=4, image_size=64, seed=8))["images1"] for p in plans]
    pixels = AutoImageProcessor.from_pretrained(tiny_models_dir / "siglip2")(images=images, return_tensors="pt")
    expected = trained.embed(pixels["pixel_values"])
    got = embedder.embed(processor(images=images, return_tensors="pt")["pixel_values"])
    assert torch.allclose(expected, got, atol=5e-3)  # fp16 weights
    frozen = NearIDModel.from_pretrained(str(tiny_models_dir / "siglip2")).embed(pixels["pixel_values"])
    assert not torch.allclose(frozen, got, atol=5e-3)  # the trained head, not the backbone's own
    assert main(["export-model", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2


def test_a_run_folder_belongs_to_one_run(train_data: Path, tiny_models_dir: Path, trained_run: Path) -> None:
    """A second ``nearid train`` into a finished run's folder is refused in one line and changes nothing; the
    training module itself refuses too, so a direct ``accelerate launch`` cannot mix two runs either."""
    from nearid.cli import main

    before = {p: p.read_bytes() for p in trained_run.rglob("*") if p.is_file()}
    config = train_data / "full.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "nearid.cli", "train", "--config", str(config)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "already holds a training run" in result.stderr
    assert "--resume latest" in result.stderr
    direct = subprocess.run(
        [sys.executable, "-m", "nearid.training.train", "--config", str(config)], capture_output=True, text=True
    )
    assert direct.returncode != 0 and "already holds a training run" in direct.stderr
    assert main(["train", "--config", str(write_config(train_data, tiny_models_dir, "never")), "--resume", "latest"])
    assert {p: p.read_bytes() for p in trained_run.rglob("*") if p.is_file()} == before


def test_resume_drops_the_metrics_it_replays(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (2, 4, 6, 8)))
    assert trim_metrics(metrics, 5) == 2
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [2, 4]
    assert next_run_folder(tmp_path) == tmp_path.with_name(f"{tmp_path.name}-2")  # holds metrics.jsonl
    assert next_run_folder(tmp_path / "fresh") == tmp_path / "fresh"
