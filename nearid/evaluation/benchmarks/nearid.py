"""The NearID benchmark: SSR and PA per distractor source and condition (paper §3.4, appendix E.4 and E.7).

For every identity of the chosen split and every distractor source holding a row for it (joined by id), the
directed trial ``i -> j`` compares ``s(view i, view j)`` with ``s(view i, distractor i)``, where distractor ``i``
sits in the background of view ``i`` (``nearid.evaluation.metrics.discrimination``). Under the foreground-only
condition the cleaned mask of view ``i`` blacks out the background of view ``i`` and of distractor ``i``.

The dataset is read twice at most: once to hash every stored image (what the cache is keyed by) and keep the
small masks, and once more, row group by row group, only for the images a scorer has not seen yet.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from nearid.common.progress import progress_bar
from nearid.evaluation.images import (
    CONDITIONS,
    ImageId,
    PairId,
    apply_foreground,
    bytes_digest,
    check_conditions,
    foreground_key,
)
from nearid.evaluation.metrics import SOURCE_GROUPS, SOURCES, Discrimination, discrimination, pool
from nearid.evaluation.projection import DEFAULT_GAMMA, kernel_pca
from storage.codecs import DecodeError, decode_mask, decode_rgb
from storage.fs import join, resolve
from storage.manifest import load_manifest
from storage.schemas import distractor_configs


logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test", "all")
VIEWS = 3
IMAGE_COLUMNS = tuple(f"images{k}" for k in range(1, VIEWS + 1))
MASK_COLUMNS = tuple(f"masks{k}" for k in range(1, VIEWS + 1))
DISTRACTOR_COLUMNS = tuple(f"nimg{k}" for k in range(1, VIEWS + 1))
NOT_SOURCES = ("null",)
"""Distractor tables left out by default: ``null`` returns its input and measures the data path only."""
LOSS_POSITIVE, LOSS_DISTRACTOR = -1.0, 2.0
"""Stand-ins for unusable judge answers (judge similarities lie in [0, 1]): any trial using one is lost."""

Similarity = Callable[[ImageId, ImageId], float]


@dataclass(frozen=True)
class _Place:
    """Where one stored image is: table, shard number, row group, identity id and column."""

    table: str
    shard: int
    row_group: int
    id: int
    column: str


@dataclass
class _Identity:
    id: int
    images: list[str | None]
    masks: list[bytes | None]
    mask_hashes: list[str | None]


VIEW_PAIRS = tuple((i, j) for i in range(VIEWS) for j in range(i + 1, VIEWS))
"""The view pairs of one identity, in the order ``similarities["views"]`` lists them."""


def _rounded(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 5)


def _stored(cell: dict[str, Any] | None) -> bytes | None:
    """The bytes of an image struct cell, None for an empty slot."""
    return None if cell is None else cell.get("bytes")


def order_sources(names: Sequence[str]) -> list[str]:
    """The paper's nine sources in Table 5 order, then any other source alphabetically."""
    known = [s for s in SOURCES if s in names]
    return known + sorted(set(names) - set(SOURCES))


class NearIDBenchmark:
    """Hashes, loads and scores the identities of one split against their distractors."""

    name = "nearid"

    def __init__(
        self,
        root: str,
        split: str = "test",
        sources: Sequence[str] | None = None,
        conditions: Sequence[str] = CONDITIONS,
        progress: bool = True,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose from {list(SPLITS)}")
        self.root = root
        self.split = split
        self.conditions = check_conditions(conditions)
        self.progress = progress
        self._fs, self._base = resolve(root)
        tables = load_manifest(root).tables()
        if "identities" not in tables:
            raise ValueError(f"{root} has no identities table")
        available = distractor_configs(tables)
        if sources is None:
            chosen = [s for s in available if s not in NOT_SOURCES]
        else:
            chosen = list(dict.fromkeys(sources))
            unknown = [s for s in chosen if s not in available]
            if unknown:
                raise ValueError(f"{root} has no distractors for source(s) {unknown}; available: {available}")
        if not chosen:
            raise ValueError(f"{root} has no distractor source to evaluate (available: {available})")
        self.sources = order_sources(chosen)
        self._shards = {table: tables[table] for table in ["identities", *(f"distractors/{s}" for s in self.sources)]}
        self._where: dict[ImageId, tuple[_Place, bytes | None]] = {}
        self.identities = self._scan_identities()
        if not self.identities:
            raise ValueError(f"{root} has no identities in split {split!r}")
        self.rows = {source: self._scan_source(source) for source in self.sources}
        self._row_cache: OrderedDict[tuple[str, int, int], dict[int, dict[str, Any]]] = OrderedDict()
        self._decoded: tuple[_Place, Image.Image] | None = None  # the last decoded image, reused across conditions

    # -- scanning ---------------------------------------------------------------------------------

    def _row_groups(self, table: str, columns: Sequence[str]) -> Iterator[tuple[int, int, list[dict[str, Any]]]]:
        for shard, entry in enumerate(self._shards[table]):
            with self._fs.open(join(self._base, entry.path), "rb") as handle:
                parquet = pq.ParquetFile(handle)
                for group in range(parquet.num_row_groups):
                    yield shard, group, parquet.read_row_group(group, columns=list(columns)).to_pylist()

    def _remember(self, image: ImageId, place: _Place, mask: bytes | None) -> None:
        self._where.setdefault(image, (place, mask))

    def _scan_identities(self) -> dict[int, _Identity]:
        identities: dict[int, _Identity] = {}
        columns = ["id", "split", *IMAGE_COLUMNS, *MASK_COLUMNS]
        groups = self._row_groups("identities", columns)
        for shard, group, rows in progress_bar(groups, desc="hash identities", enabled=self.progress, leave=False):
            for row in rows:
                if self.split != "all" and row["split"] != self.split:
                    continue
                images = [bytes_digest(data) if (data := _stored(row[c])) else None for c in IMAGE_COLUMNS]
                masks = [_stored(row[c]) for c in MASK_COLUMNS]
                identity = _Identity(row["id"], images, masks, [bytes_digest(m) if m else None for m in masks])
                identities[identity.id] = identity
                for slot, column in enumerate(IMAGE_COLUMNS):
                    place = _Place("identities", shard, group, identity.id, column)
                    for condition in self.conditions:
                        key = self.view_key(identity, slot, condition)
                        if key is not None:
                            self._remember((condition, key), place, masks[slot])
        return identities

    def _scan_source(self, source: str) -> dict[int, list[str | None]]:
        table = f"distractors/{source}"
        rows_by_id: dict[int, list[str | None]] = {}
        groups = self._row_groups(table, ["id", *DISTRACTOR_COLUMNS])
        for shard, group, rows in progress_bar(groups, desc=f"hash {source}", enabled=self.progress, leave=False):
            for row in rows:
                identity = self.identities.get(row["id"])
                if identity is None:
                    continue
                images = [bytes_digest(data) if (data := _stored(row[c])) else None for c in DISTRACTOR_COLUMNS]
                rows_by_id[identity.id] = images
                for slot, column in enumerate(DISTRACTOR_COLUMNS):
                    place = _Place(table, shard, group, identity.id, column)
                    for condition in self.conditions:
                        key = self.distractor_key(identity, images, slot, condition)
                        if key is not None:
                            self._remember((condition, key), place, identity.masks[slot])
        return rows_by_id

    # -- keys and uses ----------------------------------------------------------------------------

    @staticmethod
    def view_key(identity: _Identity, slot: int, condition: str) -> str | None:
        """The input hash of view ``slot`` under ``condition``; None when absent (or maskless for 'foreground')."""
        digest = identity.images[slot]
        if digest is None or condition == "full":
            return digest
        mask = identity.mask_hashes[slot]
        return None if mask is None else foreground_key(digest, mask)

    @staticmethod
    def distractor_key(identity: _Identity, images: list[str | None], slot: int, condition: str) -> str | None:
        """The input hash of distractor ``slot``; under 'foreground' it carries the mask of view ``slot``."""
        digest = images[slot]
        if digest is None or condition == "full":
            return digest
        mask = identity.mask_hashes[slot]
        return None if mask is None else foreground_key(digest, mask)

    def _keys(self, source: str, identity_id: int, condition: str) -> tuple[list[str | None], list[str | None]]:
        identity = self.identities[identity_id]
        images = self.rows[source][identity_id]
        views = [self.view_key(identity, slot, condition) for slot in range(VIEWS)]
        distractors = [
            self.distractor_key(identity, images, slot, condition) if views[slot] is not None else None
            for slot in range(VIEWS)
        ]
        return views, distractors

    def image_uses(self) -> list[ImageId]:
        """Every image a per-source evaluation embeds: the views and distractors of each row of each source."""
        uses: list[ImageId] = []
        for source in self.sources:
            for condition in self.conditions:
                for identity_id in self.rows[source]:
                    views, distractors = self._keys(source, identity_id, condition)
                    uses += [(condition, key) for key in views + distractors if key is not None]
        return uses

    def pair_uses(self) -> list[PairId]:
        """Every pair a per-source evaluation judges: view pairs (i < j) and each view with its own distractor."""
        uses: list[PairId] = []
        for source in self.sources:
            for condition in self.conditions:
                for identity_id in self.rows[source]:
                    views, distractors = self._keys(source, identity_id, condition)
                    for i in range(VIEWS):
                        for j in range(i + 1, VIEWS):
                            if views[i] is not None and views[j] is not None:
                                uses.append((condition, views[i], views[j]))
                        if views[i] is not None and distractors[i] is not None:
                            uses.append((condition, views[i], distractors[i]))
        return uses

    # -- loading ----------------------------------------------------------------------------------

    def _order(self, image: ImageId) -> tuple[int, int, int, int, str, str]:
        """Storage order: table, shard, row group, then identity and column, so that the conditions of one stored
        image come one after the other and it is decoded once."""
        place = self._where[image][0]
        return list(self._shards).index(place.table), place.shard, place.row_group, place.id, place.column, image[0]

    def _row(self, place: _Place) -> dict[str, Any]:
        key = (place.table, place.shard, place.row_group)
        if key not in self._row_cache:
            entry = self._shards[place.table][place.shard]
            columns = ["id", *(IMAGE_COLUMNS if place.table == "identities" else DISTRACTOR_COLUMNS)]
            with self._fs.open(join(self._base, entry.path), "rb") as handle:
                rows = pq.ParquetFile(handle).read_row_group(place.row_group, columns=columns).to_pylist()
            self._row_cache[key] = {row["id"]: row for row in rows}
            while len(self._row_cache) > 4:
                self._row_cache.popitem(last=False)
        self._row_cache.move_to_end(key)
        return self._row_cache[key][place.id]

    def load(self, image: ImageId) -> Image.Image:
        """Decode one scorer input (masked for the foreground condition)."""
        place, mask = self._where[image]
        try:
            if self._decoded is None or self._decoded[0] != place:
                self._decoded = (place, decode_rgb(self._row(place)[place.column]["bytes"]))
            picture = self._decoded[1]
            if image[0] == "foreground":
                picture = apply_foreground(picture, decode_mask(mask))
        except DecodeError as exc:
            shard = self._shards[place.table][place.shard].path
            raise DecodeError(f"{place.table} {shard} id={place.id} {place.column}: {exc}") from exc
        return picture

    def fetch_images(self, wanted: set[ImageId]) -> Iterator[tuple[ImageId, Image.Image]]:
        """The wanted inputs, read in storage order."""
        for image in sorted(wanted, key=self._order):
            yield image, self.load(image)

    def fetch_pairs(self, wanted: set[PairId]) -> Iterator[tuple[PairId, Image.Image, Image.Image]]:
        """The wanted pairs' inputs, ordered by where their second image is stored."""
        for pair in sorted(wanted, key=lambda p: (self._order((p[0], p[2])), self._order((p[0], p[1])))):
            yield pair, self.load((pair[0], pair[1])), self.load((pair[0], pair[2]))

    # -- metrics ----------------------------------------------------------------------------------

    def _source_metrics(self, source: str, condition: str, similarity: Similarity) -> dict[str, Any]:
        ids = sorted(self.rows[source])
        n = len(ids)
        pos = np.full((n, VIEWS, VIEWS), np.nan)
        own = np.full((n, VIEWS), np.nan)
        view_valid = np.zeros((n, VIEWS), dtype=bool)
        distractor_valid = np.zeros((n, VIEWS), dtype=bool)
        for r, identity_id in enumerate(ids):
            views, distractors = self._keys(source, identity_id, condition)
            for i in range(VIEWS):
                view_valid[r, i] = views[i] is not None
                distractor_valid[r, i] = distractors[i] is not None
                for j in range(i + 1, VIEWS):
                    if views[i] is not None and views[j] is not None:
                        pos[r, i, j] = pos[r, j, i] = similarity((condition, views[i]), (condition, views[j]))
                if distractors[i] is not None:
                    own[r, i] = similarity((condition, views[i]), (condition, distractors[i]))
        trial = (
            view_valid[:, :, None] & view_valid[:, None, :] & distractor_valid[:, :, None] & ~np.eye(VIEWS, dtype=bool)
        )
        failed = trial & (np.isnan(pos) | np.isnan(own)[:, :, None])
        similarities = {  # per identity, for galleries: s(view i, view j) for i < j, s(view i, distractor i)
            "ids": [int(i) for i in ids],
            "views": [[_rounded(pos[r, i, j]) for i, j in VIEW_PAIRS] for r in range(n)],
            "distractors": [[_rounded(v) for v in own[r]] for r in range(n)],
        }
        pos = np.where(np.isnan(pos), LOSS_POSITIVE, pos)
        own = np.where(np.isnan(own), LOSS_DISTRACTOR, own)
        result = discrimination(pos, own, view_valid, distractor_valid)
        return {
            **result.to_dict(),
            "rows": n,
            "missing_rows": len(self.identities) - n,
            "failed_trials": int(failed.sum()),
            "similarities": similarities,
        }

    def metrics(self, similarity: Similarity) -> dict[str, Any]:
        """Per condition: per-source SSR/PA with supports, and pooled groups (paper groups whose sources are all
        present, plus ``evaluated``, every evaluated source)."""
        out: dict[str, Any] = {}
        for condition in self.conditions:
            per_source = {source: self._source_metrics(source, condition, similarity) for source in self.sources}
            counts = {
                source: Discrimination(
                    values["n_samples"], values["sample_wins"], values["n_trials"], values["trial_wins"]
                )
                for source, values in per_source.items()
            }
            groups = {
                name: pool(counts, members).to_dict()
                for name, members in SOURCE_GROUPS.items()
                if set(members) <= set(counts)
            }
            groups["evaluated"] = pool(counts, self.sources).to_dict()
            out[condition] = {"sources": per_source, "groups": groups}
        return out

    def projection(
        self, vector: Callable[[ImageId], np.ndarray], identities: int = 7, gamma: float = DEFAULT_GAMMA
    ) -> dict[str, Any] | None:
        """2-D kernel PCA of the views and distractors of the first ``identities`` identities (by id) with two
        views and a distractor, in the first primary source (full image when evaluated)."""
        if identities < 1:
            return None
        condition = "full" if "full" in self.conditions else self.conditions[0]
        primary = [s for s in SOURCE_GROUPS["primary"] if s in self.sources]
        source = (primary or self.sources)[0]
        chosen, points, rows = [], [], []
        for identity_id in sorted(self.rows[source]):
            views, distractors = self._keys(source, identity_id, condition)
            if sum(k is not None for k in views) < 2 or not any(k is not None for k in distractors):
                continue
            chosen.append(identity_id)
            for role, keys in (("positive", views), ("distractor", distractors)):
                for slot, key in enumerate(keys):
                    if key is not None:
                        points.append({"identity": identity_id, "role": role, "view": slot + 1})
                        rows.append(vector((condition, key)))
            if len(chosen) == identities:
                break
        if len(rows) < 3:
            return None
        coords = kernel_pca(np.stack(rows), 2, gamma)
        for point, (x, y) in zip(points, coords.tolist(), strict=True):
            point.update(x=x, y=y)
        return {
            "source": source,
            "condition": condition,
            "kernel": "rbf",
            "gamma": gamma,
            "identities": chosen,
            "points": points,
        }

    def describe(self) -> dict[str, Any]:
        """Dataset, split, identities and rows per source, for results files."""
        return {
            "root": self.root,
            "split": self.split,
            "identities": len(self.identities),
            "sources": list(self.sources),
            "rows": {source: len(rows) for source, rows in self.rows.items()},
            "conditions": list(self.conditions),
        }
