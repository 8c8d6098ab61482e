"""Curation drivers: a source of identities in, ``identities/`` shards, ``rejects/`` and a report out.

Work is split into fixed shards; a shard already complete for the same configuration hash is
skipped, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import partial
from typing import Any

from tqdm.auto import tqdm

from nearid.curation_report import CurationReport, write_report
from nearid.hashing import config_hash
from nearid.sources.procedural import IdentityPlan, ProceduralConfig, plan_identities, render_identity
from nearid.splits import assign_splits, default_split_sizes
from storage import ShardEntry, ShardWriter, commit_shards, load_manifest, shard_path
from storage.manifest import drop_shards


logger = logging.getLogger(__name__)

PROCEDURAL_SOURCE_VERSION = 1

ShardJob = tuple[str, str, Callable[[str, str, Any], ShardEntry], Any]
"""(shard path, config hash, writer function called as fn(path, hash, payload), payload)."""


@dataclass(frozen=True)
class CurationSummary:
    """What a curation run produced, for the CLI and the flows."""

    root: str
    identities: int
    views: dict[int, int]
    splits: dict[str, int]
    shards_written: int
    shards_skipped: int
    config_hash: str
    seconds: float
    rejected: int = 0


def write_shards(
    out: str, table: str, jobs: Sequence[ShardJob], workers: int = 1, force: bool = False, progress: bool = True
) -> tuple[int, int]:
    """Write the shards of ``table`` that are not complete for their hash; return (written, skipped).

    Entries that will be rewritten, and entries of shards no longer in ``jobs``, leave the manifest
    first, so the manifest never points at a file being replaced. Each shard is committed as soon as
    it is written.
    """
    paths = {path for path, *_ in jobs}
    manifest = load_manifest(out, missing_ok=True)
    wanted = {path: digest for path, digest, *_ in jobs}
    stale = [e.path for e in manifest.table(table) if force or e.path not in paths or e.config_hash != wanted[e.path]]
    if stale:
        manifest = drop_shards(out, stale)
    todo = [job for job in jobs if not manifest.is_complete(out, job[0], job[1])]
    logger.info("%s: %d shards, %d to write", table, len(jobs), len(todo))
    with tqdm(total=len(todo), desc=f"write {table}", unit="shard", disable=not progress) as bar:
        if workers <= 1 or len(todo) <= 1:
            for path, digest, fn, payload in todo:
                commit_shards(out, [fn(path, digest, payload)])
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [pool.submit(fn, path, digest, payload) for path, digest, fn, payload in todo]
                for future in as_completed(futures):
                    commit_shards(out, [future.result()])
                    bar.update(1)
    return len(todo), len(jobs) - len(todo)


def _write_procedural_shard(
    root: str, config: ProceduralConfig, splits: dict[int, str], path: str, digest: str, plans: list[IdentityPlan]
) -> ShardEntry:
    with ShardWriter(root, "identities", path, digest) as writer:
        for plan in plans:
            writer.write(render_identity(plan, config) | {"split": splits[plan.id]})
        return writer.close(stats={"rows_in": len(plans), "rejected": 0})


def curate_procedural(
    out: str,
    config: ProceduralConfig,
    shard_size: int = 256,
    n_val: int | None = None,
    n_test: int | None = None,
    workers: int = 1,
    force: bool = False,
    progress: bool = True,
) -> CurationSummary:
    """Render procedural identities into ``out/identities`` shards, commit them and write a report."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    start = time.perf_counter()
    plans = plan_identities(config)
    default_val, default_test = default_split_sizes(len(plans))
    n_val = default_val if n_val is None else n_val
    n_test = default_test if n_test is None else n_test
    splits = assign_splits([p.id for p in plans], n_val, n_test)
    digest = config_hash(config, shard_size=shard_size, n_val=n_val, n_test=n_test, source=PROCEDURAL_SOURCE_VERSION)
    write = partial(_write_procedural_shard, out, config, splits)
    jobs = [
        (shard_path("identities", k), digest, write, plans[i : i + shard_size])
        for k, i in enumerate(range(0, len(plans), shard_size))
    ]
    written, skipped = write_shards(out, "identities", jobs, workers=workers, force=force, progress=progress)
    views = dict(sorted(Counter(p.n_views for p in plans).items()))
    split_counts = {s: sum(1 for v in splits.values() if v == s) for s in ("train", "val", "test")}
    report = CurationReport(
        source="procedural",
        input=f"procedural seed {config.seed}",
        config=config,
        stages=[("generated identities", len(plans))],
        identities_in=len(plans),
        kept=len(plans),
        views=views,
        splits=split_counts,
        rejects=[],
    )
    write_report(out, report, rejects_config_hash=digest)
    return CurationSummary(
        root=out,
        identities=len(plans),
        views=views,
        splits=split_counts,
        shards_written=written,
        shards_skipped=skipped,
        config_hash=digest,
        seconds=time.perf_counter() - start,
    )
