"""The NearID loss (paper §3.2) and the training-objective ablations of paper Table 3, and their registry.

Every loss is ``loss(inputs: LossInputs, *, hyperparameters..., gather=True) -> scalar``: the batch, its masking
and the distributed convention are defined once in :mod:`nearid.training.losses.inputs`; each loss below only
combines terms from :mod:`nearid.training.losses.terms`. ``gather`` pools the batch of every process; the result is
this process's share times the world size when gathering.
"""

from __future__ import annotations

import functools
import inspect

import torch

from nearid.training.losses.inputs import LossFn, LossInputs, check_hyper, full_precision, positive_pool, prepare
from nearid.training.losses.terms import (
    circle_ranking_terms,
    cohesion_term,
    nearid_terms,
    oracle_ranking_term,
    symmetric_infonce_term,
)


@full_precision
def nearid_loss(inputs: LossInputs, *, tau: float = 0.07, alpha: float = 0.5, gather: bool = True) -> torch.Tensor:
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

    Distractors are per anchor and never pooled. Only the anchor -> pool direction is used. ``tau`` is the
    temperature (0.07 in the paper), ``alpha`` the weight of the ranking regulariser (0.5 in the paper).
    """
    check_hyper("tau", tau, positive=True)
    check_hyper("alpha", alpha)
    t = prepare(inputs, gather)
    disc, rank = nearid_terms(t, positive_pool(t), tau)
    return t.world_size * (disc + alpha * rank)


@full_precision
def nearid_cohesion_loss(
    inputs: LossInputs, *, tau: float = 0.07, alpha: float = 0.5, beta: float = 0.1, gather: bool = True
) -> torch.Tensor:
    """NearID plus positive cohesion, ``L = L_NearID + beta * L_coh`` (Table 3 "+ Pos. Cohesion", App. 0.E.6).

    For anchor i with valid positives g_{i,p}: the prototype ``g_bar_i = sum_p g_{i,p} / ||sum_p g_{i,p}||``
    (Eq. 7) and ``L_coh^(i) = mean_p (1 - cos(g_{i,p}, g_bar_i))`` (Eq. 8). An anchor with fewer than two
    valid positives contributes 0; ``L_coh`` is the mean over all anchors with at least one valid positive.
    ``tau`` and ``alpha`` as in :func:`nearid_loss`; ``beta`` weighs the cohesion term (0.1 in the paper).
    """
    check_hyper("tau", tau, positive=True)
    check_hyper("alpha", alpha)
    check_hyper("beta", beta)
    t = prepare(inputs, gather)
    disc, rank = nearid_terms(t, positive_pool(t), tau)
    return t.world_size * (disc + alpha * rank + beta * cohesion_term(t))


@full_precision
def infonce_loss(inputs: LossInputs, *, tau: float = 0.07, gather: bool = True) -> torch.Tensor:
    """Symmetric single-positive InfoNCE (Table 3 row 1, "InfoNCE (sym., 1-pos)"; App. 0.E.1 and 0.E.10).

    Each valid anchor a_i is paired with one positive q_i, its first valid positive slot (the data pipeline
    already shuffles which view is the anchor). Over the valid pairs of the whole batch (all processes), CLIP
    style: ``L = 1/2 (mean_i CE(l(a_i, q_.), target i) + mean_i CE(l(q_i, a_.), target i))`` with
    ``l = cos / tau``. The distractors are validated but ignored, as in the paper's baseline.
    """
    check_hyper("tau", tau, positive=True)
    t = prepare(inputs, gather)
    return t.world_size * symmetric_infonce_term(t, tau, use_distractors=False)


@full_precision
def infonce_distractor_loss(inputs: LossInputs, *, tau: float = 0.07, gather: bool = True) -> torch.Tensor:
    """Symmetric single-positive InfoNCE with distractors in the denominator (Table 3 "+ R neg", App. 0.E.10).

    As :func:`infonce_loss`, but both softmaxes of pair i also contain the valid distractors of anchor i:
    ``l(a_i, r_{i,k})`` in the anchor -> positive direction and ``l(q_i, r_{i,k})`` in the positive -> anchor
    direction (a distractor is a non-match for both members of the pair).
    """
    check_hyper("tau", tau, positive=True)
    t = prepare(inputs, gather)
    return t.world_size * symmetric_infonce_term(t, tau, use_distractors=True)


@full_precision
def infonce_oracle_loss(
    inputs: LossInputs, *, tau: float = 0.07, alpha: float = 0.5, ranking_margin: float = 0.05, gather: bool = True
) -> torch.Tensor:
    """Symmetric InfoNCE plus oracle ranking on edit severity (Table 3 "+ Oracle Ranking", App. 0.E.10).

    ``L = L_infonce + alpha * L_oracle``, with :func:`infonce_loss` as ``L_infonce`` and the RankNet term
    ``L_oracle = mean over pairs of -log sigmoid(cos(a_i, r_{i,k1}) - cos(a_i, r_{i,k2}) - ranking_margin)``
    over every pair of valid distractors of the same anchor with ``margins[i, k1] < margins[i, k2]`` (k1 is the
    lesser edit and should stay more similar; ties are skipped). The distractors only enter this term, and
    ``inputs.margins`` is required.
    """
    check_hyper("tau", tau, positive=True)
    check_hyper("alpha", alpha)
    t = prepare(inputs, gather)
    infonce = symmetric_infonce_term(t, tau, use_distractors=False)
    return t.world_size * (infonce + alpha * oracle_ranking_term(t, ranking_margin))


@full_precision
def infonce_distractor_oracle_loss(
    inputs: LossInputs, *, tau: float = 0.07, alpha: float = 0.5, ranking_margin: float = 0.05, gather: bool = True
) -> torch.Tensor:
    """InfoNCE with distractors in the denominator plus oracle ranking (Table 3 "+ R neg + Oracle").

    ``L = L_infonce_R + alpha * L_oracle``: :func:`infonce_distractor_loss` plus the RankNet term of
    :func:`infonce_oracle_loss` (same arguments; ``inputs.margins`` is required).
    """
    check_hyper("tau", tau, positive=True)
    check_hyper("alpha", alpha)
    t = prepare(inputs, gather)
    infonce = symmetric_infonce_term(t, tau, use_distractors=True)
    return t.world_size * (infonce + alpha * oracle_ranking_term(t, ranking_margin))


@full_precision
def circle_ranking_loss(
    inputs: LossInputs,
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
    negatives), averaged over valid (i, k). ``L = L_circle + alpha * L_hinge``; ``m`` is Circle's relaxation
    margin and ``gamma`` its scale factor.
    """
    check_hyper("m", m)
    check_hyper("gamma", gamma, positive=True)
    check_hyper("alpha", alpha)
    check_hyper("rank_margin", rank_margin)
    t = prepare(inputs, gather)
    circle, hinge = circle_ranking_terms(t, positive_pool(t), m, gamma, rank_margin)
    return t.world_size * (circle + alpha * hinge)


LOSSES: dict[str, LossFn] = {
    "nearid": nearid_loss,
    "nearid_cohesion": nearid_cohesion_loss,
    "infonce": infonce_loss,
    "infonce_distractors": infonce_distractor_loss,
    "infonce_oracle": infonce_oracle_loss,
    "infonce_distractors_oracle": infonce_distractor_oracle_loss,
    "circle_ranking": circle_ranking_loss,
}
"""Table 3 objectives by name. The ``*_oracle`` losses also read ``LossInputs.margins``."""


def loss_parameters(name: str) -> tuple[str, ...]:
    """The hyperparameters :func:`get_loss` accepts for loss ``name`` (its keyword-only arguments)."""
    fn = _lookup(name)
    return tuple(p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY)


def _lookup(name: str) -> LossFn:
    """The loss registered as ``name``, or ``ValueError`` listing the valid names."""
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(LOSSES)}")
    return LOSSES[name]


def get_loss(name: str, **params: float | bool) -> LossFn:
    """Return loss ``name`` with its hyperparameters bound, e.g. ``get_loss("nearid", alpha=1.0)``.

    The result is called with one :class:`LossInputs`.

    Raises:
        ValueError: unknown name (the message lists the valid ones) or a parameter the loss does not take.
    """
    fn = _lookup(name)
    allowed = loss_parameters(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"loss {name!r} does not take {', '.join(unknown)}; its parameters: {', '.join(allowed)}")
    return functools.partial(fn, **params)
