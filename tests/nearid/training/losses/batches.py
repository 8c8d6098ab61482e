"""Small loss batches with mixed masks, and helpers to call a loss on them."""

from __future__ import annotations

import torch

from nearid.training.losses import LossInputs, get_loss


ORACLE_LOSSES = {"infonce_oracle", "infonce_distractors_oracle"}
DTYPE = torch.float64
TENSORS = ("anchor", "positives", "positive_mask", "distractors", "distractor_mask")
EMBEDDINGS = ("anchor", "positives", "distractors")


def make_batch(seed: int = 0, b: int = 4, p: int = 2, k: int = 3, d: int = 6) -> dict[str, torch.Tensor]:
    """A small batch with mixed masks: a full row, partial rows, one anchor without distractors."""
    gen = torch.Generator().manual_seed(seed)
    positive_mask = torch.ones(b, p, dtype=torch.bool)
    distractor_mask = torch.rand(b, k, generator=gen) > 0.3
    positive_mask[1, 0] = False
    distractor_mask[0] = True
    distractor_mask[2] = False
    margins = torch.rand(b, k, generator=gen, dtype=DTYPE)
    margins[0, 1] = margins[0, 2]  # a tie: not an oracle pair
    return {
        "anchor": torch.randn(b, d, generator=gen, dtype=DTYPE),
        "positives": torch.randn(b, p, d, generator=gen, dtype=DTYPE),
        "positive_mask": positive_mask,
        "distractors": torch.randn(b, k, d, generator=gen, dtype=DTYPE),
        "distractor_mask": distractor_mask,
        "margins": margins,
    }


def inputs(batch: dict[str, torch.Tensor], name: str = "nearid") -> LossInputs:
    """The batch as loss inputs; the margins only for the losses that read them."""
    extra = {"margins": batch["margins"]} if name in ORACLE_LOSSES else {}
    return LossInputs(*(batch[key] for key in TENSORS), **extra)


def call(name: str, batch: dict[str, torch.Tensor], **params: float | bool) -> torch.Tensor:
    return get_loss(name, **params)(inputs(batch, name))


def with_grad(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.clone().requires_grad_(k in EMBEDDINGS) for k, v in batch.items()}


def pad(batch: dict[str, torch.Tensor], garbage: str) -> dict[str, torch.Tensor]:
    """Insert padded positive/distractor slots (before, between and after the real ones) and a padded anchor row.

    Padded entries hold ``garbage``: huge values, NaN, or a copy of real data (a plausible-looking embedding).
    """
    b, p, d = batch["positives"].shape
    k = batch["distractors"].shape[1]

    def fill(*shape: int) -> torch.Tensor:
        if garbage == "nan":
            return torch.full(shape, float("nan"), dtype=DTYPE)
        if garbage == "huge":
            return torch.full(shape, 1e30, dtype=DTYPE)
        return batch["anchor"][0].expand(*shape).clone()

    def spread(x: torch.Tensor, mask: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        # real slot j goes to 2j + 1; slots 0, 2, 4, ... and two at the end are padding
        width = 2 * n + 2
        out = fill(b, width, d)
        out_mask = torch.zeros(b, width, dtype=torch.bool)
        where = [2 * j + 1 for j in range(n)]
        out[:, where], out_mask[:, where] = x, mask
        return out, out_mask, where

    positives, positive_mask, pos_slots = spread(batch["positives"], batch["positive_mask"], p)
    distractors, distractor_mask, dist_slots = spread(batch["distractors"], batch["distractor_mask"], k)
    margins = torch.full((b, distractors.shape[1]), float("nan"), dtype=DTYPE)
    margins[:, dist_slots] = batch["margins"]
    padded = {
        "anchor": batch["anchor"],
        "positives": positives,
        "positive_mask": positive_mask,
        "distractors": distractors,
        "distractor_mask": distractor_mask,
        "margins": margins,
    }
    # Padded anchor row (no valid positive) in the middle; its distractor slots claim to be valid.
    row = 1
    for key, value in padded.items():
        extra = value[:1].clone()
        if key == "positive_mask":
            extra[:] = False
        elif key == "distractor_mask":
            extra[:] = True
        elif key == "margins":
            extra[:] = torch.arange(extra.shape[1], dtype=DTYPE)
        else:
            extra = fill(*extra.shape)
        padded[key] = torch.cat([value[:row], extra, value[row:]])
    padded["_pos_slots"] = torch.tensor(pos_slots)
    padded["_dist_slots"] = torch.tensor(dist_slots)
    padded["_rows"] = torch.tensor([i if i < row else i + 1 for i in range(b)])
    return padded
