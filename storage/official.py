"""Adapters for the official NearID hub layout: row-aligned ``datasets`` folders and split files.

Official layout: a positives dataset (``id``, ``category``, ``category_description``, ``images1..3``,
``masks1..3``, ``prompts1..3``, ``objaverse_id``, ``n_images``, ``quality``, optionally ``split``;
older cards call the views ``img1..3``) and one dataset per distractor source (``nimg1..3`` plus the
positives' columns) whose rows align with the positives row for row. Splits are JSON files of
0-based row positions (a list, or ``{"indices": [...]}``). Our layout joins by id instead of by row.

Image bytes pass through untouched when they are PNG (masks: greyscale PNG); anything else is
decoded and re-encoded as PNG (pixels preserved, bytes not), and counted in the import summary.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from storage.codecs import encode_mask, encode_png
from storage.manifest import commit_shards
from storage.reader import TableReader
from storage.schemas import MAX_VIEWS, distractors_table
from storage.writer import PNG_MAGIC, ShardWriter, shard_path


logger = logging.getLogger(__name__)

OFFICIAL_SOURCES = {
    "Flux": "flux-fill-512",
    "Flux_1024": "flux-fill-1024",
    "FluxC": "flux-canny-512",
    "FluxC_1024": "flux-canny-1024",
    "PowerPaint": "powerpaint",
    "Qwen": "qwen-512",
    "Qwen_1328": "qwen-1328",
    "SDXL": "sdxl-512",
    "SDXL_1024": "sdxl-1024",
}
"""Official distractor dataset suffix (``Aleksandar/NearID-<suffix>``) -> our configuration name."""
POSITIVES_NAME = "NearID"
SPLIT_NAMES = ("train", "val", "test")
POSITIVE_COLUMNS = ("id", "category", "category_description", "objaverse_id", "n_images", "quality")


class OfficialLayoutError(ValueError):
    """The official-layout input is inconsistent (misaligned rows, bad split files, missing columns)."""


def config_name_for(folder: str | Path) -> str:
    """Our configuration name for an official distractor folder such as ``NearID-Flux_1024``."""
    name = Path(folder).name
    suffix = name.split("-", 1)[1] if name.startswith(f"{POSITIVES_NAME}-") else name
    if suffix in OFFICIAL_SOURCES:
        return OFFICIAL_SOURCES[suffix]
    return distractors_table(suffix.lower())[len("distractors/") :]


def load_official(path: str | Path) -> Any:
    """A ``datasets.Dataset`` from a ``save_to_disk`` folder (split ``train`` of a DatasetDict) or from
    the Parquet files under ``path``; image columns are left undecoded (``{"bytes", "path"}``)."""
    import datasets

    folder = Path(path)
    if (folder / "dataset_dict.json").is_file():
        ds = datasets.load_from_disk(str(folder))["train"]
    elif (folder / "state.json").is_file():
        ds = datasets.load_from_disk(str(folder))
    else:
        files = sorted(str(p) for p in folder.rglob("*.parquet"))
        if not files:
            raise OfficialLayoutError(f"{folder}: neither a save_to_disk folder nor a folder of Parquet files")
        ds = datasets.load_dataset("parquet", data_files=files, split="train")
    renames = {f"img{k}": f"images{k}" for k in range(1, MAX_VIEWS + 1) if f"img{k}" in ds.column_names}
    if renames and not any(f"images{k}" in ds.column_names for k in range(1, MAX_VIEWS + 1)):
        ds = ds.rename_columns(renames)
    for column, feature in ds.features.items():
        if isinstance(feature, datasets.Image):
            ds = ds.cast_column(column, datasets.Image(decode=False))
    return ds


def read_split_files(split_dir: str | Path, n_rows: int) -> dict[int, str]:
    """Row position -> split from ``train.json``/``val.json``/``test.json``. Without ``train.json``
    every row not in val or test is train; with it, the three files must partition the rows."""
    folder = Path(split_dir)
    assignment: dict[int, str] = {}
    for name in SPLIT_NAMES:
        path = folder / f"{name}.json"
        if not path.is_file():
            if name == "train":
                continue
            raise OfficialLayoutError(f"split file {path} is missing")
        data = json.loads(path.read_text())
        indices = data.get("indices") if isinstance(data, dict) else data
        if not isinstance(indices, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
            raise OfficialLayoutError(
                f"{path.name}: expected a list of integer row positions (or {{'indices': [...]}})"
            )
        if len(set(indices)) != len(indices):
            raise OfficialLayoutError(f"{path.name}: duplicate row positions")
        for i in indices:
            if not 0 <= i < n_rows:
                raise OfficialLayoutError(f"{path.name}: row position {i} is out of range for {n_rows} rows")
            if i in assignment:
                raise OfficialLayoutError(f"{path.name}: row {i} is already in the {assignment[i]} split")
            assignment[i] = name
    if (folder / "train.json").is_file():
        missing = n_rows - len(assignment)
        if missing:
            raise OfficialLayoutError(f"split files leave {missing} of {n_rows} rows in no split")
    else:
        assignment = {i: assignment.get(i, "train") for i in range(n_rows)}
    return assignment


@dataclass
class ImportSummary:
    """What an import wrote and what it had to re-encode or refuse."""

    identities: int = 0
    distractors: dict[str, int] = field(default_factory=dict)
    reencoded_images: int = 0
    reencoded_masks: int = 0
    rejected: int = 0


def _png_image(cell: Mapping | None, summary: ImportSummary) -> bytes | None:
    if cell is None or cell.get("bytes") is None:
        return None
    data = cell["bytes"]
    if data.startswith(PNG_MAGIC) and Image.open(io.BytesIO(data)).mode == "RGB":
        return data
    summary.reencoded_images += 1
    return encode_png(Image.open(io.BytesIO(data)).convert("RGB"))


def _png_mask(cell: Mapping | None, summary: ImportSummary) -> bytes | None:
    if cell is None or cell.get("bytes") is None:
        return None
    data = cell["bytes"]
    image = Image.open(io.BytesIO(data))
    if data.startswith(PNG_MAGIC) and image.mode == "L" and set(np.unique(np.asarray(image)).tolist()) <= {0, 255}:
        return data
    summary.reencoded_masks += 1
    return encode_mask(np.asarray(image.convert("L")) > 127)


def _as_float(value: Any, where: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise OfficialLayoutError(f"{where}: expected a number, got {value!r}") from exc


def _chunks(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


def import_official(
    positives: str | Path,
    out: str,
    distractors: Mapping[str, str | Path] | None = None,
    split_dir: str | Path | None = None,
    shard_size: int = 256,
) -> ImportSummary:
    """Import the official positives (and row-aligned distractor datasets) into our layout at ``out``."""
    from nearid.common.hashing import config_hash
    from nearid.common.splits import assign_splits, default_split_sizes

    summary = ImportSummary()
    pos = load_official(positives)
    for column in ("id", "images1", "images2"):
        if column not in pos.column_names:
            raise OfficialLayoutError(f"positives dataset {positives} has no column {column!r}")
    ids = [int(i) for i in pos["id"]]
    if len(set(ids)) != len(ids):
        raise OfficialLayoutError(f"positives dataset {positives} has duplicate ids")
    if split_dir is not None:
        by_row = read_split_files(split_dir, len(pos))
    elif "split" in pos.column_names:
        by_row = dict(enumerate(pos["split"]))
    else:
        by_id = assign_splits(ids, *default_split_sizes(len(ids)))
        by_row = {row: by_id[i] for row, i in enumerate(ids)}
    digest = config_hash({"positives": str(positives), "rows": len(pos), "splits": str(split_dir)})

    rejects: list[dict] = []
    for k, rows in enumerate(_chunks(len(pos), shard_size)):
        with ShardWriter(out, "identities", shard_path("identities", k), digest) as writer:
            kept = 0
            for row_no in rows:
                row = pos[row_no]
                views = [
                    (slot, _png_image(row.get(f"images{slot}"), summary), _png_mask(row.get(f"masks{slot}"), summary))
                    for slot in range(1, MAX_VIEWS + 1)
                ]
                views = [v for v in views if v[1] is not None]
                if len(views) < 2:
                    rejects.append(
                        {
                            "stage": "import",
                            "table": "identities",
                            "id": ids[row_no],
                            "view": None,
                            "source": f"{positives}[{row_no}]",
                            "reason": "too-few-views",
                            "detail": f"{len(views)} view(s)",
                        }
                    )
                    continue
                out_row = {c: row.get(c) for c in POSITIVE_COLUMNS if c in row}
                out_row |= {"id": ids[row_no], "split": by_row[row_no], "n_images": len(views)}
                out_row["quality"] = _as_float(row.get("quality"), f"{positives} row {row_no} column 'quality'")
                for new_slot, (slot, image, mask) in enumerate(views, start=1):
                    out_row[f"images{new_slot}"] = image
                    out_row[f"masks{new_slot}"] = mask
                    out_row[f"prompts{new_slot}"] = row.get(f"prompts{slot}")
                writer.write(out_row)
                kept += 1
            writer.close(stats={"rows_in": len(rows), "rejected": len(rows) - kept})
        commit_shards(out, [writer.entry])
        summary.identities += writer.entry.rows

    for name, folder in (distractors or {}).items():
        summary.distractors[name] = _import_distractors(folder, out, name, ids, shard_size, summary)
    with ShardWriter(out, "rejects", shard_path("rejects", 0, prefix="import"), digest) as writer:
        for reject in rejects:
            writer.write(reject)
    commit_shards(out, [writer.entry])
    summary.rejected = len(rejects)
    return summary


def _import_distractors(
    folder: str | Path, out: str, name: str, ids: list[int], shard_size: int, summary: ImportSummary
) -> int:
    from nearid.common.hashing import config_hash

    ds = load_official(folder)
    if len(ds) != len(ids):
        raise OfficialLayoutError(f"{folder}: {len(ds)} rows, positives have {len(ids)}: not row-aligned")
    if "id" in ds.column_names:
        for row_no, (theirs, ours) in enumerate(zip(ds["id"], ids, strict=True)):
            if int(theirs) != ours:
                raise OfficialLayoutError(f"{folder}: row {row_no} has id {theirs}, positives have {ours}")
    table = distractors_table(name)
    digest = config_hash({"distractors": str(folder), "rows": len(ds)})
    written = 0
    for k, rows in enumerate(_chunks(len(ds), shard_size)):
        with ShardWriter(out, table, shard_path(table, k), digest) as writer:
            for row_no in rows:
                row = ds[row_no]
                images = {f"nimg{s}": _png_image(row.get(f"nimg{s}"), summary) for s in range(1, MAX_VIEWS + 1)}
                if all(v is None for v in images.values()):
                    continue
                prompts = {f"prompts{s}": row.get(f"prompts{s}") for s in range(1, MAX_VIEWS + 1)}
                writer.write(
                    {
                        "id": ids[row_no],
                        **images,
                        **prompts,
                        "config": name,
                        "family": "imported",
                        "params_hash": digest,
                    }
                )
        commit_shards(out, [writer.entry])
        written += writer.entry.rows
    return written


def _aligned_rows(root: str, table: str, order: list[int]) -> Iterator[dict]:
    """Rows of ``table`` in ``order`` (empty dicts for missing ids): a streaming merge when the table
    follows the same order (as generated tables do), random access by id for rows that do not."""
    reader = TableReader(root, table)
    present = set(reader.ids().tolist())
    rows = reader.iter_rows(decode=False)
    pending = next(rows, None)
    for identity in order:
        if pending is not None and pending["id"] == identity:
            yield pending
            pending = next(rows, None)
        elif identity in present:
            yield reader.get(identity, decode=False)
        else:
            yield {}


def export_official(root: str, out_dir: str | Path) -> dict[str, int]:
    """Write our dataset as the official layout: ``NearID/`` (positives, in shard order), one
    ``NearID-<source>/`` per distractor configuration (row-aligned, empty slots as None) and
    ``splits/{train,val,test}.json`` (row positions). Streams rows; returns rows written per dataset."""
    import datasets

    out = Path(out_dir)
    reader = TableReader(root, "identities")
    image, text = datasets.Image(), datasets.Value("string")
    slots = range(1, MAX_VIEWS + 1)
    shared = {
        "id": datasets.Value("int64"),
        "category": text,
        "category_description": text,
        "objaverse_id": text,
        "n_images": datasets.Value("int64"),
        "quality": datasets.Value("float64"),
    }
    positive_features = {
        **shared,
        "split": text,
        **{f"images{k}": image for k in slots},
        **{f"masks{k}": image for k in slots},
        **{f"prompts{k}": text for k in slots},
    }
    order: list[int] = []
    splits: dict[str, list[int]] = {name: [] for name in SPLIT_NAMES}

    def positives() -> Iterator[dict]:
        for position, row in enumerate(reader.iter_rows(decode=False)):
            order.append(row["id"])
            splits[row["split"]].append(position)
            yield {key: row.get(key) for key in positive_features}

    _save(datasets, positives, datasets.Features(positive_features), out / POSITIVES_NAME)
    written = {POSITIVES_NAME: len(order)}
    (out / "splits").mkdir(parents=True, exist_ok=True)
    for name, positions in splits.items():
        (out / "splits" / f"{name}.json").write_text(json.dumps(positions))

    distractor_features = datasets.Features(
        {**shared, **{f"nimg{k}": image for k in slots}, **{f"prompts{k}": text for k in slots}}
    )
    reverse = {ours: theirs for theirs, ours in OFFICIAL_SOURCES.items()}
    for table in sorted(t for t in reader.manifest.tables() if t.startswith("distractors/")):

        def aligned(table: str = table) -> Iterator[dict]:
            positive_rows = reader.iter_rows(columns=list(shared), decode=False)
            for positive, row in zip(positive_rows, _aligned_rows(root, table, order), strict=True):
                yield {
                    **positive,
                    **{f"nimg{k}": row.get(f"nimg{k}") for k in slots},
                    **{f"prompts{k}": row.get(f"prompts{k}") for k in slots},
                }

        config = table.split("/", 1)[1]
        name = f"{POSITIVES_NAME}-{reverse.get(config, config)}"
        _save(datasets, aligned, distractor_features, out / name)
        written[name] = sum(e.rows for e in reader.manifest.table(table))
    return written


def _save(datasets: Any, generator: Any, features: Any, target: Path) -> None:
    """Build a dataset from a generator (streamed through a temporary cache) and ``save_to_disk``."""
    import shutil
    import tempfile

    target.parent.mkdir(parents=True, exist_ok=True)
    cache = tempfile.mkdtemp(prefix=".cache-", dir=target.parent)
    try:
        ds = datasets.Dataset.from_generator(generator, features=features, cache_dir=cache)
        ds.save_to_disk(str(target))
        del ds
    finally:
        shutil.rmtree(cache, ignore_errors=True)
