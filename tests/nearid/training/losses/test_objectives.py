"""NearID loss and Table 3 ablations: values against naive loop references, masking and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from nearid.training.losses import (
    LOSSES,
    LossInputs,
    circle_ranking_loss,
    get_loss,
    infonce_distractor_loss,
    infonce_loss,
    nearid_cohesion_loss,
    nearid_loss,
)
from tests.nearid.training.losses.batches import DTYPE, EMBEDDINGS, TENSORS, call, inputs, make_batch, pad, with_grad
from tests.nearid.training.losses.naive import naive_reference


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
    loss = nearid_loss(LossInputs(anchor, positives, ones, distractors, ones), tau=1.0, alpha=0.5)
    assert loss.item() == pytest.approx(expected, abs=1e-12)

    # Symmetric InfoNCE on the same tuples: both directions see logits (1, 0) / (0, 1) with the target at 1.
    loss = infonce_loss(LossInputs(anchor, positives, ones, distractors, ones), tau=1.0)
    assert loss.item() == pytest.approx(math.log(1 + math.e) - 1, abs=1e-12)
    # With distractors each direction of anchor i adds the same extra logit (q_i = a_i after normalising).
    loss = infonce_distractor_loss(LossInputs(anchor, positives, ones, distractors, ones), tau=1.0)
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
    x = inputs(batch)
    disc = nearid_loss(x, alpha=0.0)
    full = nearid_loss(x, alpha=0.5)
    rank = (full - disc) / 0.5
    assert rank.item() > 0
    assert nearid_loss(x, alpha=2.0).item() == pytest.approx((disc + 2.0 * rank).item(), abs=1e-12)
    assert nearid_cohesion_loss(x, beta=0.0).item() == pytest.approx(full.item(), abs=1e-12)
    assert circle_ranking_loss(x, alpha=0.0).item() < circle_ranking_loss(x).item()


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
    disc_only = nearid_loss(LossInputs(*args[:4], no_distractors), alpha=0.0)
    assert nearid_loss(LossInputs(*args[:4], no_distractors), alpha=0.5).item() == pytest.approx(
        disc_only.item(), abs=1e-12
    )
    # K = 0 (no distractor slot at all) is the same loss.
    empty = LossInputs(*args[:3], batch["distractors"][:, :0], no_distractors[:, :0], batch["margins"][:, :0])
    assert nearid_loss(empty).item() == pytest.approx(disc_only.item(), abs=1e-12)
    for name in LOSSES:
        assert torch.isfinite(get_loss(name)(empty))


def test_anchor_without_positives_contributes_nothing() -> None:
    batch = make_batch(7)
    without = {k: v[[0, 2, 3]] for k, v in batch.items()}
    batch["positive_mask"][1] = False
    for name in LOSSES:
        assert call(name, batch).item() == pytest.approx(call(name, without).item(), abs=1e-12), name


def test_single_anchor_has_no_batch_negatives() -> None:
    # One identity: G = G_i, so the ranking term is 0 and L_disc is a softmax over own positives + distractors.
    batch = {k: v[:1] for k, v in make_batch(8).items()}
    x = inputs(batch)
    assert nearid_loss(x, alpha=0.5).item() == pytest.approx(nearid_loss(x, alpha=0.0).item(), abs=1e-12)
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
        LossInputs(
            leaves["anchor"],
            leaves["positives"].detach(),
            batch["positive_mask"],
            leaves["distractors"].detach(),
            batch["distractor_mask"],
        )
    )
    loss.backward()
    assert leaves["anchor"].grad.abs().sum() > 0
    assert leaves["positives"].grad is None and leaves["distractors"].grad is None
    assert not nearid_loss(inputs(batch)).requires_grad


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
