"""Parquet shard writer: buffered row groups under a temporary name, checksum on the fly.

Closing a writer *stages* the shard: the file is complete under its temporary name and its entry says where.
:func:`storage.manifest.commit_shards` renames it into place and records it in one step under the manifest
lock. A process killed at any point leaves at most a ``.tmp`` file, which no reader treats as complete and
the next run removes.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from storage.codecs import encode_mask, encode_png
from storage.fs import join, open_hashing, resolve, sync_file, temp_name
from storage.manifest import ShardEntry
from storage.schemas import spec_for_table


logger = logging.getLogger(__name__)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DEFAULT_ROW_GROUP_BYTES = 32 << 20
DEFAULT_ROW_GROUP_ROWS = 1024


def shard_path(table: str, index: int, prefix: str = "shard") -> str:
    """Relative path of shard ``index`` of ``table``; ``prefix`` names rejects shards by their producer."""
    if index < 0:
        raise ValueError(f"shard index must be >= 0, got {index}")
    return f"{table}/{prefix}-{index:05d}.parquet"


class ShardWriter:
    """Writes one shard of one table. Use as a context manager; on an exception nothing is left behind.

    Args:
        root: dataset root (local path or fsspec URL).
        table: ``identities``, ``rejects`` or ``distractors/<config>``.
        path: shard path relative to ``root`` (see :func:`shard_path`).
        config_hash: hash of the configuration that produced the rows; reruns compare against it.
        row_group_bytes: flush a row group once this many encoded bytes are buffered, so readers can
            stream a shard without holding it whole.
        row_group_rows: upper bound on rows per row group.
    """

    def __init__(
        self,
        root: str,
        table: str,
        path: str,
        config_hash: str,
        row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
        row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
    ) -> None:
        if not path.startswith(table + "/") or not path.endswith(".parquet"):
            raise ValueError(f"shard path {path!r} must be '{table}/<name>.parquet'")
        if row_group_bytes <= 0 or row_group_rows <= 0:
            raise ValueError("row group limits must be positive")
        self.spec = spec_for_table(table)
        self.table = table
        self.path = path
        self.config_hash = config_hash
        self.row_group_bytes = row_group_bytes
        self.row_group_rows = row_group_rows
        self._fs, self._base = resolve(root)
        self._final = join(self._base, path)
        self._tmp = temp_name(self._final)
        self._buffer: list[dict[str, Any]] = []
        self._buffer_bytes = 0
        self._rows = 0
        self._ids: set[int] = set()
        self._file_ctx = None
        self._hasher = None
        self._pq: pq.ParquetWriter | None = None
        self.entry: ShardEntry | None = None

    # -- row conversion -------------------------------------------------------------------------

    def _encode_cell(self, column: str, value: Any, row_id: Any) -> dict[str, Any] | None:
        if value is None:
            return None
        if isinstance(value, dict):
            data = value.get("bytes")
        elif isinstance(value, bytes | bytearray | memoryview):
            data = bytes(value)
        elif isinstance(value, Image.Image | np.ndarray):
            if column in self.spec.mask_columns:
                data = encode_mask(value)
            else:
                data = encode_png(value.convert("RGB") if isinstance(value, Image.Image) else value)
        else:
            raise TypeError(f"column {column!r} of id {row_id}: cannot store a {type(value).__name__} as an image")
        if not isinstance(data, bytes) or not data.startswith(PNG_MAGIC):
            raise ValueError(f"column {column!r} of id {row_id}: image bytes must be PNG (lossless)")
        return {"bytes": data, "path": f"{row_id}-{column}.png"}

    def _prepare(self, row: dict[str, Any]) -> dict[str, Any]:
        unknown = set(row) - set(self.spec.column_names)
        if unknown:
            raise ValueError(f"{self.table}: unknown columns {sorted(unknown)}")
        row_id = row.get(self.spec.id_column) if self.spec.id_column else None
        out: dict[str, Any] = {}
        for f in self.spec.fields:
            value = row.get(f.name)
            if value is None and not f.nullable:
                raise ValueError(f"{self.table}: column {f.name!r} is required (id {row_id})")
            if f.name in self.spec.encoded_columns:
                value = self._encode_cell(f.name, value, row_id)
                if value is not None:
                    self._buffer_bytes += len(value["bytes"])
            out[f.name] = value
        if self.spec.unique_ids and row_id is not None:
            if row_id in self._ids:
                raise ValueError(f"{self.table}: duplicate id {row_id} in shard {self.path}")
            self._ids.add(int(row_id))
        return out

    # -- writing --------------------------------------------------------------------------------

    def _open(self) -> None:
        self._fs.makedirs(self._final.rpartition("/")[0], exist_ok=True)
        self._file_ctx = open_hashing(self._fs, self._tmp)
        self._hasher = self._file_ctx.__enter__()
        encoded = set(self.spec.encoded_columns)
        plain = [f.name for f in self.spec.fields if f.name not in encoded]
        self._pq = pq.ParquetWriter(
            pa.PythonFile(self._hasher, mode="w"),
            self.spec.schema,
            compression={name: ("none" if name in encoded else "zstd") for name in self.spec.column_names},
            use_dictionary=[n for n in plain if not pa.types.is_list(self.spec.schema.field(n).type)],
            write_statistics=plain,
        )

    def write(self, row: dict[str, Any]) -> None:
        """Buffer one row (images as PIL, arrays, PNG bytes or ``{"bytes", "path"}`` dicts)."""
        if self.entry is not None:
            raise RuntimeError(f"shard {self.path} is already closed")
        if self._pq is None:
            self._open()
        self._buffer.append(self._prepare(row))
        self._rows += 1
        if self._buffer_bytes >= self.row_group_bytes or len(self._buffer) >= self.row_group_rows:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        batch = pa.RecordBatch.from_pylist(self._buffer, schema=self.spec.schema)
        self._pq.write_batch(batch, row_group_size=len(self._buffer))
        self._buffer.clear()
        self._buffer_bytes = 0

    def close(self, stats: dict[str, int] | None = None) -> ShardEntry:
        """Finish the file and return its staged manifest entry (:func:`storage.manifest.commit_shards`
        publishes it)."""
        if self.entry is not None:
            return self.entry
        if self._pq is None:
            self._open()
        self._flush()
        self._pq.close()
        self._file_ctx.__exit__(None, None, None)
        sync_file(self._fs, self._tmp)  # outside the manifest lock, so the commit only renames
        self.entry = ShardEntry(
            path=self.path,
            table=self.table,
            rows=self._rows,
            bytes=self._hasher.size,
            sha256=self._hasher.hexdigest(),
            config_hash=self.config_hash,
            stats=dict(stats or {}),
            staged=self._tmp[len(self._base) :].lstrip("/"),
        )
        logger.debug("staged %s: %d rows, %d bytes", self.path, self._rows, self._hasher.size)
        return self.entry

    def abort(self) -> None:
        """Drop everything written so far."""
        try:
            if self._pq is not None:
                self._pq.close()
            if self._file_ctx is not None:
                self._file_ctx.__exit__(None, None, None)
        finally:
            if self._fs.exists(self._tmp):
                self._fs.rm(self._tmp)
            self._buffer.clear()

    @property
    def rows(self) -> int:
        return self._rows

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
