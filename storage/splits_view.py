"""The train/val/test splits of any table as a ``datasets.DatasetDict``, for users of the ``datasets`` library.

Shards mix splits (the split is a column of ``identities``), so loading the shards with ``split="train"`` returns
every row. :func:`load_splits` returns one dataset per split instead: identities filtered by their split column,
distractor tables by the split of the identity each row belongs to.
"""

from __future__ import annotations

from typing import Any

import pyarrow.dataset as pads

from storage.manifest import load_manifest
from storage.reader import data_files
from storage.schemas import SPLITS


def split_ids(root: str) -> dict[str, set[int]]:
    """Identity ids per split, read from the ``split`` column of ``identities`` only."""
    table = pads.dataset(data_files(root, "identities")).to_table(columns=["id", "split"])
    ids: dict[str, set[int]] = {split: set() for split in SPLITS}
    for identity, split in zip(table["id"].to_pylist(), table["split"].to_pylist(), strict=True):
        ids[split].add(identity)
    return ids


def load_splits(root: str, table: str = "identities", **load_kwargs: Any) -> Any:
    """``DatasetDict`` with ``train``, ``val`` and ``test`` (splits without rows are left out) of ``table``."""
    import datasets

    manifest = load_manifest(root)
    if not manifest.table(table):
        raise ValueError(f"{root} has no complete shards of table {table!r}; tables: {sorted(manifest.tables())}")
    rows = datasets.load_dataset("parquet", data_files=data_files(root, table, manifest), split="train", **load_kwargs)
    by_split = split_ids(root)
    out = {}
    for split in SPLITS:
        wanted = by_split[split]
        part = rows.filter(lambda ids, wanted=wanted: [i in wanted for i in ids], input_columns="id", batched=True)
        if len(part):
            out[split] = part
    return datasets.DatasetDict(out)
