"""SSR/PA, pooling and MTG discrimination on hand-built tables; expected numbers are derived in comments or by
naive loops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nearid.evaluation.metrics import (
    SOURCE_GROUPS,
    SOURCES,
    Discrimination,
    discrimination,
    mtg_discrimination,
    pool,
    pool_group,
)


NAN = math.nan
T, F = True, False


def _views(s01: float, s02: float = NAN, s12: float = NAN) -> list[list[float]]:
    """Symmetric 3x3 view-view similarities with a NaN diagonal (the diagonal is never read)."""
    return [[NAN, s01, s02], [s01, NAN, s12], [s02, s12, NAN]]


def _table(samples: list[tuple[list[list[float]], list[float], list[bool], list[bool]]]) -> tuple[np.ndarray, ...]:
    pos, own, views, dists = zip(*samples, strict=True)
    return np.array(pos), np.array(own), np.array(views), np.array(dists)


def _naive(pos: np.ndarray, own: np.ndarray, views: np.ndarray, dists: np.ndarray) -> tuple[int, int, int, int]:
    """Loop-by-loop counts straight from the definition: (n_samples, sample_wins, n_trials, trial_wins)."""
    n_samples = sample_wins = n_trials = trial_wins = 0
    for n in range(pos.shape[0]):
        won = []
        for i in range(pos.shape[1]):
            for j in range(pos.shape[1]):
                if i != j and views[n, i] and views[n, j] and dists[n, i]:
                    won.append(bool(pos[n, i, j] - own[n, i] > 0))
        if won:
            n_samples += 1
            sample_wins += all(won)
            n_trials += len(won)
            trial_wins += sum(won)
    return n_samples, sample_wins, n_trials, trial_wins


def _counts(result: Discrimination) -> tuple[int, int, int, int]:
    return result.n_samples, result.sample_wins, result.n_trials, result.trial_wins


# Sample A, 3 views, all distractors: s01=.9, s02=.8, s12=.7, own=(.5, .85, .6).
#   0->1: .9-.5=.4 win   0->2: .8-.5=.3 win   1->0: .9-.85=.05 win
#   1->2: .7-.85=-.15 loss   2->0: .8-.6=.2 win   2->1: .7-.6=.1 win   => 6 trials, 5 wins, sample fails.
SAMPLE_A = (_views(0.9, 0.8, 0.7), [0.5, 0.85, 0.6], [T, T, T], [T, T, T])
# Sample B, 2 views (slot 2 empty, NaN there): s01=.6, own=(.5, .4). 0->1: .1 win, 1->0: .2 win => 2 trials, passes.
SAMPLE_B = (_views(0.6), [0.5, 0.4, NAN], [T, T, F], [T, T, F])
# Sample C, 2 views: s01=.8, own=(.1, .2) => 2 trials, both won, passes.
SAMPLE_C = (_views(0.8), [0.1, 0.2, NAN], [T, T, F], [T, T, F])


def test_three_view_sample_has_six_trials_and_two_view_sample_two() -> None:
    result = discrimination(*_table([SAMPLE_A, SAMPLE_B]))
    # 2 samples, 1 passes (B); 6 + 2 = 8 trials, 5 + 2 = 7 won.
    assert _counts(result) == (2, 1, 8, 7)
    assert result.ssr == pytest.approx(50.0)
    assert result.pa == pytest.approx(87.5)  # 7 / 8; the authors' extra mean-margin trial would give 9 / 10
    assert discrimination(*_table([SAMPLE_A])).n_trials == 6
    assert discrimination(*_table([SAMPLE_B])).n_trials == 2


def test_two_view_tables_are_accepted() -> None:
    pos = np.array([[[NAN, 0.6], [0.6, NAN]]])
    result = discrimination(pos, np.array([[0.5, 0.7]]), np.array([[T, T]]), np.array([[T, T]]))
    # 0->1: .6-.5 = .1 win; 1->0: .6-.7 = -.1 loss.
    assert _counts(result) == (1, 0, 2, 1)


def test_missing_distractors_drop_trials_and_trialless_samples_are_not_counted() -> None:
    # Sample A's values with distractor 1 missing: trials 1->0 and 1->2 vanish; the losing 1->2 was one of them,
    # so the 4 remaining trials (0->1, 0->2, 2->0, 2->1) all win and the sample passes.
    a_no_d1 = (_views(0.9, 0.8, 0.7), [0.5, NAN, 0.6], [T, T, T], [T, F, T])
    # Views but no distractor at all: no trial, left out of n_samples.
    no_distractors = (_views(0.9, 0.8, 0.7), [NAN, NAN, NAN], [T, T, T], [F, F, F])
    # One view only: nothing to compare with, even though its distractor exists.
    one_view = (_views(NAN), [0.3, NAN, NAN], [T, F, F], [T, F, F])
    result = discrimination(*_table([a_no_d1, no_distractors, one_view]))
    assert _counts(result) == (1, 1, 4, 4)
    assert result.ssr == pytest.approx(100.0)


def test_a_tie_is_a_loss() -> None:
    # s01 = .5 and own0 = .5 (exact in binary): 0->1 margin 0 -> loss; 1->0: .5-.25 = .25 win.
    tie = (_views(0.5), [0.5, 0.25, NAN], [T, T, F], [T, T, F])
    result = discrimination(*_table([tie]))
    assert _counts(result) == (1, 0, 2, 1)


def test_nan_in_a_trial_raises_and_names_the_sample() -> None:
    pos, own, views, dists = _table([SAMPLE_B, SAMPLE_A])
    own[1, 2] = NAN  # distractor 2 of sample 1 is marked valid, so trials 2->0 and 2->1 read a NaN
    with pytest.raises(ValueError, match=r"sample 1: trial 2->0 uses a non-finite similarity"):
        discrimination(pos, own, views, dists)
    pos, own, views, dists = _table([SAMPLE_A])
    pos[0, 1, 2] = NAN  # read by trial 1->2
    with pytest.raises(ValueError, match=r"sample 0: trial 1->2"):
        discrimination(pos, own, views, dists)
    pos[0, 1, 2] = math.inf
    with pytest.raises(ValueError, match=r"sample 0: trial 1->2"):
        discrimination(pos, own, views, dists)


def test_nan_in_unused_slots_is_ignored() -> None:
    # Sample B already carries NaN in its empty view slot. Here also: distractor 1 of sample A is invalid, so
    # own[1] and pos[1, 0], pos[1, 2] (read only by trials 1->0 and 1->2) may be NaN; pos[0, 1] is still read.
    pos, own, views, dists = _table([SAMPLE_A, SAMPLE_B])
    dists[0, 1] = False
    own[0, 1] = NAN
    pos[0, 1, 0] = NAN
    pos[0, 1, 2] = NAN
    result = discrimination(pos, own, views, dists)
    # A keeps 0->1, 0->2, 2->0, 2->1 (all won, see SAMPLE_A); B keeps its 2 wins.
    assert _counts(result) == (2, 2, 6, 6)


def test_matches_a_naive_loop_on_random_tables() -> None:
    rng = np.random.default_rng(0)
    for v in (2, 3):
        n = 300
        # one decimal so that ties (margin exactly 0 after rounding both sides) occur
        pos = np.round(rng.uniform(-1, 1, size=(n, v, v)), 1)
        own = np.round(rng.uniform(-1, 1, size=(n, v)), 1)
        views = rng.random((n, v)) < 0.8
        dists = rng.random((n, v)) < 0.6
        pos[~views] = NAN  # a missing view's rows ...
        pos[np.broadcast_to(~views[:, None, :], pos.shape)] = NAN  # ... and columns
        own[~dists] = NAN
        expected = _naive(pos, own, views, dists)
        assert expected[2] > 100  # the table really exercises trials
        assert _counts(discrimination(pos, own, views, dists)) == expected


@pytest.mark.parametrize(
    ("pos", "own", "views", "dists", "message"),
    [
        (np.zeros((2, 3)), np.zeros((2, 3)), np.ones((2, 3), bool), np.ones((2, 3), bool), "pos_sim must be 3-D"),
        (np.zeros((2, 3, 2)), np.zeros((2, 3)), np.ones((2, 3), bool), np.ones((2, 3), bool), r"\[N, V, V\]"),
        (np.zeros((2, 4, 4)), np.zeros((2, 4)), np.ones((2, 4), bool), np.ones((2, 4), bool), "2 or 3 views"),
        (np.zeros((2, 1, 1)), np.zeros((2, 1)), np.ones((2, 1), bool), np.ones((2, 1), bool), "2 or 3 views"),
        (np.zeros((2, 3, 3)), np.zeros((2, 2)), np.ones((2, 3), bool), np.ones((2, 3), bool), "own_distractor_sim"),
        (np.zeros((2, 3, 3)), np.zeros((2, 3)), np.ones((3, 3), bool), np.ones((2, 3), bool), "view_valid"),
        (np.zeros((2, 3, 3)), np.zeros((2, 3)), np.ones((2, 3)), np.ones((2, 3), bool), "view_valid must be a bool"),
        (np.zeros((2, 3, 3)), np.zeros((2, 3)), np.ones((2, 3), bool), np.ones((2, 3), int), "distractor_valid"),
    ],
)
def test_bad_shapes_and_dtypes_raise(
    pos: np.ndarray, own: np.ndarray, views: np.ndarray, dists: np.ndarray, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        discrimination(pos, own, views, dists)


def test_no_samples_give_nan_rates() -> None:
    result = discrimination(np.zeros((0, 3, 3)), np.zeros((0, 3)), np.zeros((0, 3), bool), np.zeros((0, 3), bool))
    assert _counts(result) == (0, 0, 0, 0)
    assert math.isnan(result.ssr) and math.isnan(result.pa)
    # samples exist but none has a trial: same thing
    empty = (_views(0.9), [NAN, NAN, NAN], [T, T, F], [F, F, F])
    assert math.isnan(discrimination(*_table([empty])).ssr)


def test_counts_are_validated() -> None:
    with pytest.raises(ValueError, match="sample_wins"):
        Discrimination(n_samples=1, sample_wins=2, n_trials=2, trial_wins=2)
    with pytest.raises(ValueError, match="trial_wins"):
        Discrimination(n_samples=1, sample_wins=1, n_trials=2, trial_wins=3)
    with pytest.raises(ValueError, match="n_samples must be >= 0"):
        Discrimination(n_samples=-1, sample_wins=0, n_trials=0, trial_wins=0)
    with pytest.raises(ValueError, match="n_samples .* exceeds n_trials"):
        Discrimination(n_samples=3, sample_wins=0, n_trials=2, trial_wins=0)
    assert Discrimination(1, 1, 2, 2).to_dict() == {
        "ssr": 100.0,
        "pa": 100.0,
        "n_samples": 1,
        "sample_wins": 1,
        "n_trials": 2,
        "trial_wins": 2,
    }


def test_pooling_is_support_weighted() -> None:
    big = discrimination(*_table([SAMPLE_A, SAMPLE_B]))  # (2, 1, 8, 7): SSR 50, PA 87.5
    small = discrimination(*_table([SAMPLE_C]))  # (1, 1, 2, 2): SSR 100, PA 100
    pooled = pool(
        {"sdxl-512": big, "powerpaint": small, "qwen-512": Discrimination(0, 0, 0, 0)}, ["sdxl-512", "powerpaint"]
    )
    # sums: 3 samples, 2 pass, 10 trials, 9 won => SSR 200/3, PA 90
    assert _counts(pooled) == (3, 2, 10, 9)
    assert pooled.ssr == pytest.approx(200 / 3)
    assert pooled.pa == pytest.approx(90.0)
    # identical to recomputing on the concatenated table
    assert pooled == discrimination(*_table([SAMPLE_A, SAMPLE_B, SAMPLE_C]))
    # and not the unweighted mean of the per-source rates: (50 + 100) / 2 = 75, (87.5 + 100) / 2 = 93.75
    assert pooled.ssr != pytest.approx((big.ssr + small.ssr) / 2)
    assert pooled.pa != pytest.approx((big.pa + small.pa) / 2)


def test_pooling_refuses_unknown_repeated_or_no_sources() -> None:
    results = {"sdxl-512": Discrimination(1, 1, 2, 2)}
    with pytest.raises(ValueError, match=r"no result for source\(s\) \['qwen-512'\]"):
        pool(results, ["sdxl-512", "qwen-512"])
    with pytest.raises(ValueError, match="more than once"):
        pool(results, ["sdxl-512", "sdxl-512"])
    with pytest.raises(ValueError, match="at least one source"):
        pool(results, [])
    with pytest.raises(ValueError, match="unknown source group 'main'"):
        pool_group(results, "main")


def test_source_groups_follow_paper_table_5() -> None:
    # Table 5: daggered training rows are FLUX.1-Fill 512/1024 and Qwen-Image 512/1328; unseen fill rows are
    # PowerPaint and SDXL-Inpaint 512/1024; unseen Canny rows FLUX.1-Canny 512/1024. "all 7, main" = training +
    # unseen fill (n = 3500 = 7 x 500); "all 9" adds the Canny rows (n = 4500).
    training = {"flux-fill-512", "flux-fill-1024", "qwen-512", "qwen-1328"}
    unseen_fill = {"powerpaint", "sdxl-512", "sdxl-1024"}
    unseen_canny = {"flux-canny-512", "flux-canny-1024"}
    assert set(SOURCE_GROUPS["training"]) == training
    assert set(SOURCE_GROUPS["unseen_fill"]) == unseen_fill
    assert set(SOURCE_GROUPS["unseen_canny"]) == unseen_canny
    assert set(SOURCE_GROUPS["unseen"]) == unseen_fill | unseen_canny
    assert set(SOURCE_GROUPS["primary"]) == training | unseen_fill
    assert set(SOURCE_GROUPS["all"]) == set(SOURCES) == training | unseen_fill | unseen_canny
    assert len(SOURCES) == 9
    assert all(len(set(members)) == len(members) for members in SOURCE_GROUPS.values())
    # every source has 500 samples of 1 passing / 2 trials; the primary pool then has 7 x 500 samples
    results = {name: Discrimination(500, 500, 1000, 1000) for name in SOURCES}
    assert pool_group(results, "primary").n_samples == 3500
    assert pool_group(results, "all").n_samples == 4500


# MTG table: sample 0: s12=.9, s11'=.8 (m1=.1 win), s22'=.95 (m2=-.05 loss) -> fails
#            sample 1: s12=.9, s11'=.5 (m1=.4 win), s22'=.6 (m2=.3 win)     -> passes
#            sample 2: s12=.5, s11'=.5 (m1=0 tie = loss), s22'=.25 (m2=.25 win) -> fails
MTG_S12 = [0.9, 0.9, 0.5]
MTG_S11P = [0.8, 0.5, 0.5]
MTG_S22P = [0.95, 0.6, 0.25]


def test_mtg_discrimination() -> None:
    result = mtg_discrimination(MTG_S12, MTG_S11P, MTG_S22P)
    # 3 samples, 1 passes; 6 trials, 4 won
    assert _counts(result) == (3, 1, 6, 4)
    assert result.ssr == pytest.approx(100 / 3)
    assert result.pa == pytest.approx(200 / 3)


def test_mtg_discrimination_validity() -> None:
    s22p = list(MTG_S22P)
    s22p[0] = NAN  # edit 2' of sample 0 missing: its losing trial is gone, the winning trial 1 stays
    s12 = list(MTG_S12)
    s12[2] = NAN  # sample 2 has no original pair at all
    result = mtg_discrimination(
        s12, MTG_S11P, s22p, pair_valid=np.array([T, T, F]), edit_valid=np.array([[T, F], [T, T], [T, T]])
    )
    # samples 0 (1 trial, won) and 1 (2 trials, won): 2 samples, 2 pass, 3 trials, 3 won
    assert _counts(result) == (2, 2, 3, 3)
    with pytest.raises(ValueError, match=r"sample 0: MTG trial 2 .*s2_2p=nan"):
        mtg_discrimination(MTG_S12, MTG_S11P, s22p)
    with pytest.raises(ValueError, match="s2_2p must have shape"):
        mtg_discrimination(MTG_S12, MTG_S11P, MTG_S22P[:2])
    with pytest.raises(ValueError, match="edit_valid must have shape"):
        mtg_discrimination(MTG_S12, MTG_S11P, MTG_S22P, edit_valid=np.ones((3, 3), bool))
