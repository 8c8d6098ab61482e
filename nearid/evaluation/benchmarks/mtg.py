"""The Mind-the-Glitch benchmark: SSR/PA on part-edited pairs, the part-level oracle and M-O (paper §3.4, E.3).

Per sample, originals 1 and 2 show one object in two backgrounds and 1', 2' are the same views with one part
edited. Margins are ``s(1,2) - s(1,1')`` and ``s(1,2) - s(2,2')``; the oracle of edit k is ``1 - |part|/|object|``;
M-O is the Fisher-z mean of the Pearson correlations (s(1,1'), o1), (s(2,2'), o2), (s(1,2'), o2), (s(2,1'), o1)
across samples and M-O pair that of the two same-background ones. Under the foreground-only condition the object
mask of view k, as shipped (MTG masks are already clean), blacks out the background of k and k'.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from nearid.common.progress import progress_bar
from nearid.evaluation.images import (
    CONDITIONS,
    ImageId,
    PairId,
    apply_foreground,
    check_conditions,
    foreground_key,
    mask_digest,
    pixels_digest,
)
from nearid.evaluation.metrics import mo_pair, mo_score, mtg_discrimination, mtg_oracle
from storage.mtg import MTGSample, read_mtg


logger = logging.getLogger(__name__)

ROLES = ("o1", "o2", "e1", "e2")
"""Original 1, original 2, edited 1 (1'), edited 2 (2')."""
PAIRS = (("o1", "o2"), ("o1", "e1"), ("o2", "e2"), ("o1", "e2"), ("o2", "e1"))
"""Every pair scored per sample: s(1,2), s(1,1'), s(2,2'), s(1,2'), s(2,1')."""
LOSS_PAIR, LOSS_EDIT = -1.0, 2.0
"""Stand-ins for unusable judge answers (judge similarities lie in [0, 1]): any trial using one is lost."""

Similarity = Callable[[ImageId, ImageId], float]


@dataclass
class _Sample:
    position: int
    id: int
    pixels: dict[str, str]
    masks: tuple[str | None, str | None]
    oracle: tuple[float, float]


def _images(sample: MTGSample) -> dict[str, Image.Image]:
    return {"o1": sample.original[0], "o2": sample.original[1], "e1": sample.inpainted[0], "e2": sample.inpainted[1]}


class MTGBenchmark:
    """Hashes, loads and scores one split of an MTG dataset."""

    name = "mtg"

    def __init__(
        self, path: str, split: str | None = "test", conditions: Sequence[str] = CONDITIONS, progress: bool = True
    ) -> None:
        self.path = path
        self.split = split
        self.conditions = check_conditions(conditions)
        self.progress = progress
        self.samples: list[_Sample] = []
        for position, sample in enumerate(self._read("hash MTG")):
            pixels = {role: pixels_digest(image) for role, image in _images(sample).items()}
            masks = tuple(None if m is None else mask_digest(m) for m in sample.object_mask)
            oracle = tuple(
                mtg_oracle(obj, part) for obj, part in zip(sample.object_mask, sample.part_mask, strict=True)
            )
            self.samples.append(_Sample(position, sample.id, pixels, masks, oracle))  # type: ignore[arg-type]
        if not self.samples:
            raise ValueError(f"{path} (split {split!r}) has no MTG samples")

    def _read(self, desc: str) -> Iterator[MTGSample]:
        return progress_bar(read_mtg(self.path, self.split), desc=desc, enabled=self.progress, leave=False)

    def key(self, sample: _Sample, role: str, condition: str) -> str | None:
        """The input hash of one image; None under 'foreground' when its view has no object mask."""
        if condition == "full":
            return sample.pixels[role]
        mask = sample.masks[int(role[1]) - 1]
        return None if mask is None else foreground_key(sample.pixels[role], mask)

    def image_uses(self) -> list[ImageId]:
        """The four images of every sample under every condition."""
        return [
            (condition, key)
            for condition in self.conditions
            for sample in self.samples
            for role in ROLES
            if (key := self.key(sample, role, condition)) is not None
        ]

    def _pairs(self, sample: _Sample, condition: str) -> list[tuple[str, str, PairId]]:
        out = []
        for a, b in PAIRS:
            key_a, key_b = self.key(sample, a, condition), self.key(sample, b, condition)
            if key_a is not None and key_b is not None:
                out.append((a, b, (condition, key_a, key_b)))
        return out

    def pair_uses(self) -> list[PairId]:
        """The five scored pairs of every sample under every condition."""
        return [
            pair
            for condition in self.conditions
            for sample in self.samples
            for _, _, pair in self._pairs(sample, condition)
        ]

    def _inputs(self, sample: MTGSample, condition: str) -> dict[str, Image.Image]:
        images = _images(sample)
        if condition == "full":
            return images
        return {
            role: apply_foreground(image, sample.object_mask[int(role[1]) - 1], clean=False)
            for role, image in images.items()
            if sample.object_mask[int(role[1]) - 1] is not None
        }

    def fetch_images(self, wanted: set[ImageId]) -> Iterator[tuple[ImageId, Image.Image]]:
        """Re-read the dataset and yield each wanted input once."""
        emitted: set[ImageId] = set()
        for record, sample in zip(self.samples, self._read("load MTG"), strict=True):
            for condition in self.conditions:
                needed = [r for r in ROLES if (condition, self.key(record, r, condition)) in wanted]
                needed = [r for r in needed if (condition, self.key(record, r, condition)) not in emitted]
                if not needed:
                    continue
                inputs = self._inputs(sample, condition)
                for role in needed:
                    image_id = (condition, self.key(record, role, condition))
                    emitted.add(image_id)  # type: ignore[arg-type]
                    yield image_id, inputs[role]  # type: ignore[misc]

    def fetch_pairs(self, wanted: set[PairId]) -> Iterator[tuple[PairId, Image.Image, Image.Image]]:
        """Re-read the dataset and yield each wanted pair once."""
        emitted: set[PairId] = set()
        for record, sample in zip(self.samples, self._read("load MTG"), strict=True):
            for condition in self.conditions:
                needed = [(a, b, p) for a, b, p in self._pairs(record, condition) if p in wanted and p not in emitted]
                if not needed:
                    continue
                inputs = self._inputs(sample, condition)
                for a, b, pair in needed:
                    emitted.add(pair)
                    yield pair, inputs[a], inputs[b]

    def _condition_metrics(self, condition: str, similarity: Similarity) -> dict[str, Any]:
        n = len(self.samples)
        scores = {f"{a}_{b}": np.full(n, np.nan) for a, b in PAIRS}
        valid = {f"{a}_{b}": np.zeros(n, dtype=bool) for a, b in PAIRS}
        for i, sample in enumerate(self.samples):
            for a, b, (_, key_a, key_b) in self._pairs(sample, condition):
                scores[f"{a}_{b}"][i] = similarity((condition, key_a), (condition, key_b))
                valid[f"{a}_{b}"][i] = True
        s12, s11, s22, s12p, s21p = (scores[f"{a}_{b}"] for a, b in PAIRS)
        pair_valid = valid["o1_o2"]
        edit_valid = np.stack([valid["o1_e1"], valid["o2_e2"]], axis=1)
        trial = pair_valid[:, None] & edit_valid
        failed = trial & (np.isnan(s12)[:, None] | np.isnan(np.stack([s11, s22], axis=1)))
        result = mtg_discrimination(
            np.where(np.isnan(s12), LOSS_PAIR, s12),
            np.where(np.isnan(s11), LOSS_EDIT, s11),
            np.where(np.isnan(s22), LOSS_EDIT, s22),
            pair_valid,
            edit_valid,
        ).to_dict()
        o1 = np.array([s.oracle[0] for s in self.samples])
        o2 = np.array([s.oracle[1] for s in self.samples])
        usable = np.isfinite(np.stack([s11, s22, s12p, s21p], axis=1)).all(axis=1)
        usable_pair = np.isfinite(np.stack([s11, s22], axis=1)).all(axis=1)
        out: dict[str, Any] = {**result, "samples": n, "failed_trials": int(failed.sum())}
        for name, fn, mask in (
            ("mo", lambda m: mo_score(s11, s22, s12p, s21p, o1, o2, valid=m), usable),
            ("mo_pair", lambda m: mo_pair(s11, s22, o1, o2, valid=m), usable_pair),
        ):
            out[f"{name}_samples"] = int(mask.sum())
            try:
                out[name], out[f"{name}_error"] = fn(mask), None
            except ValueError as exc:  # constant scores or too few samples: r is undefined
                out[name], out[f"{name}_error"] = None, str(exc)
        out["per_sample"] = {
            "id": [s.id for s in self.samples],
            "s_1_2": s12.tolist(),
            "s_1_1p": s11.tolist(),
            "s_2_2p": s22.tolist(),
            "s_1_2p": s12p.tolist(),
            "s_2_1p": s21p.tolist(),
            "o1": o1.tolist(),
            "o2": o2.tolist(),
        }
        return out

    def metrics(self, similarity: Similarity) -> dict[str, Any]:
        """Per condition: SSR/PA with supports, M-O, M-O pair and the per-sample scores and oracles."""
        return {condition: self._condition_metrics(condition, similarity) for condition in self.conditions}

    def describe(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "split": self.split,
            "samples": len(self.samples),
            "conditions": list(self.conditions),
        }
