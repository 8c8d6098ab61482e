"""SynCD curation (paper §3.3): rigid identities, strict uniqueness, >= 2 usable views, cleaned masks.

Stages, in order; every identity that leaves records a reject with a reason, so
``identities in = kept + rejected`` always holds:

1. ``duplicate-id``: an id seen earlier in the metadata (file order, then position).
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
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from nearid.common.hashing import config_hash
from nearid.common.masks import clean_mask
from nearid.common.splits import SPLIT_SALT, assign_splits, default_split_sizes
from nearid.curation.report import REJECTS_PATH, CurationReport, CurationSummary, write_report
from storage import ShardEntry, ShardWriter, shard_path
from storage.jobs import run_shard_jobs
from storage.syncd import MAX_SOURCE_VIEWS, SyncdItem, UnsafePathError, metadata_files, read_metadata, view_paths


logger = logging.getLogger(__name__)

SYNCD_CURATION_VERSION = 1


@dataclass(frozen=True)
class SyncdCurationConfig:
    """Thresholds and split sizes of a SynCD curation run."""

    min_views: int = 2
    min_mask_fraction: float = 0.001
    max_mask_fraction: float = 0.95
    min_aesthetics: float | None = None
    min_dino: float | None = None
    max_dino: float = 0.98
    n_val: int | None = None
    n_test: int | None = None
    split_salt: str = SPLIT_SALT
    shard_size: int = 256

    def __post_init__(self) -> None:
        if not 2 <= self.min_views <= MAX_SOURCE_VIEWS:
            raise ValueError(f"min_views must be 2 or 3, got {self.min_views}")
        if not 0.0 <= self.min_mask_fraction < self.max_mask_fraction <= 1.0:
            raise ValueError("need 0 <= min_mask_fraction < max_mask_fraction <= 1")
        if self.min_dino is not None and not self.min_dino <= self.max_dino:
            raise ValueError("min_dino must be <= max_dino")
        if self.shard_size < 1:
            raise ValueError("shard_size must be >= 1")

    @property
    def uses_scores(self) -> bool:
        return self.min_aesthetics is not None or self.min_dino is not None


class ViewError(ValueError):
    """A view cannot be used; ``reason`` is the stable reject code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def load_view(input_dir: str, filename: str, config: SyncdCurationConfig) -> tuple[np.ndarray, np.ndarray]:
    """The RGB pixels and cleaned boolean mask of one view, or a :class:`ViewError` saying why not."""
    image_path, mask_path = view_paths(input_dir, filename)
    if not image_path.is_file():
        raise ViewError("image-missing", f"{image_path.name} does not exist")
    try:
        image = Image.open(image_path)
        image.load()
    except Exception as exc:  # PIL raises many types for broken files
        raise ViewError("image-undecodable", f"{image_path.name}: {exc}") from exc
    if image.mode in ("L", "LA", "1", "I", "I;16", "F"):
        raise ViewError("greyscale-image", f"{image_path.name} is {image.mode}: a view must show the object's colour")
    if image.mode == "CMYK":
        raise ViewError("cmyk-image", f"{image_path.name} is CMYK: convert it to RGB with a colour-managed tool")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        if np.asarray(rgba)[..., 3].min() < 255:
            raise ViewError("transparent-image", f"{image_path.name} has transparent pixels")
        image = rgba
    rgb = np.asarray(image.convert("RGB"))
    if not mask_path.is_file():
        raise ViewError("mask-missing", f"masks/{mask_path.name} does not exist")
    try:
        raw_mask = Image.open(mask_path)
        raw_mask.load()
    except Exception as exc:
        raise ViewError("mask-undecodable", f"masks/{mask_path.name}: {exc}") from exc
    if raw_mask.size != image.size:
        raise ViewError(
            "mask-size-mismatch",
            f"mask is {raw_mask.size[0]}x{raw_mask.size[1]}, view is {image.size[0]}x{image.size[1]}",
        )
    mask = clean_mask(np.asarray(raw_mask.convert("L")))
    fraction = float(mask.mean())
    if fraction < config.min_mask_fraction:
        raise ViewError("mask-empty", f"cleaned mask covers {fraction:.4%} of the view")
    if fraction > config.max_mask_fraction:
        raise ViewError("mask-full", f"cleaned mask covers {fraction:.2%} of the view")
    return rgb, mask


@dataclass
class ItemCheck:
    """Pass-1 verdict on one item: usable view indices (0-based) and view-level rejects."""

    item: SyncdItem
    usable: list[int] = field(default_factory=list)
    view_rejects: list[tuple[int, str, str]] = field(default_factory=list)
    unsafe: str | None = None


def check_item(input_dir: str, config: SyncdCurationConfig, item: SyncdItem) -> ItemCheck:
    """Load and check every view of one item (runs in worker processes)."""
    check = ItemCheck(item)
    for view, filename in enumerate(item.filenames):
        if view >= MAX_SOURCE_VIEWS:
            check.view_rejects.append((view, "extra-view", f"only the first {MAX_SOURCE_VIEWS} views are used"))
            continue
        try:
            load_view(input_dir, filename, config)
            check.usable.append(view)
        except UnsafePathError as exc:
            check.unsafe = str(exc)
            return check
        except ViewError as exc:
            check.view_rejects.append((view, exc.reason, exc.detail))
    return check


def apply_quality(check: ItemCheck, config: SyncdCurationConfig) -> None:
    """Drop views that fail the optional score filters (in place)."""
    item = check.item
    if config.min_aesthetics is not None:
        kept = []
        for view in check.usable:
            score = item.aesthetics_scores.get(Path(item.filenames[view]).stem)
            if score is None or score < config.min_aesthetics:
                detail = (
                    "no aesthetics score" if score is None else f"aesthetics {score:.2f} < {config.min_aesthetics}"
                )
                check.view_rejects.append((view, "low-aesthetics", detail))
            else:
                kept.append(view)
        check.usable = kept
    if config.min_dino is not None:
        scores = item.dino_scores or ()

        def pair_ok(i: int, j: int) -> bool:
            a, b = min(i, j), max(i, j)
            value = scores[a][b] if a < len(scores) and b < len(scores[a]) else None
            return value is not None and config.min_dino <= value <= config.max_dino

        kept = [v for v in check.usable if any(pair_ok(v, w) for w in check.usable if w != v)]
        for view in check.usable:
            if view not in kept:
                check.view_rejects.append((view, "low-dino", "in no view pair within the DINO score range"))
        check.usable = kept


def normalise_description(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".")


def _reject(item: SyncdItem, reason: str, detail: str, view: int | None = None) -> dict:
    filename = item.filenames[view] if view is not None and view < len(item.filenames) else None
    return {
        "stage": "curate",
        "table": "identities",
        "id": item.id,
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
    config: SyncdCurationConfig = SyncdCurationConfig(),
    workers: int = 1,
    force: bool = False,
    progress: bool = True,
) -> CurationSummary:
    """Curate a SynCD release folder into ``out/identities`` shards, ``out/rejects`` and a report."""
    start = time.perf_counter()
    items = read_metadata(input_dir, with_scores=config.uses_scores)
    stages: list[tuple[str, int]] = [("metadata items", len(items))]
    rejects: list[dict] = []

    seen: dict[int, SyncdItem] = {}
    survivors: list[SyncdItem] = []
    for item in items:
        if item.id in seen:
            rejects.append(_reject(item, "duplicate-id", f"id {item.id} already used by {seen[item.id].where}"))
        else:
            seen[item.id] = item
            survivors.append(item)
    stages.append(("unique ids", len(survivors)))

    rigid = [i for i in survivors if i.category == "rigid"]
    rejects += [_reject(i, "deformable", f"category {i.category!r}") for i in survivors if i.category != "rigid"]
    stages.append(("category rigid", len(rigid)))

    check_fn = partial(check_item, input_dir, config)
    with tqdm(total=len(rigid), desc="check views", unit="identity", disable=not progress) as bar:
        if workers <= 1:
            checks = []
            for item in rigid:
                checks.append(check_fn(item))
                bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
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
