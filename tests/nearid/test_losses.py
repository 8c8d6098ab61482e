"""NearID loss and Table 3 ablations: values against naive loop references, masking, gradients, registry."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nearid.distributed import gather_no_grad, gather_with_grad
from nearid.losses import (
    LOSSES,
    circle_ranking_loss,
    get_loss,
    infonce_distractor_loss,
    infonce_loss,
    loss_parameters,
    nearid_cohesion_loss,
    nearid_loss,
)


ORACLE_LOSSES = {"infonce_oracle", "infonce_distractors_oracle"}
DTYPE = torch.float64


# ----------------------------------------------------------------------------------------------------------
# Naive references: explicit loops over anchors, slots and pool entries, straight from the formulas
# ----------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------------------

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


def call(name: str, batch: dict[str, torch.Tensor], **params: float | bool) -> torch.Tensor:
    extra = {"margins": batch["margins"]} if name in ORACLE_LOSSES else {}
    return get_loss(name, **params)(*(batch[key] for key in TENSORS), **extra)


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


# ----------------------------------------------------------------------------------------------------------
# Values
# ----------------------------------------------------------------------------------------------------------


def test_nearid_loss_by_hand_in_two_dimensions() -> None:
    # Unnormalised 2-D inputs; after normalising: a1 = g1 = (1, 0), a2 = g2 = (0, 1), r1 = (1, 1)/sqrt2, r2 = (0, -1).
    anchor = torch.tensor([[2.0, 0.0], [0.0, 0.5]], dtype=DTYPE)
    positives = torch.tensor([[[3.0, 0.0]], [[0.0, 1.0]]], dtype=DTYPE)
    distractors = torch.tensor([[[1.0, 1.0]], [[0.0, -3.0]]], dtype=DTYPE)
    ones = torch.ones(2, 1, dtype=torch.bool)
    # tau = 1, so logits are cosines. Anchor 1: pool logits (1, 0), distractor 1/sqrt2; anchor 2: pool (0, 1),
    # distractor -1. Batch-negative LSE: log e^0 = 0 for both anchors.
    ce1 = math.log(math.e + 1 + math.exp(1 / math.sqrt(2))) - 1
    ce2 = math.log(1 + math.e + math.exp(-1)) - 1
    rank1 = math.log(1 + math.exp(-1 / math.sqrt(2)))  # softplus(0 - 1/sqrt2)
    rank2 = math.log(1 + math.e)  # softplus(0 - (-1))
    expected = (ce1 + ce2) / 2 + 0.5 * (rank1 + rank2) / 2
    assert expected == pytest.approx(1.0066133, abs=1e-6)  # disc 0.57810, rank 0.85704
    loss = nearid_loss(anchor, positives, ones, distractors, ones, tau=1.0, alpha=0.5)
    assert loss.item() == pytest.approx(expected, abs=1e-12)

    # Symmetric InfoNCE on the same tuples: both directions see logits (1, 0) / (0, 1) with the target at 1.
    loss = infonce_loss(anchor, positives, ones, distractors, ones, tau=1.0)
    assert loss.item() == pytest.approx(math.log(1 + math.e) - 1, abs=1e-12)
    # With distractors each direction of anchor i adds the same extra logit (q_i = a_i after normalising).
    loss = infonce_distractor_loss(anchor, positives, ones, distractors, ones, tau=1.0)
    assert loss.item() == pytest.approx((ce1 + ce2) / 2, abs=1e-12)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("seed", [0, 1])
def test_loss_matches_naive_loop_reference(name: str, seed: int) -> None:
    batch = make_batch(seed)
    fast, naive = with_grad(batch), with_grad(batch)
    loss = call(name, fast)
    expected = naive_reference(name, naive)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-10)
    loss.backward()
    expected.backward()
    for key in EMBEDDINGS:
        torch.testing.assert_close(fast[key].grad, naive[key].grad, atol=1e-10, rtol=0)


def test_loss_terms_separately() -> None:
    batch = make_batch(3)
    args = [batch[k] for k in TENSORS]
    disc = nearid_loss(*args, alpha=0.0)
    full = nearid_loss(*args, alpha=0.5)
    rank = (full - disc) / 0.5
    assert rank.item() > 0
    assert nearid_loss(*args, alpha=2.0).item() == pytest.approx((disc + 2.0 * rank).item(), abs=1e-12)
    assert nearid_cohesion_loss(*args, beta=0.0).item() == pytest.approx(full.item(), abs=1e-12)
    assert circle_ranking_loss(*args, alpha=0.0).item() < circle_ranking_loss(*args).item()


def test_float32_inputs_match_float64() -> None:
    batch = make_batch(4)
    single = {k: v.float() if v.is_floating_point() else v for k, v in batch.items()}
    for name in LOSSES:
        assert call(name, single).dtype == torch.float32
        assert call(name, single).item() == pytest.approx(call(name, batch).item(), rel=1e-5)


def test_autocast_does_not_lower_precision() -> None:
    batch = {k: v.float() if v.is_floating_point() else v for k, v in make_batch(4).items()}
    for name in LOSSES:
        reference = call(name, batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = call(name, batch)
        assert mixed.dtype == torch.float32
        assert mixed.item() == pytest.approx(reference.item(), abs=1e-6), name


# ----------------------------------------------------------------------------------------------------------
# Masking and edge cases
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("garbage", ["nan", "huge", "plausible"])
def test_padding_has_no_influence(name: str, garbage: str) -> None:
    base = with_grad(make_batch(5))
    loss = call(name, base)
    loss.backward()

    padded = pad(make_batch(5), garbage)
    rows, pos_slots, dist_slots = padded.pop("_rows"), padded.pop("_pos_slots"), padded.pop("_dist_slots")
    padded = with_grad(padded)
    padded_loss = call(name, padded)
    assert padded_loss.item() == pytest.approx(loss.item(), abs=1e-12)
    padded_loss.backward()

    if name == "infonce":  # the plain baseline ignores distractors entirely
        assert base["distractors"].grad is None and padded["distractors"].grad is None
        padded["distractors"].grad = torch.zeros_like(padded["distractors"])
        base["distractors"].grad = torch.zeros_like(base["distractors"])
    grads = {key: padded[key].grad for key in EMBEDDINGS}
    assert all(torch.isfinite(g).all() for g in grads.values())
    torch.testing.assert_close(grads["anchor"][rows], base["anchor"].grad, atol=1e-12, rtol=0)
    torch.testing.assert_close(grads["positives"][rows][:, pos_slots], base["positives"].grad, atol=1e-12, rtol=0)
    torch.testing.assert_close(grads["distractors"][rows][:, dist_slots], base["distractors"].grad, atol=1e-12, rtol=0)
    # Everything else, and every slot masked in the base batch, gets exactly zero gradient.
    for key, mask in (
        ("anchor", padded["positive_mask"].any(dim=1)),
        ("positives", padded["positive_mask"]),
        ("distractors", padded["distractor_mask"] & padded["positive_mask"].any(dim=1, keepdim=True)),
    ):
        assert (grads[key][~mask] == 0).all(), key


def test_no_valid_distractor_makes_rank_term_zero() -> None:
    batch = make_batch(6)
    args = [batch[k] for k in TENSORS]
    no_distractors = torch.zeros_like(batch["distractor_mask"])
    disc_only = nearid_loss(*args[:4], no_distractors, alpha=0.0)
    assert nearid_loss(*args[:4], no_distractors, alpha=0.5).item() == pytest.approx(disc_only.item(), abs=1e-12)
    # K = 0 (no distractor slot at all) is the same loss.
    empty = batch["distractors"][:, :0]
    assert nearid_loss(*args[:3], empty, no_distractors[:, :0]).item() == pytest.approx(disc_only.item(), abs=1e-12)
    for name in LOSSES:
        extra = {"margins": batch["margins"][:, :0]} if name in ORACLE_LOSSES else {}
        assert torch.isfinite(get_loss(name)(*args[:3], empty, no_distractors[:, :0], **extra))


def test_anchor_without_positives_contributes_nothing() -> None:
    batch = make_batch(7)
    without = {k: v[[0, 2, 3]] for k, v in batch.items()}
    batch["positive_mask"][1] = False
    for name in LOSSES:
        assert call(name, batch).item() == pytest.approx(call(name, without).item(), abs=1e-12), name


def test_single_anchor_has_no_batch_negatives() -> None:
    # One identity: G = G_i, so the ranking term is 0 and L_disc is a softmax over own positives + distractors.
    batch = {k: v[:1] for k, v in make_batch(8).items()}
    args = [batch[k] for k in TENSORS]
    assert nearid_loss(*args, alpha=0.5).item() == pytest.approx(nearid_loss(*args, alpha=0.0).item(), abs=1e-12)
    for name in LOSSES:
        assert torch.isfinite(call(name, batch)), name


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_everything_masked_raises(name: str) -> None:
    batch = make_batch(9)
    batch["positive_mask"][:] = False
    with pytest.raises(ValueError, match="no valid \\(anchor, positive\\) pair"):
        call(name, batch)


# ----------------------------------------------------------------------------------------------------------
# Gradients
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradient_reaches_encoder_parameters(name: str) -> None:
    torch.manual_seed(0)
    batch = make_batch(10)
    encoder = torch.nn.Linear(6, 5, dtype=DTYPE)
    encoded = {k: encoder(v) if k in EMBEDDINGS else v for k, v in batch.items()}
    call(name, encoded).backward()
    assert encoder.weight.grad is not None and encoder.weight.grad.abs().sum() > 0
    assert torch.isfinite(encoder.weight.grad).all()


def test_detached_inputs_get_no_gradient() -> None:
    batch = make_batch(11)
    leaves = {k: batch[k].clone().requires_grad_() for k in EMBEDDINGS}
    loss = nearid_loss(
        leaves["anchor"],
        leaves["positives"].detach(),
        batch["positive_mask"],
        leaves["distractors"].detach(),
        batch["distractor_mask"],
    )
    loss.backward()
    assert leaves["anchor"].grad.abs().sum() > 0
    assert leaves["positives"].grad is None and leaves["distractors"].grad is None
    assert not nearid_loss(*(batch[k] for k in TENSORS)).requires_grad


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradient_descent_decreases_every_loss(name: str) -> None:
    batch = make_batch(12, b=5, p=2, k=3, d=8)
    params = {k: torch.nn.Parameter(batch[k].clone()) for k in EMBEDDINGS}
    optimiser = torch.optim.SGD(params.values(), lr=0.02)
    history = []
    for _ in range(50):
        optimiser.zero_grad()
        loss = call(name, {**batch, **params})
        loss.backward()
        optimiser.step()
        history.append(loss.item())
    assert all(math.isfinite(v) for v in history)
    assert all(later < earlier for earlier, later in zip(history, history[1:], strict=False)), history
    assert history[-1] < 0.9 * history[0]


# ----------------------------------------------------------------------------------------------------------
# Validation and registry
# ----------------------------------------------------------------------------------------------------------


def test_unknown_loss_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown loss 'triplet'") as err:
        get_loss("triplet")
    for name in LOSSES:
        assert name in str(err.value)


def test_unknown_parameter_is_rejected() -> None:
    with pytest.raises(ValueError, match="does not take temperature; its parameters: tau, alpha, gather"):
        get_loss("nearid", temperature=0.1)
    assert loss_parameters("infonce_oracle") == ("tau", "alpha", "ranking_margin", "gather")
    batch = make_batch(13)
    bound = get_loss("nearid", alpha=0.0)(*(batch[k] for k in TENSORS))
    assert bound.item() == pytest.approx(nearid_loss(*(batch[k] for k in TENSORS), alpha=0.0).item())


@pytest.mark.parametrize(
    ("key", "bad", "message"),
    [
        ("anchor", torch.zeros(4, dtype=DTYPE), "anchor must have shape \\[B, D\\]"),
        ("anchor", torch.zeros(4, 6, dtype=torch.long), "anchor must be a floating-point"),
        ("positives", torch.zeros(4, 2, 5, dtype=DTYPE), "positives must have shape \\[B, P, D\\] = \\[4, P, 6\\]"),
        ("positives", torch.zeros(4, 6, dtype=DTYPE), "positives must have shape"),
        ("positives", torch.zeros(4, 0, 6, dtype=DTYPE), "positives has no slots"),
        ("distractors", torch.zeros(3, 3, 6, dtype=DTYPE), "distractors must have shape \\[B, K, D\\]"),
        ("positive_mask", torch.ones(4, 3, dtype=torch.bool), "positive_mask must have shape \\(4, 2\\)"),
        ("positive_mask", torch.ones(4, 2), "positive_mask must be a bool tensor"),
        ("distractor_mask", torch.ones(4, 2, dtype=torch.bool), "distractor_mask must have shape \\(4, 3\\)"),
        ("margins", torch.zeros(4, 2, dtype=DTYPE), "margins must be a tensor of shape \\(4, 3\\)"),
        ("margins", torch.zeros(4, 3, dtype=torch.long), "margins must be a floating-point"),
    ],
)
def test_bad_inputs_name_the_tensor(key: str, bad: torch.Tensor, message: str) -> None:
    batch = make_batch(14)
    batch[key] = bad
    with pytest.raises(ValueError, match=message):
        call("infonce_oracle", batch)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("nearid", {"tau": 0.0}, "tau must be finite and > 0"),
        ("nearid", {"alpha": -1.0}, "alpha must be finite and >= 0"),
        ("nearid_cohesion", {"beta": float("nan")}, "beta must be finite"),
        ("circle_ranking", {"gamma": float("inf")}, "gamma must be finite and > 0"),
    ],
)
def test_bad_hyperparameters(name: str, params: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(name, make_batch(15), **params)


def test_gathers_are_identity_without_distributed() -> None:
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(x) is x
    mask = torch.tensor([True, False])
    assert gather_no_grad(mask) is mask
