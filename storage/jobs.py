"""Run shard jobs idempotently: skip shards complete for their hash, commit each as soon as it is done.

A job writes one shard (and possibly companions, such as its rejects) and returns their manifest
entries, which are committed together in one atomic manifest update.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from tqdm.auto import tqdm

from storage.manifest import ShardEntry, commit_shards, drop_shards, load_manifest


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
    prune: bool = True,
) -> tuple[int, int]:
    """Run the jobs whose shard is not complete for its hash; return (written, skipped).

    Entries that will be rewritten (``force``, or another hash) and their ``companions`` leave the
    manifest first, so the manifest never points at a file being replaced; with ``prune``, so do entries
    of ``table`` that no job covers (a rebuild with fewer shards). With ``workers > 1`` jobs run in
    processes (their functions must be picklable).
    """
    wanted = {path: digest for path, digest, *_ in jobs}
    manifest = load_manifest(root, missing_ok=True)
    stale = [
        e.path
        for e in manifest.table(table)
        if (e.path in wanted and (force or wanted[e.path] != e.config_hash)) or (prune and e.path not in wanted)
    ]
    stale += [c for path in stale for c in (companions(path) if companions else []) if c in manifest.shards]
    if stale:
        manifest = drop_shards(root, stale)
    todo = [job for job in jobs if not manifest.is_complete(root, job[0], job[1])]
    logger.info("%s: %d shards, %d to write", table, len(jobs), len(todo))

    def commit(result: ShardEntry | list[ShardEntry]) -> None:
        commit_shards(root, result if isinstance(result, list) else [result])

    with tqdm(total=len(todo), desc=f"write {table}", unit="shard", disable=not progress) as bar:
        if workers <= 1 or len(todo) <= 1:
            for path, digest, fn, payload in todo:
                commit(fn(path, digest, payload))
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(fn, path, digest, payload) for path, digest, fn, payload in todo]
                for future in as_completed(futures):
                    commit(future.result())
                    bar.update(1)
    return len(todo), len(jobs) - len(todo)
