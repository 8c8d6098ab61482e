"""Training tuples: for each identity an anchor, up to two positives and one distractor per slot.

Slot layout (``pixel_values`` [6, 3, H, W]): 0 anchor, 1-2 positives, 3-5 the distractors in the
backgrounds of slots 0-2. Per epoch the anchor is a random valid view; each slot's distractor comes
from a training source chosen at random among those that have it. Everything random is drawn from an
RNG keyed on (seed, epoch, index), so a tuple is the same in any worker and after a resume.

Rows are read by id from ``datasets``' memory-mapped Arrow cache of the shards, so the full dataset
never has to fit in memory. MTG rows (two views and their part-edited copies) are mixed in
``mtg_repeat`` times, with the part/object area ratio as the per-slot severity margin.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from nearid.training.augment import augment, mask_background
from nearid.training.config import DataConfig
from storage import data_files, load_manifest
from storage.codecs import decode_mask, decode_rgb
from storage.schemas import MAX_VIEWS


logger = logging.getLogger(__name__)

SLOTS = 2 * MAX_VIEWS


class SplitLeakError(ValueError):
    """A held-out (val/test) identity would enter training."""


def _arrow_table(root: str, table: str, columns: list[str], cache_dir: str | None) -> Any:
    import datasets

    files = data_files(root, table)
    if not files:
        raise ValueError(f"{root} has no table {table!r}")
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=cache_dir)
    ds = ds.select_columns(columns)
    for column in columns:
        if isinstance(ds.features[column], datasets.Image):
            ds = ds.cast_column(column, datasets.Image(decode=False))
    return ds


def check_splits(splits: dict[int, str], used: list[int]) -> None:
    """Refuse to start when any identity about to be trained on is not a training identity."""
    leaked = [i for i in used if splits.get(i) != "train"]
    if leaked:
        shown = ", ".join(f"{i} ({splits.get(i)})" for i in leaked[:5])
        raise SplitLeakError(f"{len(leaked)} held-out identities would be used for training: {shown}")


class TupleDataset(Dataset):
    """NearID tuples from a dataset root, plus MTG rows."""

    def __init__(self, config: DataConfig, processor: Any, seed: int = 0) -> None:
        self.config = config
        self.processor = processor
        self.seed = seed
        self.epoch = 0
        view_columns = [f"{p}{k}" for p in ("images", "masks") for k in range(1, MAX_VIEWS + 1)]
        self.identities = _arrow_table(config.root, "identities", ["id", "split", *view_columns], config.cache_dir)
        ids, splits = self.identities["id"], self.identities["split"]
        self.split_of = dict(zip(ids, splits, strict=True))
        self.rows = [row for row, split in enumerate(splits) if split in config.splits]
        check_splits(self.split_of, [ids[row] for row in self.rows])
        tables = load_manifest(config.root).tables()
        self.sources = []
        for source in config.sources:
            table = f"distractors/{source}"
            if table not in tables:
                raise ValueError(f"training source {source!r}: {config.root} has no table {table}")
            columns = ["id", *(f"nimg{k}" for k in range(1, MAX_VIEWS + 1))]
            ds = _arrow_table(config.root, table, columns, config.cache_dir)
            # which slots each row has, from the null bitmaps: no image bytes are read
            nulls = [ds.data.column(f"nimg{k}").is_null() for k in range(1, MAX_VIEWS + 1)]
            present = ~np.stack([n.to_numpy(zero_copy_only=False) for n in nulls], axis=1)
            self.sources.append((ds, {identity: row for row, identity in enumerate(ds["id"])}, present))
        self.mtg = None
        if config.mtg is not None:
            from storage.mtg import open_mtg

            self.mtg = open_mtg(config.mtg, config.mtg_split)
        logger.info(
            "training tuples: %d identities, sources %s, %d MTG rows x %d",
            len(self.rows),
            list(config.sources),
            len(self.mtg) if self.mtg is not None else 0,
            config.mtg_repeat,
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows) + (len(self.mtg) * self.config.mtg_repeat if self.mtg is not None else 0)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if index < len(self.rows):
            return self._identity_tuple(index)
        return self._mtg_tuple(index)

    # -- NearID identities ----------------------------------------------------------------------

    def _identity_tuple(self, index: int) -> dict[str, torch.Tensor]:
        rng = self._rng(index)
        row = self.identities[self.rows[index]]
        views = [k for k in range(1, MAX_VIEWS + 1) if row[f"images{k}"] is not None]
        order = [int(v) for v in rng.permutation(views)]  # order[0] is this epoch's anchor
        images: list[Image.Image | None] = [None] * SLOTS
        masks: list[np.ndarray | None] = [None] * MAX_VIEWS
        for slot, view in enumerate(order):
            images[slot] = decode_rgb(row[f"images{view}"]["bytes"])
            masks[slot] = decode_mask(row[f"masks{view}"]["bytes"])
            candidates = [
                (ds, by_id[row["id"]])
                for ds, by_id, present in self.sources
                if row["id"] in by_id and present[by_id[row["id"]], view - 1]
            ]
            if candidates:
                ds, position = candidates[int(rng.integers(len(candidates)))]
                cell = ds.data.column(f"nimg{view}")[position].as_py()
                images[MAX_VIEWS + slot] = decode_rgb(cell["bytes"])
        return self._finish(images, masks, rng, margins=np.zeros(MAX_VIEWS, dtype=np.float32), kind=0)

    # -- MTG ------------------------------------------------------------------------------------

    def _mtg_tuple(self, index: int) -> dict[str, torch.Tensor]:
        rng = self._rng(index)
        sample = self.mtg[(index - len(self.rows)) % len(self.mtg)]
        order = [int(v) for v in rng.permutation(2)]
        images: list[Image.Image | None] = [None] * SLOTS
        masks: list[np.ndarray | None] = [None] * MAX_VIEWS
        margins = np.zeros(MAX_VIEWS, dtype=np.float32)
        for slot, view in enumerate(order):
            images[slot] = sample.original[view]
            images[MAX_VIEWS + slot] = sample.inpainted[view]
            masks[slot] = sample.object_mask[view]
            obj, part = sample.object_mask[view], sample.part_mask[view]
            if obj is not None and part is not None and obj.any():
                margins[slot] = min(1.0, part.sum() / obj.sum())  # edit severity
        return self._finish(images, masks, rng, margins=margins, kind=1)

    # -- shared: masking, augmentation, processing ----------------------------------------------

    def _finish(
        self,
        images: list[Image.Image | None],
        masks: list[np.ndarray | None],
        rng: np.random.Generator,
        margins: np.ndarray,
        kind: int,
    ) -> dict[str, torch.Tensor]:
        config = self.config
        role_prob = [config.anchor_mask_prob] + [config.positive_mask_prob] * (MAX_VIEWS - 1)
        role_prob += [config.distractor_mask_prob] * MAX_VIEWS
        ready: list[Image.Image] = []
        valid = []
        for slot, image in enumerate(images):
            if image is None:
                valid.append(False)
                continue
            mask = masks[slot % MAX_VIEWS]
            if mask is not None and rng.random() < role_prob[slot]:
                image = mask_background(image, mask)
            ready.append(augment(image, rng, config.flip_prob, config.jitter_prob, config.affine_prob))
            valid.append(True)
        pixels = self.processor(images=ready, return_tensors="pt")["pixel_values"]
        out = torch.zeros((SLOTS, *pixels.shape[1:]), dtype=pixels.dtype)
        out[torch.tensor(valid)] = pixels
        flags = torch.tensor(valid)
        return {
            "pixel_values": out,
            "positive_mask": flags[1:MAX_VIEWS],
            "anchor_valid": flags[0],
            "distractor_mask": flags[MAX_VIEWS:],
            "margins": torch.from_numpy(margins),
            "kind": torch.tensor(kind),
        }
