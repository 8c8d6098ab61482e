"""One SynCD item's views, checked: readable opaque RGB image, a mask of the same size that is neither empty nor
full after cleaning, sizes read from the headers before anything is decoded, and the optional score filters.
Every refusal is a :class:`ViewError` with a stable reject code."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nearid.common.masks import clean_mask
from nearid.common.splits import SPLIT_SALT
from storage.checks import RowProblem, opaque_rgb, open_view
from storage.syncd import MAX_SOURCE_VIEWS, SyncdItem, UnsafePathError, view_paths


@dataclass(frozen=True)
class SyncdCurationConfig:
    """Thresholds and split sizes of a SynCD curation run."""

    min_views: int = 2
    min_mask_fraction: float = 0.001
    max_mask_fraction: float = 0.95
    min_aesthetics: float | None = None
    min_dino: float | None = None
    max_dino: float = 0.98
    n_val: int | None = None
    n_test: int | None = None
    split_salt: str = SPLIT_SALT
    shard_size: int = 256

    def __post_init__(self) -> None:
        if not 2 <= self.min_views <= MAX_SOURCE_VIEWS:
            raise ValueError(f"min_views must be 2 or 3, got {self.min_views}")
        if not 0.0 <= self.min_mask_fraction < self.max_mask_fraction <= 1.0:
            raise ValueError("need 0 <= min_mask_fraction < max_mask_fraction <= 1")
        for name in ("min_aesthetics", "min_dino", "max_dino"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        if self.min_dino is not None and not self.min_dino <= self.max_dino:
            raise ValueError("min_dino must be <= max_dino")
        if self.shard_size < 1:
            raise ValueError("shard_size must be >= 1")

    @property
    def uses_scores(self) -> bool:
        return self.min_aesthetics is not None or self.min_dino is not None


class ViewError(ValueError):
    """A view cannot be used; ``reason`` is the stable reject code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def load_view(input_dir: str, filename: str, config: SyncdCurationConfig) -> tuple[np.ndarray, np.ndarray]:
    """The RGB pixels and cleaned boolean mask of one view, or a :class:`ViewError` saying why not."""
    image_path, mask_path = view_paths(input_dir, filename)
    if not image_path.is_file():
        raise ViewError("image-missing", f"{image_path.name} does not exist")
    if not mask_path.is_file():
        raise ViewError("mask-missing", f"masks/{mask_path.name} does not exist")
    try:  # headers first: sizes are checked before a pixel is decoded
        image, raw_mask = open_view(image_path.read_bytes(), mask_path.read_bytes())
        rgb = opaque_rgb(image)
    except RowProblem as exc:
        raise ViewError(exc.code, f"{image_path.name}: {exc.detail}") from exc
    try:
        raw_mask.load()
    except Exception as exc:
        raise ViewError("mask-undecodable", f"masks/{mask_path.name}: {exc}") from exc
    mask = clean_mask(np.asarray(raw_mask.convert("L")))
    fraction = float(mask.mean())
    if fraction < config.min_mask_fraction:
        raise ViewError("mask-empty", f"cleaned mask covers {fraction:.4%} of the view")
    if fraction > config.max_mask_fraction:
        raise ViewError("mask-full", f"cleaned mask covers {fraction:.2%} of the view")
    return rgb, mask


@dataclass
class ItemCheck:
    """Pass-1 verdict on one item: usable view indices (0-based) and view-level rejects."""

    item: SyncdItem
    usable: list[int] = field(default_factory=list)
    view_rejects: list[tuple[int, str, str]] = field(default_factory=list)
    unsafe: str | None = None


def check_item(input_dir: str, config: SyncdCurationConfig, item: SyncdItem) -> ItemCheck:
    """Load and check every view of one item (runs in worker processes)."""
    check = ItemCheck(item)
    for view, filename in enumerate(item.filenames):
        if view >= MAX_SOURCE_VIEWS:
            check.view_rejects.append((view, "extra-view", f"only the first {MAX_SOURCE_VIEWS} views are used"))
            continue
        try:
            load_view(input_dir, filename, config)
            check.usable.append(view)
        except UnsafePathError as exc:
            check.unsafe = str(exc)
            return check
        except ViewError as exc:
            check.view_rejects.append((view, exc.reason, exc.detail))
    return check


def apply_quality(check: ItemCheck, config: SyncdCurationConfig) -> None:
    """Drop views that fail the optional score filters (in place)."""
    item = check.item
    if config.min_aesthetics is not None:
        kept = []
        for view in check.usable:
            score = item.aesthetics_scores.get(Path(item.filenames[view]).stem)
            if score is not None and not math.isfinite(score):
                check.view_rejects.append((view, "bad-number", f"aesthetics score is {score}"))
            elif score is None or score < config.min_aesthetics:
                detail = (
                    "no aesthetics score" if score is None else f"aesthetics {score:.2f} < {config.min_aesthetics}"
                )
                check.view_rejects.append((view, "low-aesthetics", detail))
            else:
                kept.append(view)
        check.usable = kept
    if config.min_dino is not None:
        scores = item.dino_scores or ()

        def pair_ok(i: int, j: int) -> bool:
            a, b = min(i, j), max(i, j)
            value = scores[a][b] if a < len(scores) and b < len(scores[a]) else None
            return value is not None and config.min_dino <= value <= config.max_dino

        kept = [v for v in check.usable if any(pair_ok(v, w) for w in check.usable if w != v)]
        for view in check.usable:
            if view not in kept:
                check.view_rejects.append((view, "low-dino", "in no view pair within the DINO score range"))
        check.usable = kept
