"""Check a dataset root against its manifest: files, checksums, schemas, decodability, ids.

Every problem is reported with a stable code, the place (shard, id, column) and a precise message;
the CLI exits non-zero when any error is found. Nothing is repaired.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import pyarrow.parquet as pq
from tqdm.auto import tqdm

from nearid.common.progress import progress_bar
from storage.codecs import DecodeError, decode_mask, decode_rgb
from storage.fs import join, resolve, sha256_file
from storage.manifest import MANIFEST_NAME, Manifest, ManifestError, ShardEntry, load_manifest
from storage.schemas import LEGACY_COLUMNS, MAX_VIEWS, SPLITS, TableSpec, spec_for_table


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """One finding of :func:`validate`."""

    code: str
    where: str
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        return f"{self.severity.upper():7s} [{self.code}] {self.where}: {self.message}"


def _check_schema(entry: ShardEntry, spec: TableSpec, pf: pq.ParquetFile) -> list[Problem]:
    found = pf.schema_arrow
    problems = []
    for expected in spec.fields:
        idx = found.get_field_index(expected.name)
        if idx < 0:
            problems.append(Problem("schema-mismatch", entry.path, f"column {expected.name!r} is missing"))
        elif not found.field(idx).type.equals(expected.type):
            problems.append(
                Problem(
                    "schema-mismatch",
                    entry.path,
                    f"column {expected.name!r} has type {found.field(idx).type}, expected {expected.type}",
                )
            )
    extra = [name for name in found.names if name not in spec.column_names]
    legacy = [name for name in extra if name in LEGACY_COLUMNS.get(spec.kind, ())]
    if legacy:
        problems.append(Problem("legacy-column", entry.path, f"columns {legacy} are no longer written", "warning"))
    if len(extra) > len(legacy):
        problems.append(
            Problem("schema-mismatch", entry.path, f"unexpected columns {sorted(set(extra) - set(legacy))}")
        )
    return problems


def _check_row(entry: ShardEntry, spec: TableSpec, row: dict) -> Iterator[Problem]:
    """Decode every image and mask of a row and check what the data model promises about them."""
    row_id = row.get(spec.id_column) if spec.id_column else None
    where = f"{entry.path} id={row_id}"
    sizes: dict[int, tuple[int, int]] = {}
    for col in spec.image_columns:
        if row.get(col) is None:
            continue
        try:
            image = decode_rgb(row[col]["bytes"])
            sizes[int(col[-1])] = image.size
        except DecodeError as exc:
            yield Problem("image-undecodable", f"{where} {col}", str(exc))
    for col in spec.mask_columns:
        if row.get(col) is None:
            continue
        slot = int(col[-1])
        try:
            mask = decode_mask(row[col]["bytes"])
        except DecodeError as exc:
            yield Problem("mask-undecodable", f"{where} {col}", str(exc))
            continue
        if slot not in sizes and row.get(f"images{slot}") is None:
            yield Problem("mask-without-image", f"{where} {col}", f"mask stored but images{slot} is empty")
        elif slot in sizes and (mask.shape[1], mask.shape[0]) != sizes[slot]:
            yield Problem(
                "mask-size-mismatch",
                f"{where} {col}",
                f"mask is {mask.shape[1]}x{mask.shape[0]}, view is {sizes[slot][0]}x{sizes[slot][1]}",
            )
        elif not mask.any():
            yield Problem("mask-empty", f"{where} {col}", "mask has no foreground pixel")
    if spec.kind == "identities":
        views = [k for k in range(1, MAX_VIEWS + 1) if row.get(f"images{k}") is not None]
        if row.get("n_images") != len(views):
            yield Problem("n-images-mismatch", where, f"n_images={row.get('n_images')} but {len(views)} views stored")
        if len(views) < 2:
            yield Problem("too-few-views", where, f"{len(views)} view(s); an identity needs at least 2")
        for k in views:
            if row.get(f"masks{k}") is None:
                yield Problem("mask-missing", f"{where} masks{k}", f"images{k} has no mask")
        if row.get("split") not in SPLITS:
            yield Problem("bad-split", where, f"split {row.get('split')!r} is not one of {list(SPLITS)}")


def _check_shard(
    fs, base: str, entry: ShardEntry, decode: bool, verify_checksums: bool, ids: dict, bar: tqdm
) -> Iterator[Problem]:
    try:
        spec = spec_for_table(entry.table)
    except ValueError as exc:
        yield Problem("unknown-table", entry.path, str(exc))
        return
    full = join(base, entry.path)
    if not fs.exists(full):
        yield Problem("shard-missing", entry.path, "listed in the manifest but the file does not exist")
        return
    size = fs.size(full)
    if size != entry.bytes:
        yield Problem("size-mismatch", entry.path, f"file has {size} bytes, manifest says {entry.bytes}")
    elif verify_checksums:
        digest = sha256_file(fs, full)
        if digest != entry.sha256:
            yield Problem("checksum-mismatch", entry.path, f"sha256 {digest[:16]}… != manifest {entry.sha256[:16]}…")
    try:
        pf = pq.ParquetFile(fs.open(full, "rb"))
    except Exception as exc:  # pyarrow raises several types for corrupt files
        yield Problem("parquet-unreadable", entry.path, f"not a readable Parquet file: {exc}")
        return
    with pf:
        schema_problems = _check_schema(entry, spec, pf)
        yield from schema_problems
        if pf.metadata.num_rows != entry.rows:
            yield Problem(
                "row-count-mismatch", entry.path, f"file has {pf.metadata.num_rows} rows, manifest says {entry.rows}"
            )
        if schema_problems:
            bar.update(pf.metadata.num_rows)
            return
        columns = [spec.id_column] if spec.id_column and not decode else None
        for batch in pf.iter_batches(batch_size=64, columns=columns):
            for row in batch.to_pylist():
                bar.update(1)
                row_id = row.get(spec.id_column) if spec.id_column else None
                if spec.id_column and row_id is None and spec.unique_ids:  # a reject may lack a usable id
                    yield Problem("null-id", entry.path, "a row has no id")
                elif spec.unique_ids and spec.id_column:
                    if row_id in ids:
                        yield Problem(
                            "duplicate-id", f"{entry.path} id={row_id}", f"id {row_id} also appears in {ids[row_id]}"
                        )
                    else:
                        ids[row_id] = entry.path
                if decode:
                    yield from _check_row(entry, spec, row)


def _check_strays(fs, base: str, manifest: Manifest) -> Iterator[Problem]:
    """Files under table folders that the manifest does not list: partial writes or uncommitted shards."""
    listed = set(manifest.shards)
    for path in sorted(fs.find(base)):
        rel = path[len(base) :].lstrip("/")
        if rel in listed or "/" not in rel:
            continue
        name = rel.rsplit("/", 1)[1]
        if name.endswith(".tmp"):
            yield Problem("partial-file", rel, "left by an interrupted writer; ignored, safe to delete", "warning")
        elif name.endswith(".parquet"):
            yield Problem("uncommitted-shard", rel, "not in the manifest, so not part of the dataset", "warning")


def _check_plans(manifest: Manifest, allow_partial: bool) -> Iterator[Problem]:
    """Tables that their writer's plan says are not finished: shards not committed yet, shards still from an
    earlier configuration, or entries a shrinking run has not dropped yet."""
    severity = "warning" if allow_partial else "error"
    for producer, plan in sorted(manifest.plans.items()):
        missing = sorted(path for path in plan if path not in manifest.shards)
        outdated = sorted(
            path
            for path, digest in plan.items()
            if path in manifest.shards and manifest.shards[path].config_hash != digest
        )
        extra = sorted(entry.path for entry in manifest.table(producer) if entry.path not in plan)
        parts = []
        for label, paths in (
            ("not committed", missing),
            ("from another configuration", outdated),
            ("unplanned", extra),
        ):
            if paths:
                shown = ", ".join(paths[:3]) + (" …" if len(paths) > 3 else "")
                parts.append(f"{len(paths)} {label} ({shown})")
        if parts:
            done = len(plan) - len(missing) - len(outdated)
            message = f"{done} of {len(plan)} planned shards are done; " + "; ".join(parts)
            yield Problem("incomplete", producer, message + " (a run stopped early or is still running)", severity)


def validate(
    root: str,
    decode: bool = True,
    verify_checksums: bool = True,
    progress: bool = True,
    allow_partial: bool = False,
) -> list[Problem]:
    """All problems found in the dataset at ``root``; an empty list means it is valid. A table its writer has
    not finished is an error (``incomplete``) unless ``allow_partial``."""
    try:
        manifest = load_manifest(root)
    except ManifestError as exc:
        code = "manifest-missing" if "no manifest" in str(exc) else "manifest-invalid"
        return [Problem(code, MANIFEST_NAME, str(exc))]
    fs, base = resolve(root)
    problems: list[Problem] = []
    ids_by_table: dict[str, dict] = {}
    total = sum(e.rows for e in manifest.shards.values())
    with progress_bar(total=total, desc="validate", unit="row", enabled=progress) as bar:
        for table, entries in manifest.tables().items():
            ids = ids_by_table.setdefault(table, {})
            for entry in entries:
                problems.extend(_check_shard(fs, base, entry, decode, verify_checksums, ids, bar))
    identity_ids = ids_by_table.get("identities")
    for table, ids in ids_by_table.items():
        if not table.startswith("distractors/") or identity_ids is None:
            continue
        unknown = sorted(set(ids) - set(identity_ids))
        if unknown:
            shown = ", ".join(map(str, unknown[:10])) + (" …" if len(unknown) > 10 else "")
            problems.append(Problem("unknown-id", table, f"{len(unknown)} ids are not identities: {shown}"))
    problems.extend(_check_plans(manifest, allow_partial))
    problems.extend(_check_strays(fs, base, manifest))
    return problems
