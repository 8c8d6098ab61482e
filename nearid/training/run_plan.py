"""Where a scheduled training run goes: continue this config's unfinished run, or start a fresh run folder.

The run's own copy of the config (``LAUNCH_CONFIG_FILE`` in the run folder) carries what the caller decides at
run time (the dataset root, the backbone folder), so the config file itself is never edited and a run folder
always says what it was launched with.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from nearid.training.config import TrainConfig
from nearid.training.run_folder import next_run_folder, run_series, unfinished_step


logger = logging.getLogger(__name__)

LAUNCH_CONFIG_FILE = "launch.yaml"


@dataclass(frozen=True)
class RunPlan:
    """The config file to launch with, its run folder, and the checkpoint step it resumes from (None: fresh)."""

    config: str
    run: str
    resume_step: int | None = None

    @property
    def resume(self) -> str | None:
        """The ``--resume`` value of the launch."""
        return None if self.resume_step is None else "latest"


def _recorded_config(run: Path) -> dict | None:
    path = run / "config.yaml"
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def plan_run(train_config: str | Path, data_root: str | None = None, backbone: str | None = None) -> RunPlan:
    """Resume the newest run of ``train_config``'s series (``run.out``, ``run.out-2``, ...) when it stopped before
    finishing with the same settings; else a fresh folder. ``data_root`` and ``backbone`` replace the config's
    ``data.root`` and ``model.backbone`` in the run's copy of the config."""
    config = TrainConfig.from_yaml(train_config)
    if data_root:
        config = replace(config, data=replace(config.data, root=str(data_root)))
    if backbone:
        config = replace(config, model=replace(config.model, backbone=str(backbone)))
    series = run_series(config.run.out)
    newest = series[-1] if series else None
    step = unfinished_step(newest) if newest is not None else None
    if newest is not None and step is not None:
        same = replace(config, run=replace(config.run, out=str(newest)))
        if _recorded_config(newest) == same.to_dict():
            return _write(same, newest, step)
        logger.warning("%s stopped at step %d with other settings: not resumed, a fresh run starts", newest, step)
    run = next_run_folder(config.run.out)
    if newest is not None:
        logger.info("%s holds an earlier run: this one trains into %s", newest, run)
    return _write(replace(config, run=replace(config.run, out=str(run))), run, None)


def _write(config: TrainConfig, run: Path, step: int | None) -> RunPlan:
    run.mkdir(parents=True, exist_ok=True)
    path = run / LAUNCH_CONFIG_FILE
    path.write_text(config.to_yaml())
    return RunPlan(str(path), str(run), step)
