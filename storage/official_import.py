"""``nearid import-hf``: the official NearID hub layout (row-aligned ``datasets`` folders) into our layout.

Every row goes through the checks curation applies (:mod:`storage.checks`); image bytes pass through untouched
when they are PNG (masks: binary greyscale PNG), anything else is re-encoded as PNG (pixels preserved, bytes
not) and counted in the summary.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from storage.checks import MAX_ID, RowProblem, check_id, check_number, check_split, check_text, check_view, open_image
from storage.codecs import encode_mask, encode_png
from storage.fs import join, remove_dead_temps, resolve
from storage.manifest import ShardEntry, commit_shards, load_manifest
from storage.official import OfficialLayoutError, load_official, read_split_files
from storage.schemas import MAX_VIEWS, distractors_table
from storage.writer import PNG_MAGIC, ShardWriter, shard_path


@dataclass
class ImportSummary:
    """What an import wrote and what it had to re-encode or refuse."""

    identities: int = 0
    distractors: dict[str, int] = field(default_factory=dict)
    reencoded_images: int = 0
    reencoded_masks: int = 0
    rejected: int = 0


def _png_image(data: bytes, rgb: np.ndarray, summary: ImportSummary) -> bytes:
    """The view's own bytes when they are an RGB PNG, else its pixels re-encoded as PNG."""
    if data.startswith(PNG_MAGIC) and Image.open(io.BytesIO(data)).mode == "RGB":
        return data
    summary.reencoded_images += 1
    return encode_png(rgb)


def _png_mask(data: bytes, mask: np.ndarray, summary: ImportSummary) -> bytes:
    image = Image.open(io.BytesIO(data))
    if data.startswith(PNG_MAGIC) and image.mode == "L" and set(np.unique(np.asarray(image)).tolist()) <= {0, 255}:
        return data
    summary.reencoded_masks += 1
    return encode_mask(mask)


def _chunks(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


def _reject(source: str, reason: str, detail: str, identity: int | None, view: int | None = None) -> dict:
    return {
        "stage": "import",
        "table": "identities",
        "id": identity,
        "view": view,
        "source": source,
        "reason": reason,
        "detail": detail,
    }


@dataclass
class _Imported:
    """One positives row as it will be written, or why it is refused."""

    row: dict | None
    kept_slots: list[int]
    rejects: list[dict]


def _import_row(row: dict, row_no: int, split: Any, where: str, seen: set[int], summary: ImportSummary) -> _Imported:
    """Check one positives row the way curation checks a view; refused views and rows become rejects."""
    source = f"{where}[{row_no}]"
    try:
        identity = check_id(row.get("id"))
    except RowProblem as exc:
        return _Imported(None, [], [_reject(source, exc.code, exc.detail, None)])
    if identity in seen:
        return _Imported(None, [], [_reject(source, "duplicate-id", f"id {identity} appears earlier", identity)])
    seen.add(identity)
    try:
        out = {
            "id": identity,
            "split": check_split(split),
            "quality": check_number(row.get("quality"), "quality"),
            **{c: check_text(row.get(c), c) for c in ("category", "category_description", "objaverse_id")},
        }
        prompts = {slot: check_text(row.get(f"prompts{slot}"), f"prompts{slot}") for slot in range(1, MAX_VIEWS + 1)}
    except RowProblem as exc:
        return _Imported(None, [], [_reject(source, exc.code, exc.detail, identity)])
    rejects, kept = [], []
    for slot in range(1, MAX_VIEWS + 1):
        image = (row.get(f"images{slot}") or {}).get("bytes")
        if image is None:
            continue
        mask = (row.get(f"masks{slot}") or {}).get("bytes")
        try:
            rgb, binary = check_view(image, mask)
        except RowProblem as exc:
            rejects.append(_reject(source, exc.code, exc.detail, identity, slot))
            continue
        new_slot = len(kept) + 1
        out[f"images{new_slot}"] = _png_image(image, rgb, summary)
        out[f"masks{new_slot}"] = _png_mask(mask, binary, summary)
        out[f"prompts{new_slot}"] = prompts[slot]
        kept.append(slot)
    if len(kept) < 2:
        rejects.append(_reject(source, "too-few-views", f"{len(kept)} usable view(s), need 2", identity))
        return _Imported(None, [], rejects)
    out["n_images"] = len(kept)
    return _Imported(out, kept, rejects)


def import_official(
    positives: str | Path,
    out: str,
    distractors: Mapping[str, str | Path] | None = None,
    split_dir: str | Path | None = None,
    shard_size: int = 256,
) -> ImportSummary:
    """Import the official positives (and row-aligned distractor datasets) into our layout at ``out``.

    Every row goes through the checks curation applies (ids, splits, text, numbers, views and masks); a refused
    view or row is a reject with its reason. A view that is refused takes its distractors along, and the views
    left keep their distractors (distractor k stays in the background of view k). The whole import is one
    commit (with its plans): the root shows all of it or, after a failure, nothing of it.
    """
    from nearid.common.hashing import config_hash
    from nearid.common.splits import assign_splits, default_split_sizes

    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    summary = ImportSummary()
    pos = load_official(positives)
    for column in ("id", "images1", "images2"):
        if column not in pos.column_names:
            raise OfficialLayoutError(f"positives dataset {positives} has no column {column!r}")
    if split_dir is not None:
        by_row: dict[int, Any] = read_split_files(split_dir, len(pos))
    elif "split" in pos.column_names:
        by_row = dict(enumerate(pos["split"]))
    else:
        valid_ids = [i for i in pos["id"] if isinstance(i, int) and 0 <= i <= MAX_ID]
        by_id = assign_splits(sorted(set(valid_ids)), *default_split_sizes(len(set(valid_ids))))
        by_row = {row: by_id.get(i) for row, i in enumerate(pos["id"])}
    digest = config_hash({"positives": str(positives), "rows": len(pos), "splits": str(split_dir)})

    fs, base = resolve(out)
    for folder in ("identities", "rejects", *(distractors_table(name) for name in distractors or {})):
        remove_dead_temps(fs, join(base, folder))
    sources = {name: load_official(folder) for name, folder in (distractors or {}).items()}
    for name, ds in sources.items():
        _check_alignment(ds, pos, distractors[name])
    since = load_manifest(out, missing_ok=True).generation

    # one pass over the positives, shards staged as they fill: only ids and kept slots stay in memory
    seen: set[int] = set()
    kept: list[_Kept] = []
    rejects: list[dict] = []
    staged: list[ShardEntry] = []
    writer: ShardWriter | None = None
    try:
        for row_no in range(len(pos)):
            item = _import_row(pos[row_no], row_no, by_row.get(row_no), str(positives), seen, summary)
            rejects += item.rejects
            if item.row is None:
                continue
            if writer is None:
                writer = ShardWriter(out, "identities", shard_path("identities", len(staged)), digest)
            writer.write(item.row)
            kept.append(_Kept(row_no, item.row["id"], item.kept_slots))
            if writer.rows == shard_size:
                staged.append(writer.close(stats={"rows_in": shard_size, "rejected": 0}))
                writer = None
        if writer is not None:
            staged.append(writer.close(stats={"rows_in": writer.rows, "rejected": 0}))
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    summary.identities = len(kept)
    plans = {"identities": {entry.path: digest for entry in staged}}
    for name, ds in sources.items():
        table = distractors_table(name)
        entries, written = _import_distractors(ds, out, name, table, kept, shard_size, digest, summary)
        staged += entries
        plans[table] = {entry.path: digest for entry in entries}
        summary.distractors[name] = written
    rejects_path = shard_path("rejects", 0, prefix="import")
    with ShardWriter(out, "rejects", rejects_path, digest) as rejects_writer:
        for reject in rejects:
            rejects_writer.write(reject)
    staged.append(rejects_writer.entry)
    plans["identities"][rejects_path] = digest
    manifest = load_manifest(out, missing_ok=True)
    outdated = [e.path for table in plans for e in manifest.table(table) if e.path not in plans[table]]
    commit_shards(out, staged, since=since, plans=plans, drop=outdated)
    summary.rejected = len(rejects)
    return summary


@dataclass(frozen=True)
class _Kept:
    """What the distractor pass needs of a kept positives row."""

    row_no: int
    id: int
    slots: list[int]


def _check_alignment(ds: Any, pos: Any, folder: str | Path) -> None:
    if len(ds) != len(pos):
        raise OfficialLayoutError(f"{folder}: {len(ds)} rows, positives have {len(pos)}: not row-aligned")
    if "id" in ds.column_names:
        for row_no, (theirs, ours) in enumerate(zip(ds["id"], pos["id"], strict=True)):
            if theirs != ours:
                raise OfficialLayoutError(f"{folder}: row {row_no} has id {theirs}, positives have {ours}")


def _import_distractors(
    ds: Any,
    out: str,
    name: str,
    table: str,
    kept: list[_Kept],
    shard_size: int,
    digest: str,
    summary: ImportSummary,
) -> tuple[list[ShardEntry], int]:
    """One distractor source, row-aligned with the positives: only rows and views the import kept, each
    distractor moved with its view; an unreadable distractor is left out of its slot."""
    entries, written = [], 0
    for k, chunk in enumerate(_chunks(len(kept), shard_size)):
        with ShardWriter(out, table, shard_path(table, k), digest) as writer:
            for index in chunk:
                row = kept[index]
                theirs = ds[row.row_no]
                out_row: dict[str, Any] = {"id": row.id, "config": name, "family": "imported"}
                for new_slot, slot in enumerate(row.slots, start=1):
                    data = (theirs.get(f"nimg{slot}") or {}).get("bytes")
                    if data is None:
                        continue
                    try:
                        rgb = np.asarray(open_image(data).convert("RGB"))
                    except (RowProblem, OSError, ValueError):
                        continue
                    out_row[f"nimg{new_slot}"] = _png_image(data, rgb, summary)
                    out_row[f"prompts{new_slot}"] = _prompt(theirs.get(f"prompts{slot}"))
                if any(out_row.get(f"nimg{s}") is not None for s in range(1, MAX_VIEWS + 1)):
                    writer.write({**out_row, "params_hash": digest})
                    written += 1
        entries.append(writer.close())
    return entries, written


def _prompt(value: Any) -> str | None:
    """A distractor prompt, or None when it cannot be stored as text."""
    try:
        return check_text(value, "prompt")
    except RowProblem:
        return None
