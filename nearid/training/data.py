"""Training tuples: for each identity an anchor, up to two positives and one distractor per slot.

Slot layout (6 slots): 0 anchor, 1-2 positives, 3-5 the distractors in the backgrounds of slots 0-2. Per epoch
the anchor is a random valid view; each slot's distractor comes from a training source chosen at random among
those that have it. Everything random is drawn from an RNG keyed on (seed, epoch, index), so a tuple is the same
in any worker and after a resume.

A tuple carries only its valid slots, as decoded uint8 ``H x W x 3`` images at their stored size, with each
slot's augmentation parameters; role-aware foreground masking is applied here (a mask is decoded only when its
slot is masked). The device resizes, augments and normalises whole batches (``nearid.training.pixels``,
``nearid.training.augment``), so a worker's cost per image is about one PNG decode.

Rows are read by id from ``datasets``' memory-mapped Arrow cache of the shards, so the full dataset
never has to fit in memory. MTG rows (two views and their part-edited copies) are mixed in
``mtg_repeat`` times, with the part/object area ratio as the per-slot severity margin.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from nearid.training.augment import PARAMS, draw_augment
from nearid.training.config import DataConfig
from storage import data_files, load_manifest
from storage.codecs import decode_mask, decode_rgb_array
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

    def __init__(self, config: DataConfig, seed: int = 0) -> None:
        self.config = config
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

    def _identity_tuple(self, index: int) -> dict[str, Any]:
        rng = self._rng(index)
        row = self.identities[self.rows[index]]
        views = [k for k in range(1, MAX_VIEWS + 1) if row[f"images{k}"] is not None]
        order = [int(v) for v in rng.permutation(views)]  # order[0] is this epoch's anchor
        images: list[np.ndarray | None] = [None] * SLOTS
        masks: list[bytes | np.ndarray | None] = [None] * MAX_VIEWS
        for slot, view in enumerate(order):
            images[slot] = decode_rgb_array(row[f"images{view}"]["bytes"])
            masks[slot] = (row[f"masks{view}"] or {}).get("bytes")
            candidates = [
                (ds, by_id[row["id"]])
                for ds, by_id, present in self.sources
                if row["id"] in by_id and present[by_id[row["id"]], view - 1]
            ]
            if candidates:
                ds, position = candidates[int(rng.integers(len(candidates)))]
                cell = ds.data.column(f"nimg{view}")[position].as_py()
                images[MAX_VIEWS + slot] = decode_rgb_array(cell["bytes"])
        return self._finish(images, masks, rng, margins=np.zeros(MAX_VIEWS, dtype=np.float32), kind=0)

    # -- MTG ------------------------------------------------------------------------------------

    def _mtg_tuple(self, index: int) -> dict[str, Any]:
        rng = self._rng(index)
        sample = self.mtg[(index - len(self.rows)) % len(self.mtg)]
        order = [int(v) for v in rng.permutation(2)]
        images: list[np.ndarray | None] = [None] * SLOTS
        masks: list[bytes | np.ndarray | None] = [None] * MAX_VIEWS
        margins = np.zeros(MAX_VIEWS, dtype=np.float32)
        for slot, view in enumerate(order):
            images[slot] = np.array(sample.original[view].convert("RGB"))
            images[MAX_VIEWS + slot] = np.array(sample.inpainted[view].convert("RGB"))
            masks[slot] = sample.object_mask[view]
            obj, part = sample.object_mask[view], sample.part_mask[view]
            if obj is not None and part is not None and obj.any():
                margins[slot] = min(1.0, part.sum() / obj.sum())  # edit severity
        return self._finish(images, masks, rng, margins=margins, kind=1)

    # -- shared: masking and augmentation parameters --------------------------------------------

    def _finish(
        self,
        images: list[np.ndarray | None],
        masks: list[bytes | np.ndarray | None],
        rng: np.random.Generator,
        margins: np.ndarray,
        kind: int,
    ) -> dict[str, Any]:
        config = self.config
        role_prob = [config.anchor_mask_prob] + [config.positive_mask_prob] * (MAX_VIEWS - 1)
        role_prob += [config.distractor_mask_prob] * MAX_VIEWS
        ready: list[torch.Tensor] = []
        augment = []
        for slot, image in enumerate(images):
            if image is None:
                continue
            mask = masks[slot % MAX_VIEWS]
            if mask is not None and rng.random() < role_prob[slot]:
                image = mask_background(image, decode_mask(mask) if isinstance(mask, bytes) else mask)
            augment.append(draw_augment(rng, config.flip_prob, config.jitter_prob, config.affine_prob))
            ready.append(torch.from_numpy(np.ascontiguousarray(image)))
        flags = torch.tensor([image is not None for image in images])
        return {
            "anchor_valid": flags[0],
            "positive_mask": flags[1:MAX_VIEWS],
            "distractor_mask": flags[MAX_VIEWS:],
            "margins": torch.from_numpy(margins),
            "kind": torch.tensor(kind),
            "images": ready,
            "augment": torch.from_numpy(np.stack(augment)) if augment else torch.zeros((0, PARAMS)),
        }


def mask_background(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Keep the foreground, black elsewhere; the mask is resized (nearest) to the image if needed."""
    if mask.shape != image.shape[:2]:
        import cv2

        mask = cv2.resize(mask.astype(np.uint8), (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    return np.where(mask[..., None] > 0, image, 0).astype(np.uint8)


def collate_tuples(items: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch: the per-tuple flags stacked, every valid image in one flat list (tuple-major, slot order),
    ``slot_index`` placing each image at ``tuple * 6 + slot`` and its augmentation row."""
    valid = torch.stack(
        [torch.cat([item["anchor_valid"][None], item["positive_mask"], item["distractor_mask"]]) for item in items]
    )
    batch = {
        key: torch.stack([item[key] for item in items])
        for key in ("anchor_valid", "positive_mask", "distractor_mask", "margins", "kind")
    }
    batch["images"] = [image for item in items for image in item["images"]]
    batch["slot_index"] = valid.flatten().nonzero().squeeze(1)
    batch["augment"] = torch.cat([item["augment"] for item in items])
    return batch
