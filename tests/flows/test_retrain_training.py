"""The retrain flow's train task: a killed run resumes in its folder, the flow's data_root and model_dir reach
training, and training holds its slots. Real ``accelerate launch`` children on a tiny model, a real SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from prefect import flow

from nearid.training.run_folder import FINISHED_FILE, complete_checkpoints, run_series, unfinished_step


HUB_BACKBONE = "google/siglip2-so400m-patch14-384"


@pytest.fixture(scope="module")
def train_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """32 train identities at 64 px with their ``procedural`` distractors."""
    from generators.run import generate_distractors
    from nearid.common.procedural import ProceduralConfig
    from nearid.curation.procedural import curate_procedural

    root = str(tmp_path_factory.mktemp("retrain-train") / "data")
    curate_procedural(root, ProceduralConfig(identities=40, image_size=64, seed=5), shard_size=20, progress=False)
    generate_distractors(root, ["procedural"], overrides={"resolution": 64}, progress=False)
    return root


@pytest.fixture(autouse=True)
def private_slots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One CPU slot in a lock folder of this test's own (never the host-wide one other tests use)."""
    monkeypatch.setenv("NEARID_SLOT_DIR", str(tmp_path / "slots"))
    monkeypatch.setenv("NEARID_GPU_SLOTS", "0")
    monkeypatch.setenv("NEARID_CPU_SLOTS", "1")
    return tmp_path / "slots"


def write_config(folder: Path, root: str, backbone: str, max_steps: int, checkpoint_every: int = 50) -> Path:
    config = {
        "data": {"root": root, "sources": ["procedural"], "num_workers": 0, "cache_dir": str(folder / "cache")},
        "model": {"backbone": backbone},
        "optim": {"lr": 1e-3, "warmup_steps": 2, "global_batch": 8, "max_steps": max_steps},
        "run": {"out": str(folder / "run"), "log_every": 1, "eval_every": 1000, "checkpoint_every": checkpoint_every},
    }
    path = folder / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@flow(name="train-only")
def train_in_a_flow(config: str, data_root: str, model_dir: str | None = None) -> str:
    """The retrain flow's train task as the flow calls it, without the evaluation after it."""
    from flows.retrain import train_task

    return train_task(config, 1, 300.0, data_root, model_dir)


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines() if "loss" in line]


def test_a_killed_training_resumes_in_its_own_folder(
    prefect_api, train_root: str, tiny_models_dir: Path, tmp_path: Path
) -> None:
    from nearid.training.launch import Launch, accelerate_command
    from nearid.training.run_plan import plan_run

    config = write_config(tmp_path, train_root, str(tiny_models_dir / "siglip2"), max_steps=40, checkpoint_every=2)
    plan = plan_run(config, train_root)
    assert plan.resume_step is None
    command, env = accelerate_command(plan.config, Launch(cpu=True))
    with (tmp_path / "first.log").open("w") as log:
        child = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 90
            while not complete_checkpoints(plan.run) and child.poll() is None:
                assert time.monotonic() < deadline, "no checkpoint within 90 s"
                time.sleep(0.02)
        finally:
            os.killpg(child.pid, signal.SIGKILL)  # the launcher and its training process, at once
            child.wait(timeout=30)
    run = Path(plan.run)
    step = unfinished_step(run)
    assert step is not None and 2 <= step < 40, (tmp_path / "first.log").read_text()[-2000:]
    assert not (run / FINISHED_FILE).exists()

    assert train_in_a_flow(str(config), train_root) == plan.run
    resumes = json.loads((run / "run.json").read_text())["resumed"]
    assert [r["step"] for r in resumes] == [step] and resumes[0]["checkpoint"].endswith(f"step-{step:07d}")
    steps = _steps(run)
    assert steps == sorted(set(steps)) and steps[-1] == 40  # continued, never logged a step twice
    assert set(range(1, step + 1)) <= set(steps)  # the steps before the kill are the killed run's
    assert json.loads((run / FINISHED_FILE).read_text())["steps"] == 40
    assert run_series(tmp_path / "run") == [run]  # no second folder

    again = plan_run(config, train_root)  # a finished run is never resumed: the next run gets a fresh folder
    assert again.run == str(tmp_path / "run-2") and again.resume_step is None


def test_data_root_and_model_dir_reach_training(
    prefect_api, train_root: str, tiny_models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The config names a dataset root that does not exist and a hub backbone the hub cannot serve: the run trains
    on the flow's data_root with the backbone folder in model_dir."""
    from flows.retrain import train_task

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    config = write_config(tmp_path, str(tmp_path / "elsewhere"), HUB_BACKBONE, max_steps=3)
    run = Path(train_in_a_flow(str(config), train_root, str(tiny_models_dir)))
    used = yaml.safe_load((run / "config.yaml").read_text())
    assert used["data"]["root"] == train_root
    assert used["model"]["backbone"] == str(tiny_models_dir / "siglip2")
    assert (run / FINISHED_FILE).is_file() and _steps(run)[-1] == 3
    assert yaml.safe_load(config.read_text())["data"]["root"] == str(tmp_path / "elsewhere")  # the file is untouched

    empty = tmp_path / "no-siglip"
    empty.mkdir()
    with pytest.raises(ValueError, match=f"training backbone {HUB_BACKBONE}: .*no-siglip/siglip2 does not exist"):
        train_task.fn(str(config), 1, 300.0, train_root, str(empty))


def test_training_waits_for_its_slots(train_root: str, tiny_models_dir: Path, tmp_path: Path) -> None:
    """The train task takes its slots from the host's pool: with the only slot busy it does not start."""
    from flows.gpu import SlotPool, SlotTimeout
    from flows.retrain import train_task

    config = write_config(tmp_path, train_root, str(tiny_models_dir / "siglip2"), max_steps=3)
    with SlotPool.from_environment().acquire(timeout_s=5, holder="another task"):
        with pytest.raises(SlotTimeout, match="could not take 1 slot"):
            train_task.fn(str(config), 1, 300.0, train_root, acquire_timeout_s=0.5)
    assert run_series(tmp_path / "run") == []  # nothing launched
    with pytest.raises(ValueError, match="2 slots asked of a pool of 1"):
        train_task.fn(str(config), 2, 300.0, train_root)
