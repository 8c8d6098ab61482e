"""Arrow schemas of the three tables, with the Hugging Face feature metadata that makes ``datasets``
decode image columns.

Column names follow the official NearID datasets (``images1..3``, ``masks1..3``, ``nimg1..3``) so that
``datasets.load_dataset("parquet", data_files=...)`` gives the same columns as the official release.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import pyarrow as pa


SCHEMA_VERSION = 1
MAX_VIEWS = 3
IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
SPLITS = ("train", "val", "test")


def _hf_feature(arrow_type: pa.DataType, is_image: bool) -> dict:
    """The ``datasets.Features.to_dict()`` entry for one column."""
    if is_image:
        return {"_type": "Image"}
    if pa.types.is_list(arrow_type):
        return {"feature": _hf_feature(arrow_type.value_type, False), "_type": "List"}
    names = {
        pa.int64(): "int64",
        pa.int32(): "int32",
        pa.float64(): "float64",
        pa.float32(): "float32",
        pa.string(): "string",
        pa.bool_(): "bool",
    }
    if arrow_type not in names:
        raise TypeError(f"no Hugging Face feature mapping for Arrow type {arrow_type}")
    return {"dtype": names[arrow_type], "_type": "Value"}


@dataclass(frozen=True)
class TableSpec:
    """One table: its Arrow fields and which of them hold images or masks."""

    kind: str
    fields: tuple[pa.Field, ...]
    image_columns: tuple[str, ...] = ()
    mask_columns: tuple[str, ...] = ()
    id_column: str | None = "id"
    unique_ids: bool = True
    schema: pa.Schema = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.kind}: duplicate column names in {names}")
        for col in (*self.image_columns, *self.mask_columns):
            if col not in names:
                raise ValueError(f"{self.kind}: image/mask column {col!r} is not a field")
        encoded = {*self.image_columns, *self.mask_columns}
        features = {f.name: _hf_feature(f.type, f.name in encoded) for f in self.fields}
        metadata = {
            b"huggingface": json.dumps({"info": {"features": features}}).encode(),
            b"nearid": json.dumps({"table": self.kind, "schema_version": SCHEMA_VERSION}).encode(),
        }
        object.__setattr__(self, "schema", pa.schema(list(self.fields), metadata=metadata))

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @property
    def encoded_columns(self) -> tuple[str, ...]:
        """Columns stored as PNG structs."""
        return (*self.image_columns, *self.mask_columns)


def _slots(prefix: str, type_: pa.DataType = IMAGE_STRUCT) -> list[pa.Field]:
    return [pa.field(f"{prefix}{k}", type_) for k in range(1, MAX_VIEWS + 1)]


def _names(prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}{k}" for k in range(1, MAX_VIEWS + 1))


IDENTITIES = TableSpec(
    kind="identities",
    fields=(
        pa.field("id", pa.int64(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("category", pa.string()),
        pa.field("category_description", pa.string()),
        pa.field("objaverse_id", pa.string()),
        pa.field("quality", pa.float64()),
        pa.field("n_images", pa.int64(), nullable=False),
        *_slots("images"),
        *_slots("masks"),
        *_slots("prompts", pa.string()),
    ),
    image_columns=_names("images"),
    mask_columns=_names("masks"),
)
"""One row per identity: 2-3 views, their foreground masks and per-view prompts."""

DISTRACTORS = TableSpec(
    kind="distractors",
    fields=(
        pa.field("id", pa.int64(), nullable=False),
        *_slots("nimg"),
        *_slots("prompts", pa.string()),
        # provenance: enough to regenerate any single image exactly
        pa.field("config", pa.string(), nullable=False),
        pa.field("family", pa.string(), nullable=False),
        pa.field("model_ids", pa.list_(pa.string())),
        pa.field("model_revisions", pa.list_(pa.string())),
        pa.field("seeds", pa.list_(pa.int64())),
        pa.field("steps", pa.int32()),
        pa.field("guidance", pa.float64()),
        pa.field("strength", pa.float64()),
        pa.field("working_width", pa.int32()),
        pa.field("working_height", pa.int32()),
        pa.field("composited", pa.bool_()),
        pa.field("params_hash", pa.string(), nullable=False),
        pa.field("code_version", pa.string()),
        pa.field("qc_fg_change", pa.list_(pa.float64())),
        pa.field("qc_bg_change", pa.list_(pa.float64())),
    ),
    image_columns=_names("nimg"),
)
"""One row per identity and generator configuration: distractor k sits in the background of view k. Rows hold
nothing that changes between two runs of the same inputs (timings go to the manifest entry's stats), so a
rebuild is byte-identical."""

LEGACY_COLUMNS: dict[str, frozenset[str]] = {"distractors": frozenset({"seconds"})}
"""Columns older shards may still carry (per-image wall-clock seconds, removed for reproducibility); readers
ignore them and validation only warns."""

REJECTS = TableSpec(
    kind="rejects",
    fields=(
        pa.field("stage", pa.string(), nullable=False),
        pa.field("table", pa.string(), nullable=False),
        pa.field("id", pa.int64()),
        pa.field("view", pa.int32()),
        pa.field("source", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),
    ),
    unique_ids=False,
)
"""Every refused input row or output image, with a stable reason code and a human detail."""

_CONFIG_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


DISTRACTORS_PREFIX = "distractors/"


def distractors_table(config: str) -> str:
    """The table name of one generator configuration's distractors."""
    if not _CONFIG_NAME.match(config):
        raise ValueError(f"invalid configuration name {config!r}: use lower-case letters, digits, '.', '_', '-'")
    return DISTRACTORS_PREFIX + config


def distractor_configs(tables: Iterable[str]) -> list[str]:
    """The configurations of the distractor tables among ``tables``, sorted."""
    return sorted(t[len(DISTRACTORS_PREFIX) :] for t in tables if t.startswith(DISTRACTORS_PREFIX))


def spec_for_table(table: str) -> TableSpec:
    """Map a table name (``identities``, ``rejects``, ``distractors/<config>``) to its spec."""
    if table == "identities":
        return IDENTITIES
    if table == "rejects":
        return REJECTS
    if table.startswith("distractors/"):
        distractors_table(table.split("/", 1)[1])
        return DISTRACTORS
    raise ValueError(f"unknown table {table!r}: expected 'identities', 'rejects' or 'distractors/<config>'")
