"""The ``retrain_and_benchmark`` flow: optional rebuild, training, export, evaluation, report, acceptance.

Training runs ``accelerate launch -m nearid.training.train`` in a child process on ``num_processes`` slots of the
host's slot pool (GPUs pinned by ``CUDA_VISIBLE_DEVICES``), whose output streams into the run log and which has
its own deadline. It continues this config's run when that one stopped before finishing (a crash, a killed
worker), else trains into a fresh run folder; the flow's ``data_root`` and ``model_dir`` go into the run's copy of
the config. The new model is evaluated next to the chosen scorers; the report is published as files and as Prefect
artifacts; then :func:`nearid.model.acceptance.accept_model` compares the new model's pooled SSR with the accepted
model's: a drop beyond the tolerance fails the run with both numbers, anything else makes it the accepted one.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow, task

from flows.logs import run_logger
from nearid.model.acceptance import RegressionError, accept_model, headline


DEFAULT_TRAIN_TIMEOUT_S = 24 * 3600.0


def training_backbone(train_config: str, model_dir: str | None) -> str | None:
    """The backbone folder in ``model_dir`` that the config's hub id stands for, found the way evaluation finds
    the frozen SigLIP2 (``siglip2-map``: ``model_dir/siglip2``); None keeps the config's backbone (no
    ``model_dir``, or the config names a local path rather than a hub id)."""
    from nearid.evaluation.scorers import ScorerSettings, SiglipMapScorer
    from nearid.training.config import TrainConfig

    backbone = TrainConfig.from_yaml(train_config).model.backbone
    hub_id = backbone.count("/") == 1 and not backbone.startswith((".", "/", "~"))  # "org/name", not a path
    if not model_dir or not hub_id or Path(backbone).is_dir():
        return None
    try:
        return ScorerSettings(model_dir=model_dir).model_for(SiglipMapScorer)
    except ValueError as exc:
        raise ValueError(f"training backbone {backbone}: {exc}") from None


@task(name="train")
def train_task(
    train_config: str,
    num_processes: int,
    timeout_s: float,
    data_root: str | None = None,
    model_dir: str | None = None,
    acquire_timeout_s: float | None = None,
) -> str:
    """Train to completion in a child process on ``num_processes`` slots; returns the run folder.

    Continues the config's unfinished run (``--resume latest``) when there is one, else starts a fresh folder.
    """
    from flows.commands import run_streaming
    from flows.gpu import SlotPool, slots_env
    from nearid.training.launch import Launch, accelerate_command
    from nearid.training.run_plan import plan_run

    logger = run_logger()
    plan = plan_run(train_config, data_root, training_backbone(train_config, model_dir))
    if plan.resume_step is None:
        logger.info("training into %s (config %s)", plan.run, plan.config)
    else:
        logger.info("%s stopped at step %d before finishing: resuming it", plan.run, plan.resume_step)
    pool = SlotPool.from_environment()
    with pool.acquire_many(num_processes, timeout_s=acquire_timeout_s, holder="train") as held:
        slots = [h.slot for h in held]
        where = f"GPUs {','.join(s.device or '' for s in slots)}" if slots[0].is_gpu else f"{len(slots)} CPU slot(s)"
        logger.info("train: %d process(es) on %s", num_processes, where)
        launch = Launch(num_processes=num_processes, cpu=not slots[0].is_gpu)
        command, env = accelerate_command(plan.config, launch, plan.resume)
        run_streaming(
            command,
            env=slots_env(slots, env),
            timeout_s=timeout_s,
            log=logger,
            label="train",
            pass_fds=[h.fd for h in held],  # the launcher holds the slots for as long as it lives
        )
    return plan.run


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
    run = train_task(train_config, num_processes, train_timeout_s, data_root, model_dir)
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
    decision = accept_model(models_dir, candidate, tolerance)
    if not decision.accepted:
        raise RegressionError(decision.message)
    logger.info("%s", decision.message)
    return {
        "accepted": True,
        "model": release,
        "metrics": new,
        "previous": decision.previous,
        "report": f"{out}/report",
        "comparison": comparison,
        "timings": timings,
    }
