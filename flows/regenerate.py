"""The ``regenerate`` flow: distractor shards for chosen configurations and shards, spread over every GPU.

Thin by design. The shards of each configuration that are not complete are cut into *shard groups*, as many
as there are places to run them, so each GPU loads a configuration's models once per run. A group runs on
one of three engines, all existing ones:

- **local slots** (default): one task per group runs ``nearid generate --data ROOT --config C --shards K,L``
  in a child process pinned to a GPU slot of this host (:mod:`flows.gpu`), its output streamed into the run
  log, with a deadline;
- **a work pool** (``fan_out="regenerate/shards"``): one flow run of that deployment per group, submitted with
  ``run_deployment`` to the pool's queue, so every worker of every host takes groups (the workers count decides
  the number of groups);
- **Ray** (``ray_address``): one actor per GPU of an existing cluster, models resident, pulling single shards
  from a queue (:mod:`flows.ray_engine`).

Whether a shard is complete is the manifest's answer (:meth:`storage.Manifest.is_complete` for the same config
hash, computed here exactly as ``nearid generate`` computes it), never Prefect's cache: complete shards get no
work, and every group checks again under per-shard locks before it starts, so overlapping runs and reruns after a
crash redo nothing that is done. The dataset is validated at the end.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from functools import partial
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from flows.commands import CommandFailed
from flows.fan_out import fan_out_flow, pool_width
from flows.gpu import Slot, SlotPool, run_in_slot
from flows.logs import run_logger
from flows.settings import make_task_runner, runner_address
from flows.shards import (
    DEFAULT_SHARD_TIMEOUT_S,
    ShardGroup,
    ShardJob,
    ShardRunOptions,
    gather,
    group_shards,
    has_locks,
    is_complete,
    plan_shards,
    prune_stale_shards,
    shard_locks,
    split_selection,
)


class DatasetInvalid(RuntimeError):
    """``validate`` found errors; the message lists them."""


def generate_command(config: str, indices: Sequence[int], options: ShardRunOptions, slot: Slot) -> list[str]:
    """The ``nearid generate`` command line for shards ``indices`` of ``config`` on one slot (one model load)."""
    device = slot.torch_device if options.device == "auto" else options.device
    dtype = ("bf16" if slot.is_gpu else "float32") if options.dtype == "auto" else options.dtype
    cmd = [sys.executable, "-m", "nearid.cli", "generate", "--data", options.root, "--config", config]
    cmd += ["--shards", ",".join(map(str, indices)), "--device", device, "--dtype", dtype]  # progress: log lines
    if options.model_dir:
        cmd += ["--model-dir", options.model_dir]
    if options.splits:
        cmd += ["--splits", ",".join(options.splits)]
    if options.force:
        cmd.append("--force")
    for key, value in sorted(options.overrides.items()):
        cmd += ["--set", f"{key}={json.dumps(value)}"]  # the CLI reads JSON values back unchanged
    return cmd


def _retry_on_command_failure(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a group whose child crashed (e.g. a transient CUDA error), not one that timed out, and not one the
    CLI refused with its one-line error (exit status 2: missing weights, a bad option): that fails the same way
    every time."""
    failure = state.result(raise_on_failure=False)
    return isinstance(failure, CommandFailed) and failure.returncode != 2


@task(
    name="generate-shards",
    task_run_name="{group.label}",
    cache_policy=NO_CACHE,
    retry_condition_fn=_retry_on_command_failure,
)
def generate_group(group: ShardGroup, options: ShardRunOptions) -> list[dict[str, Any]]:
    """Make a group's shards in one child process on a free slot (one model load), skipping those complete by
    now; returns what happened to each shard."""
    log = run_logger()
    with shard_locks(options.root, [job.path for job in group.jobs], timeout_s=options.timeout_s):
        todo = [job for job in group.jobs if options.force or not is_complete(options.root, job)]
        done = [{"path": job.path, "status": "skipped", "seconds": 0.0} for job in group.jobs if job not in todo]
        if not todo:
            log.info("%s: every shard is complete: nothing to do", group.label)
            return done
        pool = SlotPool.from_environment(options.slot_dir)
        command = partial(generate_command, group.config, [job.index for job in todo], options)
        deadline = options.timeout_s * len(todo)
        result = run_in_slot(pool, command, deadline, acquire_timeout_s=deadline, log=log, label=group.label)
        missing = [job.path for job in todo if not is_complete(options.root, job)]
        if missing:
            raise RuntimeError(
                f"{group.label}: nearid generate exited 0 but the manifest does not list {missing} with the planned "
                "hash; did the configuration or the identities change during the run?"
            )
    log.info("%s: %d shards written in %.1fs", group.label, len(todo), result.seconds)
    share = round(result.seconds / len(todo), 3)
    return done + [{"path": job.path, "status": "written", "seconds": share} for job in todo]


@flow(name="generate-shards")
def generate_shards_flow(groups: list[ShardGroup], options: ShardRunOptions, retries: int = 1) -> list[dict[str, Any]]:
    """Run every group's task (the caller picks the task runner); fails listing the groups that failed."""
    group_task = generate_group.with_options(retries=retries, retry_delay_seconds=30)
    futures = [group_task.submit(group, options) for group in groups]
    return gather(groups, futures)


@task(name="validate-dataset", cache_policy=NO_CACHE)
def validate_dataset(root: str, decode: bool = True, allow_partial: bool = False) -> dict[str, int]:
    """Validate the dataset; any error fails the run with every problem listed. ``allow_partial`` (a run over
    some shards only) reports unfinished tables as warnings."""
    from storage.validate import validate

    log = run_logger()
    problems = validate(root, decode=decode, allow_partial=allow_partial)
    errors = [p for p in problems if p.severity == "error"]
    for problem in problems:
        (log.error if problem.severity == "error" else log.warning)("%s", problem)
    if errors:
        raise DatasetInvalid(f"{root}: {len(errors)} validation errors:\n" + "\n".join(map(str, errors)))
    log.info("%s is valid (%d warnings)", root, len(problems))
    return {"errors": 0, "warnings": len(problems)}


@flow(name="regenerate")
def regenerate_flow(
    root: str,
    configurations: list[str],
    shards: str | int | list[int] | None = None,
    force: bool = False,
    model_dir: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    overrides: dict[str, Any] | None = None,
    splits: list[str] | None = None,
    shard_timeout_s: float = DEFAULT_SHARD_TIMEOUT_S,
    retries: int = 1,
    ray_address: str | None = None,
    slot_dir: str | None = None,
    validate_at_end: bool = True,
    fan_out: str | None = None,
    fan_out_width: int | None = None,
    shards_per_task: int | None = None,
) -> dict[str, Any]:
    """(Re)generate ``distractors/<config>`` shards of ``root`` for every configuration and selected shard.

    ``shards``: ``"0-3,7"``, ``3``, ``[3, 7]`` or None for all (then shards beyond the identities leave the
    manifest); ``force`` rewrites complete shards; ``overrides`` are configuration fields as in
    ``nearid generate --set``; ``splits`` limits generation to identities of those splits (e.g.
    ``["test"]`` for a benchmark); ``device``/``dtype`` ``auto`` follow the slot (cuda+bf16 or cpu+float32).
    Where groups run (module docstring): this host's slots; ``fan_out``, a deployment (``regenerate/shards``)
    whose work pool's workers take one group each (``fan_out_width`` groups per configuration, default: the
    pool's online workers); or ``ray_address``, an existing Ray cluster. ``shards_per_task`` fixes the group
    size instead (a smaller group: finer retries, more model loads).
    """
    log = run_logger()
    overrides = dict(overrides or {})
    only = split_selection(splits)
    if fan_out and runner_address(ray_address):
        raise ValueError("choose one engine: fan_out (a deployment) or ray_address, not both")
    jobs = plan_shards(root, configurations, shards, overrides, only)
    todo = [job for job in jobs if force or not job.complete]
    log.info("%d shards selected, %d complete, %d to generate", len(jobs), len(jobs) - len(todo), len(todo))
    options = ShardRunOptions(
        root, force, model_dir, device, dtype, overrides, list(only) if only else None, shard_timeout_s, slot_dir
    )
    results = _generate(todo, options, retries, runner_address(ray_address), fan_out, fan_out_width, shards_per_task)
    if shards is None:  # only once every shard is in: the published table never shrinks before that
        for path in prune_stale_shards(root, configurations, jobs):
            log.info("dropped %s from the manifest: its identities shard no longer exists", path)
    written = sum(1 for r in results if r["status"] == "written")
    summary = {
        "root": root,
        "configurations": list(configurations),
        "shards_selected": len(jobs),
        "shards_written": written,
        "shards_skipped": len(jobs) - written,
        "shards": results,
        "validation": validate_dataset(root, allow_partial=shards is not None) if validate_at_end else None,
    }
    log.info("regenerate: %s", json.dumps({k: v for k, v in summary.items() if k != "shards"}))
    _regenerate_artifact(summary)
    return summary


def _generate(
    todo: list[ShardJob],
    options: ShardRunOptions,
    retries: int,
    ray_address: str | None,
    fan_out: str | None,
    fan_out_width: int | None,
    shards_per_task: int | None,
) -> list[dict[str, Any]]:
    """Run the shards to make on the chosen engine; returns one record per shard."""
    log = run_logger()
    if not todo:
        return []
    if ray_address:
        from flows.ray_engine import generate_on_ray

        return generate_on_ray(ray_address, todo, options, log=log)
    if fan_out:
        groups = group_shards(todo, fan_out_width or pool_width(fan_out), shards_per_task)
        log.info("%d shard groups go to the work pool of %s", len(groups), fan_out)
        runner = make_task_runner(max_workers=min(len(groups), 64))
        return fan_out_flow.with_options(task_runner=runner)(groups, options, fan_out, retries=retries)
    width = len(SlotPool.from_environment(options.slot_dir))
    groups = group_shards(todo, width, shards_per_task)
    workers = min(len(groups), width)
    if not has_locks(options.root) and workers > 1:
        log.warning("%s is on a store without locks: one group at a time", options.root)
        workers = 1
    log.info("%d shard groups on %d local slots", len(groups), width)
    runner = make_task_runner(max_workers=workers)
    return generate_shards_flow.with_options(task_runner=runner)(groups, options, retries=retries)


def _regenerate_artifact(summary: dict[str, Any]) -> None:
    """A table artifact of what the run did to each shard, so the UI shows it next to the run."""
    from prefect.artifacts import create_table_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None or not summary["shards"]:
        return
    create_table_artifact(
        table=summary["shards"],
        key="nearid-regenerate",
        description=f"{summary['shards_written']} written, {summary['shards_skipped']} skipped in {summary['root']}",
    )
