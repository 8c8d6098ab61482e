"""Bytes on disk: Arrow schemas, Parquet shard writer and reader, manifest, codecs and validation.

Everything here works on local paths and on any fsspec URL (``memory://``, ``s3://``, ``gs://``).
"""

from storage.manifest import Manifest, ShardEntry, commit_shards, load_manifest
from storage.object_lock import LockTimeout, object_lock, supports_locking
from storage.reader import TableReader, data_files
from storage.schemas import IDENTITIES, REJECTS, TableSpec, distractors_table, spec_for_table
from storage.splits_view import load_splits
from storage.writer import ShardWriter, shard_path


__all__ = [
    "IDENTITIES",
    "LockTimeout",
    "REJECTS",
    "Manifest",
    "ShardEntry",
    "ShardWriter",
    "TableReader",
    "TableSpec",
    "commit_shards",
    "data_files",
    "distractors_table",
    "load_manifest",
    "load_splits",
    "object_lock",
    "shard_path",
    "spec_for_table",
    "supports_locking",
]
