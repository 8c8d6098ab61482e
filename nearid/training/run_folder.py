"""A run folder belongs to one training run: a second run never writes into it, a resumed run continues it.

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
RUN_FILES = ("config.yaml", "run.json", "metrics.jsonl", "checkpoints", HEAD_FILE, BEST_HEAD_FILE)
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
