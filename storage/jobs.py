"""Run shard jobs idempotently: record the run's plan, skip shards complete for their hash, commit each as soon as
it is done.

A job writes one shard (and possibly companions, such as its rejects) and returns their staged manifest entries,
which are committed together in one atomic manifest update (:func:`storage.manifest.commit_shards`). A shard that
a new configuration replaces stays published until its replacement is committed in its place, so a run that
fails never leaves the table smaller than it was; entries the plan no longer covers are dropped only when every
job succeeded.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from nearid.common.processes import die_with_parent
from nearid.common.progress import progress_bar
from storage.fs import join, remove_dead_temps, resolve
from storage.manifest import ShardEntry, commit_shards, drop_shards, load_manifest, record_plan


logger = logging.getLogger(__name__)

ShardJob = tuple[str, str, Callable[[str, str, Any], "ShardEntry | list[ShardEntry]"], Any]
"""(shard path, config hash, writer called as fn(path, hash, payload), payload)."""


def run_shard_jobs(
    root: str,
    table: str,
    jobs: Sequence[ShardJob],
    workers: int = 1,
    force: bool = False,
    progress: bool = True,
    companions: Callable[[str], list[str]] | None = None,
    plan: Mapping[str, str] | None = None,
    prune: bool = True,
) -> tuple[int, int]:
    """Run the jobs whose shard is not complete for its hash; return (written, skipped).

    ``plan`` is every shard a complete run of ``table`` holds (default: the jobs), with ``companions`` of each
    planned with the same hash; it is recorded with the first shard committed, so a table a run left short is
    never mistaken for a complete one, and a run that commits nothing changes nothing. With ``prune``, entries
    of ``table`` outside the plan are dropped once all jobs succeeded. With ``workers > 1`` jobs run in
    processes (their functions must be picklable) that die with this one.
    """
    full_plan = dict(plan) if plan is not None else {path: digest for path, digest, *_ in jobs}
    for path, digest in list(full_plan.items()):
        full_plan.update(dict.fromkeys(companions(path) if companions else [], digest))
    fs, base = resolve(root)
    for folder in sorted({path.rpartition("/")[0] for path in full_plan}):
        for leftover in remove_dead_temps(fs, join(base, folder)):
            logger.info("removed %s, left by a writer that died", leftover)
    manifest = load_manifest(root, missing_ok=True)
    since = manifest.generation
    todo = [job for job in jobs if force or not manifest.is_complete(root, job[0], job[1])]
    logger.info("%s: %d shards, %d to write", table, len(jobs), len(todo))
    if not todo:
        record_plan(root, table, full_plan)
    planned = [False]

    def commit(result: ShardEntry | list[ShardEntry]) -> None:
        entries = result if isinstance(result, list) else [result]
        plans = None if planned[0] else {table: full_plan}  # the plan arrives with the run's first shard
        commit_shards(root, entries, since=since, plans=plans)
        planned[0] = True

    with progress_bar(total=len(todo), desc=f"write {table}", unit="shard", enabled=progress) as bar:
        if workers <= 1 or len(todo) <= 1:
            for path, digest, fn, payload in todo:
                commit(fn(path, digest, payload))
                bar.update(1)
        else:
            with ProcessPoolExecutor(
                max_workers=workers, initializer=die_with_parent, initargs=(os.getpid(),)
            ) as pool:
                futures = [pool.submit(fn, path, digest, payload) for path, digest, fn, payload in todo]
                for future in as_completed(futures):
                    commit(future.result())
                    bar.update(1)
    if prune:
        outdated = [e.path for e in load_manifest(root).table(table) if e.path not in full_plan]
        outdated += [c for path in outdated for c in (companions(path) if companions else [])]
        if outdated:
            drop_shards(root, outdated)
    return len(todo), len(jobs) - len(todo)
