"""Where a scheduled training run goes: a fresh folder, or the config's unfinished run with the same settings."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from nearid.training.config import TrainConfig
from nearid.training.run_plan import LAUNCH_CONFIG_FILE, plan_run


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "train.yaml"
    config = {"data": {"root": "configured", "sources": ["procedural"]}, "run": {"out": str(tmp_path / "run")}}
    path.write_text(yaml.safe_dump(config))
    return path


def _stopped_run(launch_config: str, step: int | None, finished: bool = False) -> None:
    """What a training run leaves when it stops: its config, a checkpoint (complete when ``step``), maybe the end."""
    config = TrainConfig.from_yaml(launch_config)
    out = Path(config.run.out)
    (out / "config.yaml").write_text(config.to_yaml())
    checkpoint = out / "checkpoints" / f"step-{step or 0:07d}"
    checkpoint.mkdir(parents=True)
    if step is not None:
        (checkpoint / "trainer_state.json").write_text(json.dumps({"step": step}))
    if finished:
        (out / "final.json").write_text("{}")


def test_fresh_run_gets_the_flow_settings_in_its_own_copy(tmp_path: Path) -> None:
    config = _config(tmp_path)
    plan = plan_run(config, "/data/x", "/models/siglip2")
    assert (plan.run, plan.resume_step, plan.resume) == (str(tmp_path / "run"), None, None)
    assert plan.config == str(tmp_path / "run" / LAUNCH_CONFIG_FILE)
    launched = TrainConfig.from_yaml(plan.config)
    assert (launched.data.root, launched.model.backbone, launched.run.out) == ("/data/x", "/models/siglip2", plan.run)
    assert TrainConfig.from_yaml(config).data.root == "configured"  # the config file is never edited


def test_an_unfinished_run_with_the_same_settings_is_resumed(tmp_path: Path) -> None:
    config = _config(tmp_path)
    _stopped_run(plan_run(config, "/data/x").config, step=6)
    plan = plan_run(config, "/data/x")
    assert (plan.run, plan.resume_step, plan.resume) == (str(tmp_path / "run"), 6, "latest")


def test_other_settings_a_finished_run_or_no_checkpoint_get_a_fresh_folder(tmp_path: Path) -> None:
    config = _config(tmp_path)
    _stopped_run(plan_run(config, "/data/x").config, step=6)
    other = plan_run(config, "/data/other")
    assert other.run == str(tmp_path / "run-2") and other.resume_step is None  # not resumed on other data
    _stopped_run(other.config, step=None)  # run-2 stops before its first checkpoint: nothing to resume
    third = plan_run(config, "/data/other")
    assert third.run == str(tmp_path / "run-3") and third.resume_step is None
    _stopped_run(third.config, step=8, finished=True)
    plan = plan_run(config, "/data/other")
    assert (plan.run, plan.resume_step) == (str(tmp_path / "run-4"), None)
