"""Curation drivers: a source of identities in, ``identities/`` shards, ``rejects/`` and a report out.

Work is split into fixed shards; a shard already complete for the same configuration hash is
skipped, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import time
from collections import Counter
from functools import partial

from nearid.common.hashing import config_hash
from nearid.common.procedural import IdentityPlan, ProceduralConfig, plan_identities, render_identity
from nearid.common.splits import assign_splits, default_split_sizes
from nearid.curation.report import REJECTS_PATH, CurationReport, CurationSummary, write_report
from storage import ShardEntry, ShardWriter, shard_path
from storage.jobs import run_shard_jobs


PROCEDURAL_SOURCE_VERSION = 1


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
    plan = {**{path: job_digest for path, job_digest, *_ in jobs}, REJECTS_PATH: digest}
    written, skipped = run_shard_jobs(
        out, "identities", jobs, workers=workers, force=force, progress=progress, plan=plan
    )
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
