"""Naive references: explicit loops over anchors, slots and pool entries, straight from the formulas."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tests.nearid.training.losses.batches import DTYPE, ORACLE_LOSSES


def _cos(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.dot(u / u.norm(), v / v.norm())


def _lse(values: list[torch.Tensor]) -> torch.Tensor:
    return torch.logsumexp(torch.stack(values), dim=0)


def _mean(values: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(values).mean() if values else torch.zeros((), dtype=DTYPE)


def naive_nearid(a, g, gm, r, rm, tau=0.07, alpha=0.5, beta=0.0) -> torch.Tensor:
    b, p, _ = g.shape
    k = r.shape[1]
    pool = [(j, q) for j in range(b) for q in range(p) if gm[j, q]]
    slot_means = []
    for slot in range(p):
        per_anchor = []
        for i in range(b):
            if not gm[i, slot]:
                continue
            denominator = [_cos(a[i], g[j, q]) / tau for j, q in pool]
            denominator += [_cos(a[i], r[i, kk]) / tau for kk in range(k) if rm[i, kk]]
            per_anchor.append(_lse(denominator) - _cos(a[i], g[i, slot]) / tau)
        if per_anchor:
            slot_means.append(_mean(per_anchor))
    disc = _mean(slot_means)
    rank_terms = []
    for i in range(b):
        if not gm[i].any():
            continue
        batch_negatives = [_cos(a[i], g[j, q]) / tau for j, q in pool if j != i]
        for kk in range(k):
            if not rm[i, kk]:
                continue
            if batch_negatives:
                rank_terms.append(F.softplus(_lse(batch_negatives) - _cos(a[i], r[i, kk]) / tau))
            else:
                rank_terms.append(torch.zeros((), dtype=DTYPE))
    cohesion_terms = []
    for i in range(b):
        valid = [g[i, q] / g[i, q].norm() for q in range(p) if gm[i, q]]
        if not valid:
            continue
        if len(valid) < 2:
            cohesion_terms.append(torch.zeros((), dtype=DTYPE))
            continue
        prototype = sum(valid)
        cohesion_terms.append(_mean([1 - _cos(v, prototype) for v in valid]))
    return disc + alpha * _mean(rank_terms) + beta * _mean(cohesion_terms)


def naive_infonce(a, g, gm, r, rm, tau=0.07, use_distractors=False) -> torch.Tensor:
    b, p, _ = g.shape
    pairs = []
    for i in range(b):
        for q in range(p):
            if gm[i, q]:
                pairs.append((i, g[i, q]))
                break
    forward, backward = [], []
    for i, q_i in pairs:
        extra_a = [_cos(a[i], r[i, kk]) / tau for kk in range(r.shape[1]) if rm[i, kk]] if use_distractors else []
        extra_q = [_cos(q_i, r[i, kk]) / tau for kk in range(r.shape[1]) if rm[i, kk]] if use_distractors else []
        forward.append(_lse([_cos(a[i], q_j) / tau for _, q_j in pairs] + extra_a) - _cos(a[i], q_i) / tau)
        backward.append(_lse([_cos(q_i, a[j]) / tau for j, _ in pairs] + extra_q) - _cos(q_i, a[i]) / tau)
    return 0.5 * (_mean(forward) + _mean(backward))


def naive_oracle(a, gm, r, rm, margins, ranking_margin=0.05) -> torch.Tensor:
    terms = []
    for i in range(a.shape[0]):
        if not gm[i].any():
            continue
        for k1 in range(r.shape[1]):
            for k2 in range(r.shape[1]):
                if rm[i, k1] and rm[i, k2] and margins[i, k1] < margins[i, k2]:
                    gap = _cos(a[i], r[i, k1]) - _cos(a[i], r[i, k2]) - ranking_margin
                    terms.append(-F.logsigmoid(gap))
    return _mean(terms)


def naive_circle(a, g, gm, r, rm, m=0.25, gamma=64.0, alpha=0.5, rank_margin=0.25) -> torch.Tensor:
    b, p, _ = g.shape
    circle_terms, hinge_terms = [], []
    for i in range(b):
        if not gm[i].any():
            continue
        s_p = [_cos(a[i], g[i, q]) for q in range(p) if gm[i, q]]
        s_batch = [_cos(a[i], g[j, q]) for j in range(b) for q in range(p) if gm[j, q] and j != i]
        s_dist = [_cos(a[i], r[i, kk]) for kk in range(r.shape[1]) if rm[i, kk]]
        s_n = s_batch + s_dist
        if s_n:
            pos = [-gamma * torch.clamp(1 + m - s, min=0).detach() * (s - (1 - m)) for s in s_p]
            neg = [gamma * torch.clamp(s + m, min=0).detach() * (s - m) for s in s_n]
            circle_terms.append(F.softplus(_lse(pos) + _lse(neg)))
        else:
            circle_terms.append(torch.zeros((), dtype=DTYPE))
        for s_r in s_dist:
            hinge_terms.append(_mean([torch.clamp(s_b - s_r + rank_margin, min=0) for s_b in s_batch]))
    return _mean(circle_terms) + alpha * _mean(hinge_terms)


def naive_reference(name: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    a, g, gm, r, rm = (batch[k] for k in ("anchor", "positives", "positive_mask", "distractors", "distractor_mask"))
    if name == "nearid":
        return naive_nearid(a, g, gm, r, rm)
    if name == "nearid_cohesion":
        return naive_nearid(a, g, gm, r, rm, beta=0.1)
    if name in ("infonce", "infonce_distractors"):
        return naive_infonce(a, g, gm, r, rm, use_distractors=name == "infonce_distractors")
    if name in ORACLE_LOSSES:
        infonce = naive_infonce(a, g, gm, r, rm, use_distractors=name == "infonce_distractors_oracle")
        return infonce + 0.5 * naive_oracle(a, gm, r, rm, batch["margins"])
    if name == "circle_ranking":
        return naive_circle(a, g, gm, r, rm)
    raise AssertionError(f"no naive reference for {name}")
