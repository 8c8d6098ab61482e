"""SynCD curation (paper §3.3): rigid identities, strict uniqueness, >= 2 usable views, cleaned masks.

Stages, in order; every identity that leaves records a reject with a reason, so
``identities in = kept + rejected`` always holds:

1. ``bad-id`` / ``bad-text``: an id outside [0, 2^63) or text that is not valid Unicode; ``duplicate-id``: an
   id seen earlier in the metadata (file order, then position).
2. ``deformable``: only ``category == "rigid"`` is kept.
3. ``unsafe-path``: a file name that leaves the input folder.
4. view checks: each view needs a readable RGB image and a mask of the same size that is neither
   empty nor full after cleaning (view-level rejects); an identity keeps its first three usable views.
5. quality (optional): aesthetics >= threshold per view; DINO pair score in [min, max] (a view
   survives if it is in at least one good pair).
6. ``too-few-views``: fewer than 2 usable views left.
7. ``empty-description`` / ``empty-objaverse-id``: the uniqueness keys must exist.
8. uniqueness: no two kept identities share a description (case- and space-normalised) or an
   Objaverse id. Identities are taken greedily, most usable views first, then lowest id; an identity
   whose description or Objaverse id is already taken is rejected (``duplicate-description`` /
   ``duplicate-objaverse-id``), naming the identity that holds it. Greedy keeps more identities than
   dropping whole groups while giving the same guarantee.

Pass 1 (checks) decodes every view; pass 2 decodes the kept views again and writes PNG shards. PNG
encoding, paid once, dominates, so checking before writing costs little (see benchmarks/curation.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

from nearid.common.hashing import config_hash
from nearid.common.processes import die_with_parent
from nearid.common.progress import progress_bar
from nearid.common.splits import assign_splits, default_split_sizes
from nearid.curation.report import REJECTS_PATH, CurationReport, CurationSummary, write_report
from nearid.curation.syncd_views import ItemCheck, SyncdCurationConfig, apply_quality, check_item, load_view
from storage import ShardEntry, ShardWriter, shard_path
from storage.checks import MAX_ID, RowProblem, check_id, check_text
from storage.jobs import run_shard_jobs
from storage.syncd import MAX_SOURCE_VIEWS, SyncdItem, metadata_files, read_metadata


logger = logging.getLogger(__name__)

SYNCD_CURATION_VERSION = 1


def _item_problem(item: SyncdItem) -> RowProblem | None:
    """An id that cannot be stored or text that is not valid Unicode: the item is refused, the run goes on."""
    try:
        check_id(item.id)
        for column in ("category", "category_description", "objaverse_id"):
            check_text(getattr(item, column), column)
        for view, (filename, prompt) in enumerate(zip(item.filenames, item.prompts, strict=True)):
            check_text(filename, f"filenames[{view}]")
            check_text(prompt, f"prompts[{view}]")
    except RowProblem as exc:
        return exc
    return None


def normalise_description(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".")


def _reject(item: SyncdItem, reason: str, detail: str, view: int | None = None) -> dict:
    filename = item.filenames[view] if view is not None and view < len(item.filenames) else None
    return {
        "stage": "curate",
        "table": "identities",
        "id": item.id if 0 <= item.id <= MAX_ID else None,
        "view": None if view is None else view + 1,
        "source": f"{item.where}" + (f":{filename}" if filename else ""),
        "reason": reason,
        "detail": detail,
    }


def _write_syncd_shard(
    input_dir: str, config: SyncdCurationConfig, root: str, path: str, digest: str, rows: list[dict]
) -> ShardEntry:
    with ShardWriter(root, "identities", path, digest) as writer:
        for row in rows:
            out = {k: v for k, v in row.items() if k != "views"}
            for slot, filename in enumerate(row["views"], start=1):
                out[f"images{slot}"], out[f"masks{slot}"] = load_view(input_dir, filename, config)
            writer.write(out)
        return writer.close(stats={"rows_in": len(rows), "rejected": 0})


def curate_syncd(
    input_dir: str,
    out: str,
    config: SyncdCurationConfig | None = None,
    workers: int = 1,
    force: bool = False,
    progress: bool = True,
) -> CurationSummary:
    """Curate a SynCD release folder into ``out/identities`` shards, ``out/rejects`` and a report."""
    config = config or SyncdCurationConfig()
    start = time.perf_counter()
    items = read_metadata(input_dir, with_scores=config.uses_scores)
    stages: list[tuple[str, int]] = [("metadata items", len(items))]
    rejects: list[dict] = []

    seen: dict[int, SyncdItem] = {}
    survivors: list[SyncdItem] = []
    for item in items:
        problem = _item_problem(item)
        if problem is not None:
            rejects.append(_reject(item, problem.code, problem.detail))
        elif item.id in seen:
            rejects.append(_reject(item, "duplicate-id", f"id {item.id} already used by {seen[item.id].where}"))
        else:
            seen[item.id] = item
            survivors.append(item)
    stages.append(("valid, unique ids", len(survivors)))

    rigid = [i for i in survivors if i.category == "rigid"]
    rejects += [_reject(i, "deformable", f"category {i.category!r}") for i in survivors if i.category != "rigid"]
    stages.append(("category rigid", len(rigid)))

    check_fn = partial(check_item, input_dir, config)
    with progress_bar(total=len(rigid), desc="check views", unit="identity", enabled=progress) as bar:
        if workers <= 1:
            checks = []
            for item in rigid:
                checks.append(check_fn(item))
                bar.update(1)
        else:
            pool = ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent, initargs=(os.getpid(),))
            with pool:
                checks = []
                for check in pool.map(check_fn, rigid, chunksize=16):
                    checks.append(check)
                    bar.update(1)

    safe = []
    for check in checks:
        if check.unsafe:
            rejects.append(_reject(check.item, "unsafe-path", check.unsafe))
        else:
            safe.append(check)
    stages.append(("safe paths", len(safe)))
    for check in safe:
        rejects += [_reject(check.item, reason, detail, view) for view, reason, detail in check.view_rejects]
        check.view_rejects.clear()
    viewable = [c for c in safe if len(c.usable) >= config.min_views]
    stages.append((f">= {config.min_views} usable views", len(viewable)))
    for check in viewable:
        apply_quality(check, config)
        rejects += [_reject(check.item, reason, detail, view) for view, reason, detail in check.view_rejects]
    enough = []
    for check in safe:
        if len(check.usable) >= config.min_views:
            enough.append(check)
        else:
            detail = f"{len(check.usable)} usable view(s), need {config.min_views}"
            rejects.append(_reject(check.item, "too-few-views", detail))
    if config.uses_scores:
        stages.append(("quality filters", len(enough)))

    keyed = []
    for check in enough:
        if not check.item.category_description.strip():
            rejects.append(_reject(check.item, "empty-description", "no category_description"))
        elif not check.item.objaverse_id.strip():
            rejects.append(_reject(check.item, "empty-objaverse-id", "no objaverse_id"))
        else:
            keyed.append(check)
    stages.append(("description and Objaverse id present", len(keyed)))

    kept: list[ItemCheck] = []
    by_description: dict[str, int] = {}
    by_objaverse: dict[str, int] = {}
    for check in sorted(keyed, key=lambda c: (-len(c.usable), c.item.id)):
        description, objaverse = normalise_description(check.item.category_description), check.item.objaverse_id
        if description in by_description:
            rejects.append(
                _reject(check.item, "duplicate-description", f"description taken by id {by_description[description]}")
            )
        elif objaverse in by_objaverse:
            rejects.append(
                _reject(check.item, "duplicate-objaverse-id", f"objaverse id taken by id {by_objaverse[objaverse]}")
            )
        else:
            by_description[description] = by_objaverse[objaverse] = check.item.id
            kept.append(check)
    kept.sort(key=lambda c: c.item.id)
    stages.append(("unique description and Objaverse id", len(kept)))

    n_val, n_test = default_split_sizes(len(kept)) if len(kept) >= 3 else (0, 0)
    n_val = n_val if config.n_val is None else config.n_val
    n_test = n_test if config.n_test is None else config.n_test
    splits = assign_splits([c.item.id for c in kept], n_val, n_test, config.split_salt) if kept else {}

    rows = []
    for check in kept:
        item, views = check.item, check.usable[:MAX_SOURCE_VIEWS]
        row = {
            "id": item.id,
            "split": splits[item.id],
            "category": item.category,
            "category_description": item.category_description,
            "objaverse_id": item.objaverse_id,
            "quality": _quality(item, views),
            "n_images": len(views),
            "views": [item.filenames[v] for v in views],
        }
        for slot, view in enumerate(views, start=1):
            row[f"prompts{slot}"] = item.prompts[view]
        rows.append(row)

    global_digest = config_hash(config, version=SYNCD_CURATION_VERSION, metadata=_metadata_digest(input_dir, config))
    chunks = [rows[i : i + config.shard_size] for i in range(0, len(rows), config.shard_size)]
    jobs = []
    for k, chunk in enumerate(chunks):
        digest = config_hash(
            {"global": global_digest, "ids": [r["id"] for r in chunk], "splits": [r["split"] for r in chunk]}
        )
        jobs.append((shard_path("identities", k), digest, partial(_write_syncd_shard, input_dir, config, out), chunk))
    plan = {**{path: job_digest for path, job_digest, *_ in jobs}, REJECTS_PATH: global_digest}
    written, skipped = run_shard_jobs(
        out, "identities", jobs, workers=workers, force=force, progress=progress, plan=plan
    )

    report = CurationReport(
        source="syncd",
        input=str(input_dir),
        config=config,
        stages=stages,
        identities_in=len(items),
        kept=len(rows),
        views=dict(sorted(Counter(r["n_images"] for r in rows).items())),
        splits={s: sum(1 for r in rows if r["split"] == s) for s in ("train", "val", "test")},
        rejects=rejects,
    )
    write_report(out, report, rejects_config_hash=global_digest)
    return CurationSummary(
        root=out,
        identities=len(rows),
        views=report.views,
        splits=report.splits,
        shards_written=written,
        shards_skipped=skipped,
        config_hash=global_digest,
        seconds=time.perf_counter() - start,
        rejected=report.identities_rejected,
    )


def _quality(item: SyncdItem, views: list[int]) -> float | None:
    """Mean aesthetics score of the kept views, when the metadata has scores."""
    scores = [item.aesthetics_scores.get(Path(item.filenames[v]).stem) for v in views]
    scores = [s for s in scores if s is not None]
    return float(np.mean(scores)) if scores else None


def _metadata_digest(input_dir: str, config: SyncdCurationConfig) -> str:
    digest = hashlib.sha256()
    for path in metadata_files(input_dir, with_scores=config.uses_scores):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
