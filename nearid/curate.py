"""Curation drivers: a source of identities in, ``identities/`` shards and a manifest out.

Work is split into fixed shards of ``shard_size`` identities; a shard already complete for the same
configuration hash is skipped, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from nearid.hashing import config_hash
from nearid.sources.procedural import IdentityPlan, ProceduralConfig, plan_identities, render_identity
from nearid.splits import assign_splits, default_split_sizes
from storage import ShardEntry, ShardWriter, commit_shards, load_manifest, shard_path
from storage.manifest import drop_shards


logger = logging.getLogger(__name__)

PROCEDURAL_SOURCE_VERSION = 1


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
    extra: dict = field(default_factory=dict)


def _write_procedural_shard(
    root: str,
    config: ProceduralConfig,
    plans: list[IdentityPlan],
    splits: dict[int, str],
    path: str,
    digest: str,
) -> ShardEntry:
    with ShardWriter(root, "identities", path, digest) as writer:
        for plan in plans:
            row = render_identity(plan, config)
            row["split"] = splits[plan.id]
            writer.write(row)
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
    """Render procedural identities into ``out/identities`` shards and commit them to the manifest."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    start = time.perf_counter()
    plans = plan_identities(config)
    default_val, default_test = default_split_sizes(len(plans))
    n_val = default_val if n_val is None else n_val
    n_test = default_test if n_test is None else n_test
    splits = assign_splits([p.id for p in plans], n_val, n_test)
    digest = config_hash(config, shard_size=shard_size, n_val=n_val, n_test=n_test, source=PROCEDURAL_SOURCE_VERSION)

    chunks = [plans[i : i + shard_size] for i in range(0, len(plans), shard_size)]
    paths = [shard_path("identities", k) for k in range(len(chunks))]
    manifest = load_manifest(out, missing_ok=True)
    # entries that will be rewritten leave the manifest first: it never points at a file being replaced
    stale = [e.path for e in manifest.table("identities") if force or e.path not in paths or e.config_hash != digest]
    if stale:
        drop_shards(out, stale)
        manifest = load_manifest(out, missing_ok=True)
    todo = [k for k, path in enumerate(paths) if not manifest.is_complete(out, path, digest)]
    logger.info("procedural: %d identities in %d shards, %d to write", len(plans), len(chunks), len(todo))

    with tqdm(total=len(todo), desc="curate shards", unit="shard", disable=not progress) as bar:
        if workers <= 1:
            for k in todo:
                commit_shards(out, [_write_procedural_shard(out, config, chunks[k], splits, paths[k], digest)])
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = [
                    pool.submit(_write_procedural_shard, out, config, chunks[k], splits, paths[k], digest)
                    for k in todo
                ]
                for future in as_completed(futures):
                    commit_shards(out, [future.result()])
                    bar.update(1)

    return CurationSummary(
        root=out,
        identities=len(plans),
        views=dict(sorted(Counter(p.n_views for p in plans).items())),
        splits={s: sum(1 for v in splits.values() if v == s) for s in ("train", "val", "test")},
        shards_written=len(todo),
        shards_skipped=len(chunks) - len(todo),
        config_hash=digest,
        seconds=time.perf_counter() - start,
    )
