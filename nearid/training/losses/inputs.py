"""What every loss takes, defined once: a batch of tuple embeddings (:class:`LossInputs`), and the validated,
normalised form the loss terms work on (:class:`PreparedBatch`, :class:`PositivePool`).

Masking. A slot whose mask is False has no influence at all: its values (any values, even NaN) never reach the
forward pass, it receives exactly zero gradient, and it is left out of every denominator and every average.
An anchor with no valid positive is treated as a padded row: it, and its distractors, contribute nothing. A
batch with no valid (anchor, positive) pair at all raises ``ValueError``.

Precision. Embeddings need not be normalised: each loss L2-normalises them, and all similarities are cosines. The
loss is computed in at least float32, with autocast disabled, whatever the embeddings' dtype.

Distributed training (``gather=True``, the default, with torch.distributed initialised). The positive pool
G is gathered from every process with gradients (:func:`nearid.training.distributed.gather_with_grad`); anchors
and distractors stay local, and this process's targets sit at offset ``rank * B * P`` of the pool, as in
open_clip's ``local_loss``. Averages use *global* counts (masks are gathered too), and each process returns its
share of the global loss multiplied by the world size. So the mean of the returned values over processes is
exactly the loss of one process holding the concatenated batch, and DDP's gradient averaging yields exactly that
loss's gradient, even when the processes hold different numbers of valid slots. Average the returned value over
processes to log the global loss. Every process must pass the same ``B``, ``P`` and ``K`` (pad with invalid
rows). With ``gather=False`` each process treats its own batch as the whole batch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nearid.training.distributed import gather_no_grad, gather_with_grad, rank_and_world_size


@dataclass(frozen=True)
class LossInputs:
    """One process's batch of tuple embeddings, checked on construction (``ValueError`` names the bad tensor)."""

    anchor: torch.Tensor
    """``[B, D]``: one anchor view per identity."""
    positives: torch.Tensor
    """``[B, P, D]``: the identity's other views."""
    positive_mask: torch.Tensor
    """``[B, P]`` bool: which positive slots hold a view."""
    distractors: torch.Tensor
    """``[B, K, D]``: near-identity distractors of each anchor."""
    distractor_mask: torch.Tensor
    """``[B, K]`` bool: which distractor slots hold an image."""
    margins: torch.Tensor | None = None
    """``[B, K]`` edit severity of each distractor (MTG: part-to-object area ratio); only the oracle losses read
    it, no gradient flows into it, and padded slots may hold anything."""

    def __post_init__(self) -> None:
        if not isinstance(self.anchor, torch.Tensor) or self.anchor.dim() != 2:
            got = tuple(self.anchor.shape) if isinstance(self.anchor, torch.Tensor) else type(self.anchor).__name__
            raise ValueError(f"anchor must have shape [B, D], got {got}")
        b, d = self.anchor.shape
        for name, x in (("positives", self.positives), ("distractors", self.distractors)):
            if x.dim() != 3 or x.shape[0] != b or x.shape[2] != d:
                slots = "P" if name == "positives" else "K"
                raise ValueError(f"{name} must have shape [B, {slots}, D] = [{b}, {slots}, {d}], got {tuple(x.shape)}")
        if self.positives.shape[1] == 0:
            raise ValueError("positives has no slots (P = 0); every anchor needs at least one positive slot")
        for name, x in (("anchor", self.anchor), ("positives", self.positives), ("distractors", self.distractors)):
            if not x.is_floating_point():
                raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
        for name, mask, like in (
            ("positive_mask", self.positive_mask, self.positives),
            ("distractor_mask", self.distractor_mask, self.distractors),
        ):
            if mask.dtype != torch.bool:
                raise ValueError(f"{name} must be a bool tensor, got {mask.dtype}")
            if mask.shape != like.shape[:2]:
                raise ValueError(f"{name} must have shape {tuple(like.shape[:2])}, got {tuple(mask.shape)}")
        if self.margins is not None:
            margins, shape = self.margins, tuple(self.distractor_mask.shape)
            if not isinstance(margins, torch.Tensor) or margins.shape != shape:
                got = tuple(margins.shape) if isinstance(margins, torch.Tensor) else type(margins).__name__
                raise ValueError(f"margins must be a tensor of shape {shape} (per distractor), got {got}")
            if not margins.is_floating_point():
                raise ValueError(f"margins must be a floating-point tensor, got {margins.dtype}")


@dataclass(frozen=True)
class PreparedBatch:
    """One process's inputs, L2-normalised in the compute dtype, padded rows replaced by zeros."""

    anchor: torch.Tensor  # [B, D]
    positives: torch.Tensor  # [B, P, D]
    distractors: torch.Tensor  # [B, K, D]
    pos_mask: torch.Tensor  # [B, P]
    dist_mask: torch.Tensor  # [B, K]; False for every slot of an anchor without a valid positive
    anchor_valid: torch.Tensor  # [B]; the anchor has at least one valid positive
    margins: torch.Tensor | None  # [B, K], as given
    rank: int
    world_size: int
    gather: bool


@dataclass(frozen=True)
class PositivePool:
    """The positive pool G (all processes' positives when gathering) and this process's place in it."""

    emb: torch.Tensor  # [M, D], M = world_size * B * P, rank-major then anchor-major then slot
    valid: torch.Tensor  # [M]
    own: torch.Tensor  # [B, M]; True where column m is one of anchor b's own P slots
    slot_counts: torch.Tensor  # [P]; number of anchors (all processes) whose slot p is valid


LossFn = Callable[..., torch.Tensor]


def full_precision(fn: LossFn) -> LossFn:
    """Run a loss with autocast disabled, so its logits stay in at least float32 under mixed precision.

    The loss works on a few hundred embeddings, so this costs nothing next to the encoder, and it keeps the
    1 / tau-scaled logits and their log-sum-exps out of fp16 / bf16 rounding.
    """

    @functools.wraps(fn)
    def wrapper(inputs: LossInputs, **params: object) -> torch.Tensor:
        if not isinstance(inputs, LossInputs):
            raise ValueError(f"a loss takes one LossInputs, got {type(inputs).__name__}")
        with torch.autocast(inputs.anchor.device.type, enabled=False):
            return fn(inputs, **params)

    return wrapper


def check_hyper(name: str, value: float, *, positive: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is finite and > 0 (``positive``) or >= 0."""
    value = float(value)
    if not (value > 0 if positive else value >= 0) or value == float("inf"):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be finite and {bound}, got {value}")


def _masked_normalize(x: torch.Tensor, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """L2-normalise the valid rows of ``x`` and zero the others.

    The padded rows are replaced *before* normalising, so their values never enter the computation and they get
    exactly zero gradient, even when they hold NaN or inf.
    """
    x = torch.where(mask.unsqueeze(-1), x.to(dtype), 0.0)
    return F.normalize(x, dim=-1)


def prepare(inputs: LossInputs, gather: bool) -> PreparedBatch:
    """The inputs normalised and masked, with this process's place in the world."""
    # At least float32 for the logits, whatever the embedding dtype (fp16/bf16 training); float64 stays float64.
    # (The public losses also disable autocast, which would otherwise run the matmuls below in half precision.)
    dtype = torch.promote_types(
        torch.promote_types(inputs.anchor.dtype, inputs.positives.dtype), inputs.distractors.dtype
    )
    dtype = torch.promote_types(dtype, torch.float32)
    anchor_valid = inputs.positive_mask.any(dim=1)
    dist_mask = inputs.distractor_mask & anchor_valid.unsqueeze(1)
    rank, world_size = rank_and_world_size() if gather else (0, 1)
    return PreparedBatch(
        anchor=_masked_normalize(inputs.anchor, anchor_valid, dtype),
        positives=_masked_normalize(inputs.positives, inputs.positive_mask, dtype),
        distractors=_masked_normalize(inputs.distractors, dist_mask, dtype),
        pos_mask=inputs.positive_mask,
        dist_mask=dist_mask,
        anchor_valid=anchor_valid,
        margins=inputs.margins,
        rank=rank,
        world_size=world_size,
        gather=gather and world_size > 1,
    )


def global_sum(x: torch.Tensor, t: PreparedBatch) -> torch.Tensor:
    """Sum a local count tensor over all processes (no autograd); ``x`` itself when not gathering."""
    if not t.gather:
        return x
    return gather_no_grad(x.unsqueeze(0)).sum(dim=0)


def require_valid_pairs(n_valid: torch.Tensor) -> None:
    """Raise when there is no valid (anchor, positive) pair on any process (all processes raise together)."""
    if int(n_valid) == 0:
        raise ValueError("no valid (anchor, positive) pair in the batch: every positive slot is masked out")


def positive_pool(t: PreparedBatch) -> PositivePool:
    """Build G from every process's valid positives and locate each local anchor's own slots in it."""
    b, p, d = t.positives.shape
    flat = t.positives.reshape(b * p, d)
    emb = gather_with_grad(flat) if t.gather else flat
    mask = gather_no_grad(t.pos_mask) if t.gather else t.pos_mask  # [world_size * B, P]
    slot_counts = mask.sum(dim=0)
    require_valid_pairs(slot_counts.sum())
    cols = torch.arange(emb.shape[0], device=emb.device)
    first_own = (t.rank * b + torch.arange(b, device=emb.device)) * p  # [B]
    own = (cols >= first_own[:, None]) & (cols < first_own[:, None] + p)
    return PositivePool(emb=emb, valid=mask.reshape(-1), own=own, slot_counts=slot_counts)


def masked_logsumexp(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Log-sum-exp over the last dim, of the entries where ``mask`` is True.

    Masked entries get zero gradient. A row with no valid entry gives a huge negative finite number (not -inf,
    which would turn the backward pass into NaN); callers drop such rows explicitly.
    """
    return x.masked_fill(~mask, torch.finfo(x.dtype).min).logsumexp(dim=-1)
