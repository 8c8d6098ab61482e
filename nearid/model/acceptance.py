"""Model acceptance: a new model replaces the accepted one unless its headline SSR regresses beyond a tolerance.

The accepted model's record is ``ACCEPTED_FILE`` in a models folder: the model, its run, its results file and its
headline numbers (pooled SSR/PA of the paper's primary group when every primary source was evaluated, else of every
evaluated source). Decisions are taken under a lock on the folder and the record is replaced atomically, so two
retrains that finish together never both win against the same old record, and a reader never sees half a file.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


ACCEPTED_FILE = "accepted.json"
LOCK_FILE = ".accepted.lock"


class RegressionError(RuntimeError):
    """The new model scores worse than the accepted one by more than the tolerance."""


def headline(results: dict[str, Any], label: str, condition: str = "full") -> dict[str, Any] | None:
    """Pooled SSR/PA of scorer ``label``: the paper's primary group when every primary source was
    evaluated, else every evaluated source."""
    for entry in results.get("scorers", []):
        if entry.get("label") != label:
            continue
        groups = ((entry.get("nearid") or {}).get(condition) or {}).get("groups") or {}
        group = "primary" if "primary" in groups else "evaluated"
        if group in groups:
            return {"group": group, "ssr": groups[group]["ssr"], "pa": groups[group]["pa"]}
    return None


def release_label(results: dict[str, Any], label: str | None = None) -> str:
    """The label of the trained model in ``results``: ``label`` when given (it must be there), else the one
    ``release`` scorer; a clear error when there is none or more than one."""
    labels = [entry.get("label") for entry in results.get("scorers", [])]
    if label is not None:
        if label not in labels:
            raise ValueError(f"no scorer labelled {label!r} in the results; labels: {labels}")
        return label
    releases = [e["label"] for e in results.get("scorers", []) if e.get("name") == "release"]
    if len(releases) != 1:
        raise ValueError(f"the results hold {len(releases)} release models {releases}: name one with its label")
    return releases[0]


def candidate_record(results_file: str | Path, label: str | None = None, run: str | None = None) -> dict[str, Any]:
    """The acceptance record of the model labelled ``label`` (default: the one release) in a ``results.json``."""
    path = Path(results_file)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{results_file}: no results.json (run `nearid evaluate` with the model first)")
    results = json.loads(path.read_text())
    label = release_label(results, label)
    metrics = headline(results, label)
    if metrics is None:
        raise ValueError(f"{path}: the scorer {label!r} has no NearID result to accept it on")
    entry = next(e for e in results["scorers"] if e.get("label") == label)
    record = {"model": entry.get("model", label), "results": str(path), "metrics": metrics}
    return {**record, "run": run} if run else record


@dataclass(frozen=True)
class Decision:
    """The outcome of one acceptance: the candidate, the record it was compared with, the tolerance."""

    accepted: bool
    candidate: dict[str, Any]
    previous: dict[str, Any] | None
    tolerance: float

    @property
    def message(self) -> str:
        """One line with both models' numbers."""
        new = self.candidate["metrics"]
        line = f"the new model {self.candidate['model']}: {new['group']} SSR {new['ssr']:.2f} (PA {new['pa']:.2f})"
        if self.previous is None:
            return f"accepted {line}; no model was accepted before"
        old = self.previous["metrics"]
        against = (
            f"the accepted model {self.previous['model']} has {old['ssr']:.2f} (PA {old['pa']:.2f}); "
            f"tolerance {self.tolerance} points"
        )
        return f"{'accepted' if self.accepted else 'rejected (regression)'} {line}; {against}"


@contextmanager
def _locked(models_dir: Path) -> Iterator[None]:
    fd = os.open(models_dir / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing drops the lock


def accepted_record(models_dir: str | Path) -> dict[str, Any] | None:
    """The record of the accepted model in ``models_dir``, or None when none was accepted yet."""
    path = Path(models_dir) / ACCEPTED_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def accept_model(models_dir: str | Path, candidate: dict[str, Any], tolerance: float) -> Decision:
    """Accept ``candidate`` (a record with ``model`` and ``metrics``) unless the accepted model's SSR beats it by
    more than ``tolerance`` points; an accepted candidate becomes the record, a rejected one changes nothing."""
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 SSR points, got {tolerance}")
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    with _locked(models_dir):
        previous = accepted_record(models_dir)
        if previous is not None and previous["metrics"]["ssr"] - candidate["metrics"]["ssr"] > tolerance:
            return Decision(False, candidate, previous, tolerance)
        temporary = models_dir / f".{ACCEPTED_FILE}.{os.getpid()}.tmp"
        temporary.write_text(json.dumps(candidate, indent=2) + "\n")
        os.replace(temporary, models_dir / ACCEPTED_FILE)
    return Decision(True, candidate, previous, tolerance)
