"""The Mind-the-Glitch (MTG) layout: two views of one subject, each with a part-edited copy and masks.

Columns (all images): ``image_{1,2}_original``, ``image_{1,2}_inpainted`` (the same view with one part
edited), ``image_{1,2}_object_mask``, ``image_{1,2}_part_mask``; optional ``id`` and ``category``.
Read from a ``save_to_disk`` folder (a DatasetDict's split, or a Dataset) or from Parquet files.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from storage.codecs import DecodeError, decode_image


MTG_IMAGE_COLUMNS = ("image_1_original", "image_2_original", "image_1_inpainted", "image_2_inpainted")
MTG_MASK_COLUMNS = ("image_1_object_mask", "image_2_object_mask", "image_1_part_mask", "image_2_part_mask")


class MTGLayoutError(ValueError):
    """The folder is not an MTG dataset (missing columns, unknown split)."""


@dataclass(frozen=True)
class MTGSample:
    """One MTG row: originals and part-edited copies of two views, and their object and part masks
    (None when the row has no mask)."""

    id: int
    category: str | None
    original: tuple[Image.Image, Image.Image]
    inpainted: tuple[Image.Image, Image.Image]
    object_mask: tuple[np.ndarray | None, np.ndarray | None]
    part_mask: tuple[np.ndarray | None, np.ndarray | None]


def _load(path: str | Path, split: str | None):
    import datasets

    folder = Path(path)
    if (folder / "dataset_dict.json").is_file():
        dd = datasets.load_from_disk(str(folder))
        if split is None:
            raise MTGLayoutError(f"{folder} holds splits {sorted(dd)}: choose one")
        if split not in dd:
            raise MTGLayoutError(f"{folder} has no split {split!r}; it has {sorted(dd)}")
        ds = dd[split]
    elif (folder / "state.json").is_file():
        ds = datasets.load_from_disk(str(folder))
    else:
        pattern = f"{split}-*.parquet" if split else "*.parquet"
        files = sorted(str(p) for p in folder.rglob(pattern)) or sorted(str(p) for p in folder.rglob("*.parquet"))
        if not files:
            raise MTGLayoutError(f"{folder}: neither a save_to_disk folder nor Parquet files")
        ds = datasets.load_dataset("parquet", data_files=files, split="train")
    missing = [c for c in (*MTG_IMAGE_COLUMNS, *MTG_MASK_COLUMNS) if c not in ds.column_names]
    if missing:
        raise MTGLayoutError(f"{folder} is not an MTG dataset: missing columns {missing}")
    for column in (*MTG_IMAGE_COLUMNS, *MTG_MASK_COLUMNS):
        ds = ds.cast_column(column, datasets.Image(decode=False))
    return ds


def _image(cell: dict | None, where: str) -> Image.Image:
    if cell is None or cell.get("bytes") is None:
        raise MTGLayoutError(f"{where} is empty")
    try:
        return decode_image(cell["bytes"]).convert("RGB")
    except DecodeError as exc:
        raise MTGLayoutError(f"{where}: {exc}") from exc


def _mask(cell: dict | None) -> np.ndarray | None:
    if cell is None or cell.get("bytes") is None:
        return None
    return np.asarray(Image.open(io.BytesIO(cell["bytes"])).convert("L")) > 127


class MTGDataset:
    """Random access to the samples of one MTG split (memory-mapped; images decode on access)."""

    def __init__(self, path: str | Path, split: str | None = None) -> None:
        self.path = path
        self._ds = _load(path, split)

    def __len__(self) -> int:
        return len(self._ds)

    def __getitem__(self, position: int) -> MTGSample:
        return _sample(self._ds[position], f"{self.path} row {position}", position)


def open_mtg(path: str | Path, split: str | None = None) -> MTGDataset:
    """An indexable MTG split, for training and evaluation."""
    return MTGDataset(path, split)


def read_mtg(path: str | Path, split: str | None = None) -> Iterator[MTGSample]:
    """Stream the samples of an MTG dataset; masks are binarised at 127 (they ship as clean 'L' images)."""
    dataset = open_mtg(path, split)
    for position in range(len(dataset)):
        yield dataset[position]


def _sample(row: dict, where: str, position: int) -> MTGSample:
    return MTGSample(
        id=int(row["id"]) if row.get("id") is not None else position,
        category=row.get("category"),
        original=(_image(row["image_1_original"], where), _image(row["image_2_original"], where)),
        inpainted=(_image(row["image_1_inpainted"], where), _image(row["image_2_inpainted"], where)),
        object_mask=(_mask(row["image_1_object_mask"]), _mask(row["image_2_object_mask"])),
        part_mask=(_mask(row["image_1_part_mask"]), _mask(row["image_2_part_mask"])),
    )
