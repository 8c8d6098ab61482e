"""The NearID loss (paper §3.2) and the training-objective ablations of paper Table 3.

Every loss takes the same five tensors:

* ``anchor`` ``[B, D]``: one anchor view per identity;
* ``positives`` ``[B, P, D]`` with ``positive_mask`` ``[B, P]`` (bool): the identity's other views;
* ``distractors`` ``[B, K, D]`` with ``distractor_mask`` ``[B, K]`` (bool): near-identity distractors;

plus keyword-only hyperparameters (and ``margins`` for the oracle variants). Embeddings need not be normalised:
each loss L2-normalises them, and all similarities are cosines. The loss is computed in at least float32, with
autocast disabled, whatever the embeddings' dtype.

Masking. A slot whose mask is False has no influence at all: its values (any values, even NaN) never reach the
forward pass, it receives exactly zero gradient, and it is left out of every denominator and every average.
An anchor with no valid positive is treated as a padded row: it, and its distractors, contribute nothing. A
batch with no valid (anchor, positive) pair at all raises ``ValueError``.

Distributed training (``gather=True``, the default, with torch.distributed initialised). The positive pool
G is gathered from every process with gradients (:func:`nearid.distributed.gather_with_grad`); anchors and
distractors stay local, and this process's targets sit at offset ``rank * B * P`` of the pool, as in open_clip's
``local_loss``. Averages use *global* counts (masks are gathered too), and each process returns its share of the
global loss multiplied by the world size. So the mean of the returned values over processes is exactly the loss
of one process holding the concatenated batch, and DDP's gradient averaging yields exactly that loss's
gradient, even when the processes hold different numbers of valid slots. Average the returned value over
processes to log the global loss. Every process must pass the same ``B``, ``P`` and ``K`` (pad with invalid
rows). With ``gather=False`` each process treats its own batch as the whole batch.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nearid.distributed import gather_no_grad, gather_with_grad, rank_and_world_size


LossFn = Callable[..., torch.Tensor]


# ----------------------------------------------------------------------------------------------------------
# Shared preparation: validation, masking, normalisation, the positive pool
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tuples:
    """One process's validated inputs: L2-normalised, compute dtype, padded rows replaced by zeros."""

    anchor: torch.Tensor  # [B, D]
    positives: torch.Tensor  # [B, P, D]
    distractors: torch.Tensor  # [B, K, D]
    pos_mask: torch.Tensor  # [B, P]
    dist_mask: torch.Tensor  # [B, K]; False for every slot of an anchor without a valid positive
    anchor_valid: torch.Tensor  # [B]; the anchor has at least one valid positive
    rank: int
    world_size: int
    gather: bool


@dataclass(frozen=True)
class _Pool:
    """The positive pool G (all processes' positives when gathering) and this process's place in it."""

    emb: torch.Tensor  # [M, D], M = world_size * B * P, rank-major then anchor-major then slot
    valid: torch.Tensor  # [M]
    own: torch.Tensor  # [B, M]; True where column m is one of anchor b's own P slots
    slot_counts: torch.Tensor  # [P]; number of anchors (all processes) whose slot p is valid


def _check_shapes(
    anchor: torch.Tensor,
    positives: torch.Tensor,
    positive_mask: torch.Tensor,
    distractors: torch.Tensor,
    distractor_mask: torch.Tensor,
) -> None:
    """Raise ``ValueError`` naming the first tensor whose rank, shape or dtype is wrong."""
    if anchor.dim() != 2:
        raise ValueError(f"anchor must have shape [B, D], got {tuple(anchor.shape)}")
    b, d = anchor.shape
    for name, x in (("positives", positives), ("distractors", distractors)):
        if x.dim() != 3 or x.shape[0] != b or x.shape[2] != d:
            slots = "P" if name == "positives" else "K"
            raise ValueError(f"{name} must have shape [B, {slots}, D] = [{b}, {slots}, {d}], got {tuple(x.shape)}")
    if positives.shape[1] == 0:
        raise ValueError("positives has no slots (P = 0); every anchor needs at least one positive slot")
    for name, x in (("anchor", anchor), ("positives", positives), ("distractors", distractors)):
        if not x.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {x.dtype}")
    for name, mask, like in (
        ("positive_mask", positive_mask, positives),
        ("distractor_mask", distractor_mask, distractors),
    ):
        if mask.dtype != torch.bool:
            raise ValueError(f"{name} must be a bool tensor, got {mask.dtype}")
        if mask.shape != like.shape[:2]:
            raise ValueError(f"{name} must have shape {tuple(like.shape[:2])}, got {tuple(mask.shape)}")


def _check_hyper(name: str, value: float, *, positive: bool = False) -> None:
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


def _prepare(
    anchor: torch.Tensor,
    positives: torch.Tensor,
    positive_mask: torch.Tensor,
    distractors: torch.Tensor,
    distractor_mask: torch.Tensor,
    gather: bool,
) -> _Tuples:
    """Validate the five input tensors and return them normalised and masked."""
    _check_shapes(anchor, positives, positive_mask, distractors, distractor_mask)
    # At least float32 for the logits, whatever the embedding dtype (fp16/bf16 training); float64 stays float64.
    # (The public losses also disable autocast, which would otherwise run the matmuls below in half precision.)
    dtype = torch.promote_types(torch.promote_types(anchor.dtype, positives.dtype), distractors.dtype)
    dtype = torch.promote_types(dtype, torch.float32)
    anchor_valid = positive_mask.any(dim=1)
    dist_mask = distractor_mask & anchor_valid.unsqueeze(1)
    rank, world_size = rank_and_world_size() if gather else (0, 1)
    return _Tuples(
        anchor=_masked_normalize(anchor, anchor_valid, dtype),
        positives=_masked_normalize(positives, positive_mask, dtype),
        distractors=_masked_normalize(distractors, dist_mask, dtype),
        pos_mask=positive_mask,
        dist_mask=dist_mask,
        anchor_valid=anchor_valid,
        rank=rank,
        world_size=world_size,
        gather=gather and world_size > 1,
    )


def _global_sum(x: torch.Tensor, t: _Tuples) -> torch.Tensor:
    """Sum a local count tensor over all processes (no autograd); ``x`` itself when not gathering."""
    if not t.gather:
        return x
    return gather_no_grad(x.unsqueeze(0)).sum(dim=0)


def _require_valid_pairs(n_valid: torch.Tensor) -> None:
    """Raise when there is no valid (anchor, positive) pair on any process (all processes raise together)."""
    if int(n_valid) == 0:
        raise ValueError("no valid (anchor, positive) pair in the batch: every positive slot is masked out")


def _positive_pool(t: _Tuples) -> _Pool:
    """Build G from every process's valid positives and locate each local anchor's own slots in it."""
    b, p, d = t.positives.shape
    flat = t.positives.reshape(b * p, d)
    emb = gather_with_grad(flat) if t.gather else flat
    mask = gather_no_grad(t.pos_mask) if t.gather else t.pos_mask  # [world_size * B, P]
    slot_counts = mask.sum(dim=0)
    _require_valid_pairs(slot_counts.sum())
    cols = torch.arange(emb.shape[0], device=emb.device)
    first_own = (t.rank * b + torch.arange(b, device=emb.device)) * p  # [B]
    own = (cols >= first_own[:, None]) & (cols < first_own[:, None] + p)
    return _Pool(emb=emb, valid=mask.reshape(-1), own=own, slot_counts=slot_counts)


def _full_precision(fn: LossFn) -> LossFn:
    """Run a loss with autocast disabled, so its logits stay in at least float32 under mixed precision.

    The loss works on a few hundred embeddings, so this costs nothing next to the encoder, and it keeps the
    1 / tau-scaled logits and their log-sum-exps out of fp16 / bf16 rounding.
    """

    @functools.wraps(fn)
    def wrapper(anchor: torch.Tensor, *args: torch.Tensor, **kwargs: object) -> torch.Tensor:
        if not isinstance(anchor, torch.Tensor):
            raise ValueError(f"anchor must be a torch.Tensor, got {type(anchor).__name__}")
        with torch.autocast(anchor.device.type, enabled=False):
            return fn(anchor, *args, **kwargs)

    return wrapper


def _masked_logsumexp(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Log-sum-exp over the last dim, of the entries where ``mask`` is True.

    Masked entries get zero gradient. A row with no valid entry gives a huge negative finite number (not -inf,
    which would turn the backward pass into NaN); callers drop such rows explicitly.
    """
    return x.masked_fill(~mask, torch.finfo(x.dtype).min).logsumexp(dim=-1)


# ----------------------------------------------------------------------------------------------------------
# Loss terms (each returns this process's share of a global average, before the world-size factor)
# ----------------------------------------------------------------------------------------------------------


def _nearid_terms(t: _Tuples, pool: _Pool, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's shares of L_disc (Eq. 1) and L_rank (Eq. 2), see :func:`nearid_loss`."""
    b = t.anchor.shape[0]
    pool_logits = t.anchor @ pool.emb.T / tau  # [B, M]
    dist_logits = torch.einsum("bd,bkd->bk", t.anchor, t.distractors) / tau  # [B, K]
    own_logits = torch.einsum("bd,bpd->bp", t.anchor, t.positives) / tau  # [B, P]

    # L_disc: one softmax over G + own distractors per positive slot; the denominator is shared by the slots.
    candidates = torch.cat([pool.valid.expand(b, -1), t.dist_mask], dim=1)
    lse_all = _masked_logsumexp(torch.cat([pool_logits, dist_logits], dim=1), candidates)  # [B]
    ce = lse_all.unsqueeze(1) - own_logits  # [B, P]
    n_slots = (pool.slot_counts > 0).sum()
    weights = t.pos_mask.to(ce.dtype) / (pool.slot_counts.clamp_min(1) * n_slots).to(ce.dtype)  # anchors, then slots
    disc = (torch.where(t.pos_mask, ce, 0.0) * weights).sum()

    # L_rank: each valid distractor against the LSE of the batch negatives G \ G_i.
    batch_neg = pool.valid & ~pool.own  # [B, M]
    lse_neg = _masked_logsumexp(pool_logits, batch_neg)  # [B]
    has_batch_neg = batch_neg.any(dim=1, keepdim=True)
    per_pair = F.softplus(torch.where(has_batch_neg, lse_neg.unsqueeze(1), 0.0) - dist_logits)  # [B, K]
    # An empty batch-negative pool is the limit LSE = -inf, where the softplus is 0.
    rank_sum = torch.where(t.dist_mask & has_batch_neg, per_pair, 0.0).sum()
    rank = rank_sum / _global_sum(t.dist_mask.sum(), t).clamp_min(1)
    return disc, rank


def _cohesion_term(t: _Tuples) -> torch.Tensor:
    """This process's share of L_coh (paper Eqs. 7-8), see :func:`nearid_cohesion_loss`."""
    prototype = F.normalize(t.positives.sum(dim=1), dim=-1)  # padded slots are zero vectors
    cos = torch.einsum("bpd,bd->bp", t.positives, prototype)
    n_pos = t.pos_mask.sum(dim=1, keepdim=True)
    counted = t.pos_mask & (n_pos >= 2)
    per_anchor = torch.where(counted, 1.0 - cos, 0.0).sum(dim=1) / n_pos.squeeze(1).clamp_min(1)
    return per_anchor.sum() / _global_sum(t.anchor_valid.sum(), t).clamp_min(1)


def _symmetric_infonce_term(t: _Tuples, tau: float, use_distractors: bool) -> torch.Tensor:
    """This process's share of the symmetric single-positive InfoNCE, see :func:`infonce_loss`."""
    b = t.anchor.shape[0]
    rows = torch.arange(b, device=t.anchor.device)
    first_valid = t.pos_mask.int().argmax(dim=1)  # first valid slot; 0 for rows without one (they are dropped)
    q = t.positives[rows, first_valid]  # [B, D]
    all_anchors = gather_with_grad(t.anchor) if t.gather else t.anchor
    all_q = gather_with_grad(q) if t.gather else q
    all_valid = gather_no_grad(t.anchor_valid) if t.gather else t.anchor_valid
    n_valid = all_valid.sum()
    _require_valid_pairs(n_valid)

    a_to_q = t.anchor @ all_q.T / tau  # [B, world_size * B]
    q_to_a = q @ all_anchors.T / tau
    candidates = all_valid.expand(b, -1)
    if use_distractors:
        a_to_q = torch.cat([a_to_q, torch.einsum("bd,bkd->bk", t.anchor, t.distractors) / tau], dim=1)
        q_to_a = torch.cat([q_to_a, torch.einsum("bd,bkd->bk", q, t.distractors) / tau], dim=1)
        candidates = torch.cat([candidates, t.dist_mask], dim=1)
    target = t.rank * b + rows
    ce_a = _masked_logsumexp(a_to_q, candidates) - a_to_q[rows, target]
    ce_q = _masked_logsumexp(q_to_a, candidates) - q_to_a[rows, target]
    per_anchor = torch.where(t.anchor_valid, 0.5 * (ce_a + ce_q), 0.0)
    return per_anchor.sum() / n_valid.clamp_min(1)


def _check_margins(margins: torch.Tensor, t: _Tuples) -> None:
    """Raise ``ValueError`` unless ``margins`` is a float tensor with one value per distractor slot."""
    if not isinstance(margins, torch.Tensor) or margins.shape != t.dist_mask.shape:
        got = tuple(margins.shape) if isinstance(margins, torch.Tensor) else type(margins).__name__
        raise ValueError(f"margins must be a tensor of shape {tuple(t.dist_mask.shape)} (per distractor), got {got}")
    if not margins.is_floating_point():
        raise ValueError(f"margins must be a floating-point tensor, got {margins.dtype}")


def _oracle_ranking_term(t: _Tuples, margins: torch.Tensor, ranking_margin: float) -> torch.Tensor:
    """This process's share of the RankNet oracle term, see :func:`infonce_oracle_loss`."""
    severity = torch.where(t.dist_mask, margins.detach().to(t.anchor.dtype), 0.0)
    cos = torch.einsum("bd,bkd->bk", t.anchor, t.distractors)  # [B, K]
    both_valid = t.dist_mask.unsqueeze(2) & t.dist_mask.unsqueeze(1)
    pairs = both_valid & (severity.unsqueeze(2) < severity.unsqueeze(1))  # [B, K1, K2]: k1 is the lesser edit
    gap = cos.unsqueeze(2) - cos.unsqueeze(1) - ranking_margin
    loss_sum = torch.where(pairs, F.softplus(-gap), 0.0).sum()  # -log sigmoid(gap)
    return loss_sum / _global_sum(pairs.sum(), t).clamp_min(1)


# ----------------------------------------------------------------------------------------------------------
# Public losses
# ----------------------------------------------------------------------------------------------------------


@_full_precision
def nearid_loss(
    anchor: torch.Tensor,
    positives: torch.Tensor,
    positive_mask: torch.Tensor,
    distractors: torch.Tensor,
    distractor_mask: torch.Tensor,
    *,
    tau: float = 0.07,
    alpha: float = 0.5,
    gather: bool = True,
) -> torch.Tensor:
    """The NearID loss ``L = L_disc + alpha * L_rank`` (paper §3.2, Eq. 3).

    With ``l(u, v) = cos(u, v) / tau``, G the valid positives of the whole batch (all processes), G_i anchor
    i's own valid positives and R_i its valid distractors:

    * ``L_disc`` (Eq. 1): for each valid slot p of anchor i,
      ``CE_{i,p} = -l(a_i, g_{i,p}) + log(sum_{g in G} exp l(a_i, g) + sum_{r in R_i} exp l(a_i, r))``;
      the anchor's other positives stay in the denominator. Averaged over the anchors whose slot p is valid,
      then over the slots valid for at least one anchor.
    * ``L_rank`` (Eq. 2): for each valid distractor, ``softplus(LSE_i - l(a_i, r_{i,k}))`` with
      ``LSE_i = log sum_{g in G \\ G_i} exp l(a_i, g)``, averaged over all valid (i, k). It is 0 when there is
      no valid distractor; a pair whose anchor has no batch negative (G = G_i) contributes its limit, 0.

    Distractors are per anchor and never pooled. Only the anchor -> pool direction is used.

    Args:
        anchor, positives, positive_mask, distractors, distractor_mask: see the module docstring.
        tau: temperature of the logits (0.07 in the paper).
        alpha: weight of the ranking regulariser (0.5 in the paper).
        gather: pool the positives of every process (see the module docstring).

    Returns:
        Scalar loss (this process's share times the world size when gathering).
    """
    _check_hyper("tau", tau, positive=True)
    _check_hyper("alpha", alpha)
    t = _prepare(anchor, positives, positive_mask, distractors, distractor_mask, gather)
    disc, rank = _nearid_terms(t, _positive_pool(t), tau)
    return t.world_size * (disc + alpha * rank)


@_full_precision
def nearid_cohesion_loss(
    anchor: torch.Tensor,
    positives: torch.Tensor,
    positive_mask: torch.Tensor,
    distractors: torch.Tensor,
    distractor_mask: torch.Tensor,
    *,
    tau: float = 0.07,
    alpha: float = 0.5,
    beta: float = 0.1,
    gather: bool = True,
) -> torch.Tensor:
    """NearID plus positive cohesion, ``L = L_NearID + beta * L_coh`` (Table 3 "+ Pos. Cohesion", App. 0.E.6).

    For anchor i with valid positives g_{i,p}: the prototype ``g_bar_i = sum_p g_{i,p} / ||sum_p g_{i,p}||``
    (Eq. 7) and ``L_coh^(i) = mean_p (1 - cos(g_{i,p}, g_bar_i))`` (Eq. 8). An anchor with fewer than two
    valid positives contributes 0; ``L_coh`` is the mean over all anchors with at least one valid positive.

    Args:
        anchor, positives, positive_mask, distractors, distractor_mask: see the module docstring.
        tau, alpha: as in :func:`nearid_loss`.
        beta: weight of the cohesion term (0.1 in the paper).
        gather: pool the positives of every process (see the module docstring).

    Returns:
        Scalar loss.
    """
    _check_hyper("tau", tau, positive=True)
    _check_hyper("alpha", alpha)
    _check_hyper("beta", beta)
    t = _prepare(anchor, positives, positive_mask, distractors, distractor_mask, gather)
    disc, rank = _nearid_terms(t, _positive_pool(t), tau)
    return t.world_size * (disc + alpha * rank + beta * _cohesion_term(t))


@_full_precision
def infonce_loss(
    anchor: torch.Tensor,
    positives: torch.Tensor,
    positive_mask: torch.Tensor,
    distractors: torch.Tensor,
    distractor_mask: torch.Tensor,
    *,
    tau: float = 0.07,
    gather: bool = True,
) -> torch.Tensor:
    """Symmetric single-positive InfoNCE (Table 3 row 1, "InfoNCE (sym., 1-pos)"; App. 0.E.1 and 0.E.10).

    Each valid anchor a_i is paired with one positive q_i, its first valid positive slot (the data pipeline
    already shuffles which view is the anchor). Over the valid pairs of the whole batch (all processes), CLIP
    style: ``L = 1/2 (mean_i CE(l(a_i, q_.), target i) + mean_i CE(l(q_i, a_.), target i))`` with
    ``l = cos / tau``. The distractors are validated but ignored, as in the paper's baseline.

    Args:
        anchor, positives, positive_mask, distractors, distractor_mask: see the module docstring.
        tau: temperature of the logits.
        gather: pool the anchors and positives of every process (see the module docstring).

    Returns:
        Scalar loss.
    """
    _check_hyper("tau", tau, positive=True)
    t = _prepare(anchor, positives, positive_mask, distractors, distractor_mask, gather)
    return t.world_size * _symmetric_infonce_term(t, tau, use_distractors=False)


@_full_precision
def infonce_distractor_loss(
    anchor: torch.Tensor,
    positives: torch.Tensor,
    positive_mask: torch.Tensor,
    distractors: torch.Tensor,
    distractor_mask: torch.Tensor,
    *,
    tau: float = 0.07,
    gather: bool = True,
) -> torch.Tensor:
    """Symmetric single-positive InfoNCE with distractors in the denominator (Table 3 "+ R neg", App. 0.E.10).

    As :func:`infonce_loss`, but both softmaxes of pair i also contain the valid distractors of anchor i:
    ``l(a_i, r_{i,k})`` in the anchor -> positive direction and ``l(q_i, r_{i,k})`` in the positive -> anchor
    direction (a distractor is a non-match for both members of the pair).

    Args:
        anchor, positives, positive_mask, distractors, distractor_mask: see the module docstring.
        tau: temperature of the logits.
        gather: pool the anchors and positives of every process (see the module docstring).

    Returns:
        Scalar loss.
    """
    _check_hyper("tau", tau, positive=True)
    t = _prepare(anchor, positives, positive_mask, distractors, distractor_mask, gather)
    return t.world_size * _symmetric_infonce_term(t, tau, use_distractors=True)


@_full_precision
def infonce_oracle_loss(
    anchor: torch.Tensor,
    positives: torch.Tensor,
    positive_mask: torch.Tensor,
    distractors: torch.Tensor,
    distractor_mask: torch.Tensor,
    *,
    margins: torch.Tensor,
    tau: float = 0.07,
    alpha: float = 0.5,
    ranking_margin: float = 0.05,
    gather: bool = True,
) -> torch.Tensor:
    """Symmetric InfoNCE plus oracle ranking on edit severity (Table 3 "+ Oracle Ranking", App. 0.E.10).

    ``L = L_infonce + alpha * L_oracle``, with :func:`infonce_loss` as ``L_infonce`` and the RankNet term
    ``L_oracle = mean over pairs of -log sigmoid(cos(a_i, r_{i,k1}) - cos(a_i, r_{i,k2}) - ranking_margin)``
    over every pair of valid distractors of the same anchor with ``margins[i, k1] < margins[i, k2]`` (k1 is the
    lesser edit and should stay more similar; ties are skipped). The distractors only enter this term.

    Args:
        anchor, positives, positive_mask, distractors, distractor_mask: see the module docstring.
        margins: ``[B, K]`` edit severity of each distractor slot (for MTG the part-to-object area ratio; larger
            means more edited). Padded slots may hold anything. No gradient flows into it.
        tau: temperature of the InfoNCE logits.
        alpha: weight of the oracle term.
        ranking_margin: required cosine gap between the lesser and the larger edit.
        gather: pool the anchors and positives of every process (see the module docstring).

    Returns:
        Scalar loss.
    """
    _check_hyper("tau", tau, positive=True)
    _check_hyper("alpha", alpha)
    t = _prepare(anchor, positives, positive_mask, distractors, distractor_mask, gather)
    _check_margins(margins, t)
    infonce = _symmetric_infonce_term(t, tau, use_distractors=False)
    return t.world_size * (infonce + alpha * _oracle_ranking_term(t, margins, ranking_margin))


@_full_precision
def infonce_distractor_oracle_loss(
    anchor: torch.Tensor,
    positives: torch.Tensor,
    positive_mask: torch.Tensor,
    distractors: torch.Tensor,
    distractor_mask: torch.Tensor,
    *,
    margins: torch.Tensor,
    tau: float = 0.07,
    alpha: float = 0.5,
    ranking_margin: float = 0.05,
    gather: bool = True,
) -> torch.Tensor:
    """InfoNCE with distractors in the denominator plus oracle ranking (Table 3 "+ R neg + Oracle").

    ``L = L_infonce_R + alpha * L_oracle``: :func:`infonce_distractor_loss` plus the RankNet term of
    :func:`infonce_oracle_loss` (same arguments).

    Returns:
        Scalar loss.
    """
    _check_hyper("tau", tau, positive=True)
    _check_hyper("alpha", alpha)
    t = _prepare(anchor, positives, positive_mask, distractors, distractor_mask, gather)
    _check_margins(margins, t)
    infonce = _symmetric_infonce_term(t, tau, use_distractors=True)
    return t.world_size * (infonce + alpha * _oracle_ranking_term(t, margins, ranking_margin))


@_full_precision
def circle_ranking_loss(
    anchor: torch.Tensor,
    positives: torch.Tensor,
    positive_mask: torch.Tensor,
    distractors: torch.Tensor,
    distractor_mask: torch.Tensor,
    *,
    m: float = 0.25,
    gamma: float = 64.0,
    alpha: float = 0.5,
    rank_margin: float = 0.25,
    gather: bool = True,
) -> torch.Tensor:
    """Circle loss plus a hinge ranking term (Table 3 "Circle + Ranking"; Circle loss of Sun et al., CVPR 2020).

    On raw cosines s. For anchor i the positives are its valid positives (s_p), the negatives N_i are the batch
    negatives ``G \\ G_i`` plus its own valid distractors (s_n). With the self-paced weights (not differentiated)
    ``a_p = [1 + m - s_p]_+`` and ``a_n = [s_n + m]_+``:
    ``L_circle^(i) = softplus(LSE_p(-gamma a_p (s_p - (1 - m))) + LSE_n(gamma a_n (s_n - m)))``,
    averaged over anchors with a valid positive (an anchor without any negative contributes its limit, 0).
    The ranking term asks every distractor to beat every batch negative by ``rank_margin``:
    ``L_hinge^(i,k) = mean_{b in G \\ G_i} [s(a_i, b) - s(a_i, r_{i,k}) + rank_margin]_+`` (0 without batch
    negatives), averaged over valid (i, k). ``L = L_circle + alpha * L_hinge``.

    Args:
        anchor, positives, positive_mask, distractors, distractor_mask: see the module docstring.
        m: Circle relaxation margin.
        gamma: Circle scale factor.
        alpha: weight of the ranking hinge.
        rank_margin: cosine margin of the ranking hinge.
        gather: pool the positives of every process (see the module docstring).

    Returns:
        Scalar loss.
    """
    _check_hyper("m", m)
    _check_hyper("gamma", gamma, positive=True)
    _check_hyper("alpha", alpha)
    _check_hyper("rank_margin", rank_margin)
    t = _prepare(anchor, positives, positive_mask, distractors, distractor_mask, gather)
    pool = _positive_pool(t)
    s_pos = torch.einsum("bd,bpd->bp", t.anchor, t.positives)  # [B, P]
    s_pool = t.anchor @ pool.emb.T  # [B, M]
    s_dist = torch.einsum("bd,bkd->bk", t.anchor, t.distractors)  # [B, K]
    batch_neg = pool.valid & ~pool.own  # [B, M]

    s_neg = torch.cat([s_pool, s_dist], dim=1)
    neg_mask = torch.cat([batch_neg, t.dist_mask], dim=1)
    logit_p = -gamma * (1.0 + m - s_pos).clamp_min(0).detach() * (s_pos - (1.0 - m))
    logit_n = gamma * (s_neg + m).clamp_min(0).detach() * (s_neg - m)
    has_neg = neg_mask.any(dim=1)
    lse_p = torch.where(t.anchor_valid, _masked_logsumexp(logit_p, t.pos_mask), 0.0)
    lse_n = torch.where(has_neg, _masked_logsumexp(logit_n, neg_mask), 0.0)
    circle = torch.where(t.anchor_valid & has_neg, F.softplus(lse_p + lse_n), 0.0)
    circle_share = circle.sum() / _global_sum(t.anchor_valid.sum(), t).clamp_min(1)

    hinge = (s_pool.unsqueeze(1) - s_dist.unsqueeze(2) + rank_margin).clamp_min(0)  # [B, K, M]
    hinge = torch.where(batch_neg.unsqueeze(1), hinge, 0.0).sum(dim=2)
    hinge = hinge / batch_neg.sum(dim=1, keepdim=True).clamp_min(1)  # mean over batch negatives
    hinge_sum = torch.where(t.dist_mask, hinge, 0.0).sum()
    hinge_share = hinge_sum / _global_sum(t.dist_mask.sum(), t).clamp_min(1)
    return t.world_size * (circle_share + alpha * hinge_share)


# ----------------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------------

LOSSES: dict[str, LossFn] = {
    "nearid": nearid_loss,
    "nearid_cohesion": nearid_cohesion_loss,
    "infonce": infonce_loss,
    "infonce_distractors": infonce_distractor_loss,
    "infonce_oracle": infonce_oracle_loss,
    "infonce_distractors_oracle": infonce_distractor_oracle_loss,
    "circle_ranking": circle_ranking_loss,
}
"""Table 3 objectives by name. The ``*_oracle`` losses also need ``margins=`` at call time."""


def loss_parameters(name: str) -> tuple[str, ...]:
    """The hyperparameters :func:`get_loss` accepts for loss ``name`` (keyword-only, tensors excluded)."""
    fn = _lookup(name)
    return tuple(
        p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY and p.name != "margins"
    )


def _lookup(name: str) -> LossFn:
    """The loss registered as ``name``, or ``ValueError`` listing the valid names."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(LOSSES)}")
    return LOSSES[name]


def get_loss(name: str, **params: float | bool) -> LossFn:
    """Return loss ``name`` with its hyperparameters bound, e.g. ``get_loss("nearid", alpha=1.0)``.

    The result is called with the five tensors (and ``margins=`` for the ``*_oracle`` losses).

    Raises:
        ValueError: unknown name (the message lists the valid ones) or a parameter the loss does not take.
    """
    fn = _lookup(name)
    allowed = loss_parameters(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"loss {name!r} does not take {', '.join(unknown)}; its parameters: {', '.join(allowed)}")
    return functools.partial(fn, **params)
