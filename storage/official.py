"""Adapters for the official NearID hub layout: row-aligned ``datasets`` folders and split files.

Official layout: a positives dataset (``id``, ``category``, ``category_description``, ``images1..3``,
``masks1..3``, ``prompts1..3``, ``objaverse_id``, ``n_images``, ``quality``, optionally ``split``;
older cards call the views ``img1..3``) and one dataset per distractor source (``nimg1..3`` plus the
positives' columns) whose rows align with the positives row for row. Splits are JSON files of
0-based row positions (a list, or ``{"indices": [...]}``). Our layout joins by id instead of by row.
Reading and export live here; the import, with its row checks, is :mod:`storage.official_import`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from storage.reader import TableReader
from storage.schemas import MAX_VIEWS, distractors_table


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
    ``NearID-<source>/`` per distractor configuration (row-aligned, empty slots as None), each a ``DatasetDict``
    with a ``train`` split and a dataset card, and ``splits/{train,val,test}.json`` (row positions). Streams rows;
    returns rows written per dataset."""
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

    _save(datasets, positives, datasets.Features(positive_features), out / POSITIVES_NAME, root)
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
        _save(datasets, aligned, distractor_features, out / name, root)
        written[name] = sum(e.rows for e in reader.manifest.table(table))
    return written


CARD = """---
pretty_name: {name}
configs:
- config_name: default
  data_files:
  - split: train
    path: train/data-*.arrow
---
# {name}

Exported by `nearid export-hf` from `{root}` in the layout of the published NearID datasets: a `DatasetDict` saved
with `save_to_disk`, one `train` split of {rows} rows in the positives' row order (distractor datasets are
row-aligned with the positives; empty slots are None). The official train/val/test assignment is in `../splits/`
as 0-based row positions.

Columns: {columns}.

```python
import datasets

ds = datasets.load_from_disk("{name}")["train"]          # or:
ds = datasets.load_dataset("{name}", split="train")      # reads the same Arrow files through this card
```
"""


def _save(datasets: Any, generator: Any, features: Any, target: Path, root: str) -> None:
    """Build a dataset from a generator (streamed through a temporary cache) and save it as the hub's NearID
    datasets are: a ``DatasetDict`` with one ``train`` split, plus a dataset card (``README.md``)."""
    import shutil
    import tempfile

    target.parent.mkdir(parents=True, exist_ok=True)
    cache = tempfile.mkdtemp(prefix=".cache-", dir=target.parent)
    try:
        ds = datasets.Dataset.from_generator(generator, features=features, cache_dir=cache)
        datasets.DatasetDict({"train": ds}).save_to_disk(str(target))
        card = CARD.format(name=target.name, root=root, rows=len(ds), columns=", ".join(f"`{c}`" for c in features))
        (target / "README.md").write_text(card)
        del ds
    finally:
        shutil.rmtree(cache, ignore_errors=True)
