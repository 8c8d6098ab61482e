"""Loss inputs are checked on construction, hyperparameters by each loss, names by the registry."""

from __future__ import annotations

import pytest
import torch

from nearid.training.distributed import gather_no_grad, gather_with_grad
from nearid.training.losses import LOSSES, LossInputs, get_loss, loss_parameters, nearid_loss
from tests.nearid.training.losses.batches import DTYPE, TENSORS, call, inputs, make_batch


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
    bound = get_loss("nearid", alpha=0.0)(inputs(batch))
    assert bound.item() == pytest.approx(nearid_loss(inputs(batch), alpha=0.0).item())


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


@pytest.mark.parametrize("name", ["infonce_oracle", "infonce_distractors_oracle"])
def test_oracle_losses_need_margins(name: str) -> None:
    batch = make_batch(16)
    with pytest.raises(ValueError, match="the oracle losses need margins"):
        get_loss(name)(LossInputs(*(batch[k] for k in TENSORS)))


def test_a_loss_takes_loss_inputs() -> None:
    batch = make_batch(17)
    with pytest.raises(ValueError, match="a loss takes one LossInputs, got Tensor"):
        nearid_loss(batch["anchor"])
