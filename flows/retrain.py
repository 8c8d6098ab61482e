"""The ``retrain_and_benchmark`` flow: optional rebuild, training, export, evaluation, report, acceptance.

Training runs ``accelerate launch -m nearid.training.train`` in a child process whose output streams into the
run log and which has its own deadline. The new model is evaluated next to the chosen scorers; the
report is published as files and as Prefect artifacts; then the new model's pooled SSR is compared
with the last accepted model's: a drop beyond the tolerance fails the run with both numbers, anything
else makes the new model the accepted one (``ACCEPTED_FILE`` in the models folder).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow, task

from flows.logs import run_logger


ACCEPTED_FILE = "accepted.json"
DEFAULT_TRAIN_TIMEOUT_S = 24 * 3600.0


class RegressionError(RuntimeError):
    """The new model scores worse than the accepted one by more than the tolerance."""


def headline(results: dict[str, Any], label: str, condition: str = "full") -> dict[str, float] | None:
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


def compare_with_accepted(
    models_dir: Path, candidate: dict[str, Any], tolerance: float
) -> tuple[bool, dict[str, Any] | None]:
    """Accept ``candidate`` unless the accepted model's SSR beats it by more than ``tolerance`` points."""
    accepted_file = models_dir / ACCEPTED_FILE
    previous = json.loads(accepted_file.read_text()) if accepted_file.is_file() else None
    if previous is not None and previous["metrics"]["ssr"] - candidate["metrics"]["ssr"] > tolerance:
        return False, previous
    models_dir.mkdir(parents=True, exist_ok=True)
    accepted_file.write_text(json.dumps(candidate, indent=2) + "\n")
    return True, previous


def fresh_run_config(train_config: str) -> tuple[str, str]:
    """(config file, run folder) of a new run: ``run.out`` when free, else the first free ``run.out-N`` with a copy
    of the config pointing at it, so a scheduled retrain never writes into (or exports over) an earlier run."""
    from dataclasses import replace

    from nearid.training.config import TrainConfig
    from nearid.training.run_folder import next_run_folder

    config = TrainConfig.from_yaml(train_config)
    run = next_run_folder(config.run.out)
    if str(run) == config.run.out:
        return train_config, config.run.out
    copy = run.with_name(f"{run.name}.yaml")
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(replace(config, run=replace(config.run, out=str(run))).to_yaml())
    run_logger().info("%s holds an earlier run: this one trains into %s", config.run.out, run)
    return str(copy), str(run)


@task(name="train")
def train_task(train_config: str, num_processes: int, timeout_s: float) -> str:
    """Run training to completion in a child process, in a run folder of its own; returns the folder."""
    from flows.gpu import run_streaming
    from nearid.training.launch import Launch, accelerate_command

    train_config, run = fresh_run_config(train_config)
    command, env = accelerate_command(train_config, Launch(num_processes=num_processes))
    run_streaming(command, env=env, timeout_s=timeout_s, log=run_logger(), label="train")
    return run


@task(name="export-model")
def export_task(run: str) -> str:
    from nearid.training.export import export_model

    return str(export_model(run, Path(run) / "release", best=False))


@task(name="evaluate")
def evaluate_task(
    data_root: str,
    release: str,
    scorers: list[str],
    out: str,
    model_dir: str | None,
    sources: list[str] | None,
    timeout_s: float,
    score_cache: str | None = None,
) -> dict[str, Any]:
    """``nearid evaluate`` on a slot (a GPU when there is one), with the report; returns results.json."""
    from flows.gpu import SlotPool, run_in_slot

    def command(slot: Any) -> list[str]:
        cmd = [sys.executable, "-m", "nearid.cli", "evaluate", "--out", out, "--data", data_root, "--report"]
        cmd += ["--device", slot.torch_device]  # its progress arrives as bounded log lines
        for scorer in [*scorers, release]:
            cmd += ["--scorer", scorer]
        for source in sources or []:
            cmd += ["--source", source]
        if model_dir:
            cmd += ["--model-dir", model_dir]
        if score_cache:
            cmd += ["--cache", score_cache]
        return cmd

    run_in_slot(SlotPool.from_environment(), command, timeout_s=timeout_s, log=run_logger(), label="evaluate")
    return json.loads((Path(out) / "results.json").read_text())


@task(name="publish-report")
def publish_task(out: str, comparison: list[dict[str, Any]]) -> None:
    """The report as Prefect artifacts (Markdown and a table of headline numbers)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    report = Path(out) / "report" / "report.md"
    if report.is_file():
        create_markdown_artifact(markdown=report.read_text(), key="nearid-report", description=f"report of {out}")
    create_table_artifact(table=comparison, key="nearid-headline", description="pooled SSR / PA per scorer")


@flow(name="retrain-and-benchmark")
def retrain_and_benchmark(
    data_root: str,
    train_config: str,
    models_dir: str,
    scorers: list[str] | None = None,
    model_dir: str | None = None,
    sources: list[str] | None = None,
    num_processes: int = 1,
    tolerance: float = 1.0,
    rebuild: bool = False,
    rebuild_parameters: dict[str, Any] | None = None,
    train_timeout_s: float = DEFAULT_TRAIN_TIMEOUT_S,
    evaluate_timeout_s: float = 6 * 3600.0,
    score_cache: str | None = None,
) -> dict[str, Any]:
    """Retrain the head, benchmark it next to ``scorers`` and accept it unless it regresses.

    ``tolerance`` is in SSR percentage points of the pooled headline (primary group when complete).
    ``score_cache`` is a score cache shared between runs (default: one inside the run's evaluation folder).
    """
    logger = run_logger()
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        timings[name] = round(time.perf_counter() - clock, 1)
        clock = time.perf_counter()

    if rebuild:
        from flows.rebuild import rebuild_dataset

        rebuild_dataset(**{"root": data_root, **(rebuild_parameters or {})})
        lap("rebuild")
    run = train_task(train_config, num_processes, train_timeout_s)
    lap("train")
    release = export_task(run)
    lap("export")
    out = str(Path(run) / "evaluation")
    results = evaluate_task(
        data_root, release, scorers or ["siglip2-map"], out, model_dir, sources, evaluate_timeout_s, score_cache
    )
    lap("evaluate + report")
    comparison = []
    for entry in results["scorers"]:
        numbers = headline(results, entry["label"])
        if numbers:
            comparison.append({"scorer": entry["label"], **numbers})
    publish_task(out, comparison)
    new = headline(results, f"release:{Path(release).resolve().name}")  # how the release scorer labels itself
    if new is None:
        raise RuntimeError(f"the new model {release} has no NearID result in {out}/results.json")
    candidate = {"model": release, "run": run, "results": f"{out}/results.json", "metrics": new}
    accepted, previous = compare_with_accepted(Path(models_dir), candidate, tolerance)
    if not accepted:
        raise RegressionError(
            f"regression: the new model's {new['group']} SSR is {new['ssr']:.2f} (PA {new['pa']:.2f}); "
            f"the accepted model {previous['model']} has {previous['metrics']['ssr']:.2f} "
            f"(PA {previous['metrics']['pa']:.2f}); tolerance {tolerance} points"
        )
    logger.info("accepted %s: %s SSR %.2f, PA %.2f", release, new["group"], new["ssr"], new["pa"])
    return {
        "accepted": True,
        "model": release,
        "metrics": new,
        "previous": previous,
        "report": f"{out}/report",
        "comparison": comparison,
        "timings": timings,
    }
