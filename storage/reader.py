"""Streaming reader over the complete shards of one table, with lookup by id."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from storage.codecs import DecodeError, decode_mask, decode_rgb
from storage.fs import is_local, join, resolve
from storage.manifest import Manifest, ShardEntry, load_manifest
from storage.schemas import spec_for_table


logger = logging.getLogger(__name__)


def data_files(root: str, table: str, manifest: Manifest | None = None) -> list[str]:
    """Full paths (or URLs) of the complete shards of ``table``, for ``datasets.load_dataset("parquet", ...)``."""
    manifest = manifest or load_manifest(root)
    fs, base = resolve(root)
    paths = [join(base, e.path) for e in manifest.table(table)]
    return paths if is_local(fs) else [fs.unstrip_protocol(p) for p in paths]


class TableReader:
    """Reads the rows of one table from the shards its manifest lists as complete.

    Rows come back as dicts; image columns decode to RGB PIL images and mask columns to boolean
    arrays (``decode=False`` keeps the raw ``{"bytes", "path"}`` structs).
    """

    def __init__(self, root: str, table: str, manifest: Manifest | None = None) -> None:
        self.root = root
        self.table = table
        self.spec = spec_for_table(table)
        self.manifest = manifest or load_manifest(root)
        self.shards: list[ShardEntry] = self.manifest.table(table)
        self._fs, self._base = resolve(root)
        self._index: dict[int, tuple[int, int]] | None = None

    def __len__(self) -> int:
        return sum(e.rows for e in self.shards)

    def _open(self, entry: ShardEntry) -> pq.ParquetFile:
        return pq.ParquetFile(self._fs.open(join(self._base, entry.path), "rb"))

    def decode_row(self, row: dict[str, Any], where: str = "") -> dict[str, Any]:
        """Decode the image and mask structs of one raw row in place; a broken cell raises
        :class:`~storage.codecs.DecodeError` naming the shard (``where``), the id and the column."""
        for columns, decode in ((self.spec.image_columns, decode_rgb), (self.spec.mask_columns, decode_mask)):
            for col in columns:
                if col in row and row[col] is not None:
                    try:
                        row[col] = decode(row[col]["bytes"])
                    except DecodeError as exc:
                        place = f"{where} id={row.get(self.spec.id_column)} {col}".strip()
                        raise DecodeError(f"{self.table} {place}: {exc}") from exc
        return row

    def iter_batches(
        self, columns: Sequence[str] | None = None, batch_size: int = 64, shards: Sequence[ShardEntry] | None = None
    ) -> Iterator[pa.RecordBatch]:
        """Stream Arrow record batches shard by shard (all, or only ``shards``), row group by row group."""
        for entry in self.shards if shards is None else shards:
            with self._open(entry) as pf:
                yield from pf.iter_batches(batch_size=batch_size, columns=list(columns) if columns else None)

    def iter_rows(
        self, columns: Sequence[str] | None = None, decode: bool = True, shards: Sequence[ShardEntry] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Stream rows as dicts (of every shard, or only of ``shards``)."""
        for entry in self.shards if shards is None else shards:
            for batch in self.iter_batches(columns, shards=[entry]):
                for row in batch.to_pylist():
                    yield self.decode_row(row, entry.path) if decode else row

    def ids(self) -> np.ndarray:
        """All ids, in shard order (reads only the id column)."""
        parts = [b.column(0).to_numpy() for b in self.iter_batches([self.spec.id_column], batch_size=65536)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def _build_index(self) -> dict[int, tuple[int, int]]:
        index: dict[int, tuple[int, int]] = {}
        for shard_no, entry in enumerate(self.shards):
            with self._open(entry) as pf:
                ids = pf.read(columns=[self.spec.id_column]).column(0).to_numpy()
            for row_no, value in enumerate(ids.tolist()):
                index.setdefault(value, (shard_no, row_no))
        return index

    def get(self, id_: int, columns: Sequence[str] | None = None, decode: bool = True) -> dict[str, Any]:
        """The row with this id; reads only the row group that holds it."""
        if self.spec.id_column is None:
            raise TypeError(f"table {self.table!r} has no id column")
        if self._index is None:
            self._index = self._build_index()
        if id_ not in self._index:
            raise KeyError(f"id {id_} is not in table {self.table!r} of {self.root}")
        shard_no, row_no = self._index[id_]
        with self._open(self.shards[shard_no]) as pf:
            offset = 0
            for rg in range(pf.metadata.num_row_groups):
                n = pf.metadata.row_group(rg).num_rows
                if row_no < offset + n:
                    group = pf.read_row_group(rg, columns=list(columns) if columns else None)
                    row = group.slice(row_no - offset, 1).to_pylist()[0]
                    return self.decode_row(row, self.shards[shard_no].path) if decode else row
                offset += n
        raise KeyError(f"id {id_}: index points past the end of {self.shards[shard_no].path}")
