"""The terms the losses are built from. Each returns this process's share of a global average, before the
world-size factor (see :mod:`nearid.training.losses.inputs`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nearid.training.distributed import gather_no_grad, gather_with_grad
from nearid.training.losses.inputs import (
    PositivePool,
    PreparedBatch,
    global_sum,
    masked_logsumexp,
    require_valid_pairs,
)


def nearid_terms(t: PreparedBatch, pool: PositivePool, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """L_disc (Eq. 1) and L_rank (Eq. 2), see :func:`nearid.training.losses.objectives.nearid_loss`."""
    b = t.anchor.shape[0]
    pool_logits = t.anchor @ pool.emb.T / tau  # [B, M]
    dist_logits = torch.einsum("bd,bkd->bk", t.anchor, t.distractors) / tau  # [B, K]
    own_logits = torch.einsum("bd,bpd->bp", t.anchor, t.positives) / tau  # [B, P]

    # L_disc: one softmax over G + own distractors per positive slot; the denominator is shared by the slots.
    candidates = torch.cat([pool.valid.expand(b, -1), t.dist_mask], dim=1)
    lse_all = masked_logsumexp(torch.cat([pool_logits, dist_logits], dim=1), candidates)  # [B]
    ce = lse_all.unsqueeze(1) - own_logits  # [B, P]
    n_slots = (pool.slot_counts > 0).sum()
    weights = t.pos_mask.to(ce.dtype) / (pool.slot_counts.clamp_min(1) * n_slots).to(ce.dtype)  # anchors, then slots
    disc = (torch.where(t.pos_mask, ce, 0.0) * weights).sum()

    # L_rank: each valid distractor against the LSE of the batch negatives G \ G_i.
    batch_neg = pool.valid & ~pool.own  # [B, M]
    lse_neg = masked_logsumexp(pool_logits, batch_neg)  # [B]
    has_batch_neg = batch_neg.any(dim=1, keepdim=True)
    per_pair = F.softplus(torch.where(has_batch_neg, lse_neg.unsqueeze(1), 0.0) - dist_logits)  # [B, K]
    # An empty batch-negative pool is the limit LSE = -inf, where the softplus is 0.
    rank_sum = torch.where(t.dist_mask & has_batch_neg, per_pair, 0.0).sum()
    rank = rank_sum / global_sum(t.dist_mask.sum(), t).clamp_min(1)
    return disc, rank


def cohesion_term(t: PreparedBatch) -> torch.Tensor:
    """L_coh (paper Eqs. 7-8), see :func:`nearid.training.losses.objectives.nearid_cohesion_loss`."""
    prototype = F.normalize(t.positives.sum(dim=1), dim=-1)  # padded slots are zero vectors
    cos = torch.einsum("bpd,bd->bp", t.positives, prototype)
    n_pos = t.pos_mask.sum(dim=1, keepdim=True)
    counted = t.pos_mask & (n_pos >= 2)
    per_anchor = torch.where(counted, 1.0 - cos, 0.0).sum(dim=1) / n_pos.squeeze(1).clamp_min(1)
    return per_anchor.sum() / global_sum(t.anchor_valid.sum(), t).clamp_min(1)


def symmetric_infonce_term(t: PreparedBatch, tau: float, use_distractors: bool) -> torch.Tensor:
    """The symmetric single-positive InfoNCE, see :func:`nearid.training.losses.objectives.infonce_loss`."""
    b = t.anchor.shape[0]
    rows = torch.arange(b, device=t.anchor.device)
    first_valid = t.pos_mask.int().argmax(dim=1)  # first valid slot; 0 for rows without one (they are dropped)
    q = t.positives[rows, first_valid]  # [B, D]
    all_anchors = gather_with_grad(t.anchor) if t.gather else t.anchor
    all_q = gather_with_grad(q) if t.gather else q
    all_valid = gather_no_grad(t.anchor_valid) if t.gather else t.anchor_valid
    n_valid = all_valid.sum()
    require_valid_pairs(n_valid)

    a_to_q = t.anchor @ all_q.T / tau  # [B, world_size * B]
    q_to_a = q @ all_anchors.T / tau
    candidates = all_valid.expand(b, -1)
    if use_distractors:
        a_to_q = torch.cat([a_to_q, torch.einsum("bd,bkd->bk", t.anchor, t.distractors) / tau], dim=1)
        q_to_a = torch.cat([q_to_a, torch.einsum("bd,bkd->bk", q, t.distractors) / tau], dim=1)
        candidates = torch.cat([candidates, t.dist_mask], dim=1)
    target = t.rank * b + rows
    ce_a = masked_logsumexp(a_to_q, candidates) - a_to_q[rows, target]
    ce_q = masked_logsumexp(q_to_a, candidates) - q_to_a[rows, target]
    per_anchor = torch.where(t.anchor_valid, 0.5 * (ce_a + ce_q), 0.0)
    return per_anchor.sum() / n_valid.clamp_min(1)


def oracle_ranking_term(t: PreparedBatch, ranking_margin: float) -> torch.Tensor:
    """The RankNet term on edit severity, see :func:`nearid.training.losses.objectives.infonce_oracle_loss`."""
    if t.margins is None:
        raise ValueError("the oracle losses need margins: LossInputs(..., margins=[B, K] edit severities)")
    severity = torch.where(t.dist_mask, t.margins.detach().to(t.anchor.dtype), 0.0)
    cos = torch.einsum("bd,bkd->bk", t.anchor, t.distractors)  # [B, K]
    both_valid = t.dist_mask.unsqueeze(2) & t.dist_mask.unsqueeze(1)
    pairs = both_valid & (severity.unsqueeze(2) < severity.unsqueeze(1))  # [B, K1, K2]: k1 is the lesser edit
    gap = cos.unsqueeze(2) - cos.unsqueeze(1) - ranking_margin
    loss_sum = torch.where(pairs, F.softplus(-gap), 0.0).sum()  # -log sigmoid(gap)
    return loss_sum / global_sum(pairs.sum(), t).clamp_min(1)


def circle_ranking_terms(
    t: PreparedBatch, pool: PositivePool, m: float, gamma: float, rank_margin: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """L_circle and L_hinge, see :func:`nearid.training.losses.objectives.circle_ranking_loss`."""
    s_pos = torch.einsum("bd,bpd->bp", t.anchor, t.positives)  # [B, P]
    s_pool = t.anchor @ pool.emb.T  # [B, M]
    s_dist = torch.einsum("bd,bkd->bk", t.anchor, t.distractors)  # [B, K]
    batch_neg = pool.valid & ~pool.own  # [B, M]

    s_neg = torch.cat([s_pool, s_dist], dim=1)
    neg_mask = torch.cat([batch_neg, t.dist_mask], dim=1)
    logit_p = -gamma * (1.0 + m - s_pos).clamp_min(0).detach() * (s_pos - (1.0 - m))
    logit_n = gamma * (s_neg + m).clamp_min(0).detach() * (s_neg - m)
    has_neg = neg_mask.any(dim=1)
    lse_p = torch.where(t.anchor_valid, masked_logsumexp(logit_p, t.pos_mask), 0.0)
    lse_n = torch.where(has_neg, masked_logsumexp(logit_n, neg_mask), 0.0)
    circle = torch.where(t.anchor_valid & has_neg, F.softplus(lse_p + lse_n), 0.0)
    circle_share = circle.sum() / global_sum(t.anchor_valid.sum(), t).clamp_min(1)

    hinge = (s_pool.unsqueeze(1) - s_dist.unsqueeze(2) + rank_margin).clamp_min(0)  # [B, K, M]
    hinge = torch.where(batch_neg.unsqueeze(1), hinge, 0.0).sum(dim=2)
    hinge = hinge / batch_neg.sum(dim=1, keepdim=True).clamp_min(1)  # mean over batch negatives
    hinge_sum = torch.where(t.dist_mask, hinge, 0.0).sum()
    hinge_share = hinge_sum / global_sum(t.dist_mask.sum(), t).clamp_min(1)
    return circle_share, hinge_share
