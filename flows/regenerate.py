"""The ``regenerate`` flow: distractor shards for chosen configurations and shards, one task per shard.

Thin by design. Each (configuration, shard) that is not complete becomes one task, which runs
``nearid generate --data ROOT --config C --shards K`` in a child process pinned to a GPU slot
(:mod:`flows.gpu`), with its output streamed into the run log and its own deadline. Whether a shard is
complete is the manifest's answer (:meth:`storage.Manifest.is_complete` for the same config hash,
computed here exactly as ``nearid generate`` computes it), never Prefect's cache: complete shards get
no task and no child process, and every task checks again under a per-shard lock before it starts a
child, so overlapping runs and reruns after a crash redo nothing that is done. The dataset is
validated at the end.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import wait

from flows.gpu import CommandFailed, Slot, SlotPool, file_lock, run_in_slot
from flows.logs import run_logger
from flows.settings import is_ray_address, make_task_runner, runner_address


DEFAULT_SHARD_TIMEOUT_S = 6 * 3600.0
"""A shard's deadline: the slowest paper configuration at 1,328 px on 256 identities stays well inside."""

LOCK_DIR = ".locks"


class DatasetInvalid(RuntimeError):
    """``validate`` found errors; the message lists them."""


@dataclass(frozen=True)
class ShardJob:
    """One distractor shard to make: its configuration, index, path and expected config hash."""

    config: str
    index: int
    path: str
    config_hash: str
    complete: bool = False


@dataclass(frozen=True)
class ShardRunOptions:
    """How a shard task runs its child process (the same for every shard of a run)."""

    root: str
    force: bool = False
    model_dir: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    overrides: dict[str, Any] = field(default_factory=dict)
    splits: list[str] | None = None
    timeout_s: float = DEFAULT_SHARD_TIMEOUT_S
    slot_dir: str | None = None


def shard_selection(shards: str | int | Sequence[int] | None) -> str | None:
    """A flow parameter (``"0-3,7"``, ``3``, ``[3, 7]`` or None for all) as ``nearid generate --shards`` text."""
    if shards is None or isinstance(shards, str):
        return shards
    if isinstance(shards, int):
        return str(shards)
    return ",".join(str(int(k)) for k in shards)


def split_selection(splits: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"val,test"``, ``["test"]`` or None as the sorted tuple ``nearid generate --splits`` hashes."""
    if not splits:
        return None
    names = splits.split(",") if isinstance(splits, str) else list(splits)
    chosen = tuple(sorted({name.strip() for name in names if name.strip()}))
    unknown = sorted(set(chosen) - {"train", "val", "test"})
    if unknown:
        raise ValueError(f"unknown splits {unknown}: use train, val, test")
    return chosen or None


def plan_shards(
    root: str,
    configurations: Sequence[str],
    shards: str | Sequence[int] | None = None,
    overrides: Mapping[str, Any] | None = None,
    splits: str | Sequence[str] | None = None,
) -> list[ShardJob]:
    """Every selected (configuration, shard) with the config hash ``nearid generate`` would record.

    The plan and its hashes come from :func:`generators.run.shard_plan`, the formula ``nearid generate``
    records; ``complete`` says whether the manifest already lists the shard with that hash. Each task
    also checks the hash its child committed, so a drift would fail loudly.
    """
    from generators.registry import get_config
    from generators.run import prompt_book, shard_plan
    from storage import load_manifest

    manifest = load_manifest(root)
    jobs = []
    for name in configurations:
        config = get_config(name).with_overrides(**(overrides or {}))
        for planned in shard_plan(
            root, config, shard_selection(shards), split_selection(splits), prompt_book(root, config)
        ):
            complete = manifest.is_complete(root, planned.path, planned.digest)
            jobs.append(ShardJob(config.name, planned.index, planned.path, planned.digest, complete))
    return jobs


def prune_stale_shards(root: str, configurations: Sequence[str], planned: Sequence[ShardJob]) -> list[str]:
    """Drop manifest entries of these configurations' tables that no planned shard covers (fewer
    identity shards than before), with their rejects; returns the dropped paths."""
    from generators.shard_job import rejects_path
    from storage import distractors_table, load_manifest
    from storage.manifest import drop_shards

    manifest = load_manifest(root)
    wanted = {job.path for job in planned}
    stale = []
    for config in configurations:
        for entry in manifest.table(distractors_table(config)):
            if entry.path not in wanted:
                index = int(entry.path.rsplit("-", 1)[1].split(".")[0])
                stale += [entry.path, rejects_path(config, index)]
    stale = [path for path in stale if path in manifest.shards]
    if stale:
        drop_shards(root, stale)
    return stale


@contextmanager
def shard_lock(root: str, path: str, timeout_s: float | None) -> Iterator[None]:
    """Hold ``ROOT/.locks/<path>.lock`` on local roots, so two runs never write one shard at once.

    Object stores have no locks: there, one run per root at a time (docs/scale-out.md).
    """
    from storage.fs import is_local, join, resolve

    fs, base = resolve(root)
    if not is_local(fs):
        yield
        return
    with file_lock(Path(join(base, LOCK_DIR, path + ".lock")), timeout_s=timeout_s):
        yield


def generate_command(job: ShardJob, options: ShardRunOptions, slot: Slot) -> list[str]:
    """The ``nearid generate`` command line for one shard on one slot."""
    device = slot.torch_device if options.device == "auto" else options.device
    dtype = ("bf16" if slot.is_gpu else "float32") if options.dtype == "auto" else options.dtype
    cmd = [sys.executable, "-m", "nearid.cli", "generate", "--data", options.root, "--config", job.config]
    cmd += ["--shards", str(job.index), "--device", device, "--dtype", dtype]  # progress: bounded log lines
    if options.model_dir:
        cmd += ["--model-dir", options.model_dir]
    if options.splits:
        cmd += ["--splits", ",".join(options.splits)]
    if options.force:
        cmd.append("--force")
    for key, value in sorted(options.overrides.items()):
        cmd += ["--set", f"{key}={json.dumps(value)}"]  # the CLI reads JSON values back unchanged
    return cmd


def _has_locks(root: str) -> bool:
    """Whether ``root`` is on a filesystem with file locks (local disks, NFS), so shard children may
    commit to its manifest concurrently."""
    from storage.fs import is_local, resolve

    return is_local(resolve(root)[0])


def _is_complete(root: str, job: ShardJob) -> bool:
    from storage import load_manifest

    return load_manifest(root).is_complete(root, job.path, job.config_hash)


def _retry_on_command_failure(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a shard whose child crashed (e.g. a transient CUDA error), not one that timed out, and not one the
    CLI refused with its one-line error (exit status 2: missing weights, a bad option): that fails the same way
    every time."""
    failure = state.result(raise_on_failure=False)
    return isinstance(failure, CommandFailed) and failure.returncode != 2


@task(
    name="generate-shard",
    task_run_name="{job.config}/{job.index:05d}",
    cache_policy=NO_CACHE,
    retry_condition_fn=_retry_on_command_failure,
)
def generate_shard(job: ShardJob, options: ShardRunOptions) -> dict[str, Any]:
    """Make one shard in a child process on a free slot, unless it is complete by now; returns what happened."""
    log = run_logger()
    with shard_lock(options.root, job.path, timeout_s=options.timeout_s):
        if not options.force and _is_complete(options.root, job):
            log.info("%s is complete (hash %s): nothing to do", job.path, job.config_hash)
            return {"path": job.path, "status": "skipped", "seconds": 0.0}
        pool = SlotPool.from_environment(options.slot_dir)
        label = f"{job.config}/{job.index:05d}"
        command = partial(generate_command, job, options)
        result = run_in_slot(
            pool, command, options.timeout_s, acquire_timeout_s=options.timeout_s, log=log, label=label
        )
        if not _is_complete(options.root, job):
            raise RuntimeError(
                f"{label}: nearid generate exited 0 but the manifest does not list {job.path} with hash "
                f"{job.config_hash}; did the configuration or the identities change during the run?"
            )
    log.info("%s written in %.1fs", job.path, result.seconds)
    return {"path": job.path, "status": "written", "seconds": round(result.seconds, 3)}


@flow(name="generate-shards")
def generate_shards_flow(jobs: list[ShardJob], options: ShardRunOptions, retries: int = 1) -> list[dict[str, Any]]:
    """Run every shard task (the caller picks the task runner); fails listing the shards that failed."""
    shard_task = generate_shard.with_options(retries=retries, retry_delay_seconds=30)
    with _ray_gpu_placement():
        futures = [shard_task.submit(job, options) for job in jobs]
    wait(futures)
    results, failed = [], []
    for job, future in zip(jobs, futures, strict=True):
        if future.state.is_completed():
            results.append(future.result())
        else:
            failed.append(f"{job.path}: {future.state.message or future.state.name}")
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(jobs)} shards failed:\n" + "\n".join(failed))
    return results


def _ray_gpu_placement() -> Any:
    """Ask Ray for ``NEARID_RAY_GPUS_PER_SHARD`` (default 1) GPUs per shard task when the run's task runner
    is Ray's: Ray then sets ``CUDA_VISIBLE_DEVICES`` on the worker, which the slot pool there follows."""
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    runner = context.task_runner if context else None
    if runner is None or not type(runner).__module__.startswith("prefect_ray"):
        return nullcontext()
    from prefect_ray.context import remote_options

    return remote_options(num_gpus=float(os.environ.get("NEARID_RAY_GPUS_PER_SHARD", "1")))


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
) -> dict[str, Any]:
    """(Re)generate ``distractors/<config>`` shards of ``root`` for every configuration and selected shard.

    ``shards``: ``"0-3,7"``, ``[3, 7]`` or None for all (then shards beyond the identities leave the
    manifest); ``force`` rewrites complete shards; ``overrides`` are configuration fields as in
    ``nearid generate --set``; ``splits`` limits generation to identities of those splits (e.g.
    ``["test"]`` for a benchmark); ``device``/``dtype`` ``auto`` follow the slot (cuda+bf16 or cpu+float32);
    ``ray_address`` runs shard tasks on an existing Ray cluster instead of local threads.
    """
    log = run_logger()
    overrides = dict(overrides or {})
    only = split_selection(splits)
    jobs = plan_shards(root, configurations, shards, overrides, only)
    todo = [job for job in jobs if force or not job.complete]
    log.info("%d shards selected, %d complete, %d to generate", len(jobs), len(jobs) - len(todo), len(todo))
    results: list[dict[str, Any]] = []
    if todo:
        options = ShardRunOptions(
            root, force, model_dir, device, dtype, overrides, list(only) if only else None, shard_timeout_s, slot_dir
        )
        address = runner_address(ray_address)
        workers = len(todo) if is_ray_address(address) else min(len(todo), len(SlotPool.from_environment(slot_dir)))
        if not _has_locks(root) and workers > 1:
            log.warning("%s is on an object store (no manifest lock): one shard at a time", root)
            workers = 1
        runner = make_task_runner(address, max_workers=workers)
        results = generate_shards_flow.with_options(task_runner=runner)(todo, options, retries=retries)
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
        "validation": validate_dataset(root, allow_partial=shards is not None) if validate_at_end else None,
    }
    log.info("regenerate: %s", json.dumps(summary))
    return summary
