"""A run folder belongs to one training run: a second run never writes into it, a resumed run continues it.

A run is finished when it wrote ``FINISHED_FILE`` (after its final head); a folder with a complete checkpoint and
no such file holds a run that stopped on the way (a crash, a kill, a deadline) and can continue with
``--resume latest``.

Starting into a folder that already holds a run's files without ``--resume`` is refused, so metrics,
TensorBoard events, checkpoints and heads never mix two runs (and ``--resume latest`` can only find this run's
checkpoints). Resuming cuts ``metrics.jsonl`` back to the checkpoint's step, so the steps it replays are not
logged twice.
"""

from __future__ import annotations

import json
from pathlib import Path


HEAD_FILE = "head.safetensors"
BEST_HEAD_FILE = "best_head.safetensors"
FINISHED_FILE = "final.json"
"""Written last, after the final head: the run is finished."""
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_STATE_FILE = "trainer_state.json"
"""Written last into a checkpoint folder: the checkpoint is complete."""
RUN_FILES = ("config.yaml", "run.json", "metrics.jsonl", CHECKPOINTS_DIR, HEAD_FILE, BEST_HEAD_FILE, FINISHED_FILE)
"""What a training run writes at its start or on the way: any of them marks the folder as taken."""


class RunFolderInUse(ValueError):
    """The run folder already holds another run and ``--resume`` was not given."""


def check_run_folder(out: str | Path, resume: str | None) -> None:
    """Refuse to start a new run in a folder that holds one; a resumed run must find its folder."""
    out = Path(out)
    found = [name for name in RUN_FILES if (out / name).exists()]
    if resume is None and found:
        raise RunFolderInUse(
            f"{out} already holds a training run ({', '.join(found)}): continue it with --resume latest, "
            "or give this run its own run.out (or remove the folder)"
        )
    if resume == "latest" and not found:
        raise FileNotFoundError(f"--resume latest: {out} holds no training run to resume")


def trim_metrics(metrics_file: str | Path, step: int) -> int:
    """Drop the lines of ``metrics_file`` logged after ``step`` (a resume replays them); returns how many."""
    path = Path(metrics_file)
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()
    kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in kept))
    return len(lines) - len(kept)


def next_run_folder(base: str | Path) -> Path:
    """``base`` when it holds no run, else the first free ``base-2``, ``base-3``, ...: a fresh folder per run."""
    base = Path(base)
    candidate, number = base, 1
    while any((candidate / name).exists() for name in RUN_FILES):
        number += 1
        candidate = base.with_name(f"{base.name}-{number}")
    return candidate


def run_series(base: str | Path) -> list[Path]:
    """The taken folders ``base``, ``base-2``, ... in order, up to the first free one (what next_run_folder skips)."""
    base = Path(base)
    taken, candidate, number = [], base, 1
    while any((candidate / name).exists() for name in RUN_FILES):
        taken.append(candidate)
        number += 1
        candidate = base.with_name(f"{base.name}-{number}")
    return taken


def complete_checkpoints(out: str | Path) -> list[Path]:
    """The run's complete checkpoint folders (their state file written), oldest first."""
    folders = sorted((Path(out) / CHECKPOINTS_DIR).glob("step-*"))
    return [folder for folder in folders if (folder / CHECKPOINT_STATE_FILE).is_file()]


def unfinished_step(out: str | Path) -> int | None:
    """The step ``--resume latest`` would continue ``out`` from: its newest complete checkpoint's, when the run
    is not finished; None for a finished run or one that stopped before its first checkpoint."""
    out = Path(out)
    checkpoints = complete_checkpoints(out)
    if (out / FINISHED_FILE).exists() or not checkpoints:
        return None
    return int(json.loads((checkpoints[-1] / CHECKPOINT_STATE_FILE).read_text())["step"])
