"""Correlation metrics on hand-built inputs: Pearson, Fisher-z, the MTG oracle, M-O and M-O pair."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nearid.evaluation.metrics import fisher_z_mean, mo_pair, mo_score, mtg_oracle, pearson


NAN = math.nan
T, F = True, False


def test_pearson_matches_hand_value_and_numpy() -> None:
    # x = (1, 2, 3), y = (1, 2, 4): dx = (-1, 0, 1), dy = (-4/3, -1/3, 5/3); sxy = 3, sxx = 2, syy = 14/3
    # r = 3 / sqrt(2 * 14/3) = sqrt(27/28)
    assert pearson([1, 2, 3], [1, 2, 4]) == pytest.approx(math.sqrt(27 / 28), abs=1e-12)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    rng = np.random.default_rng(1)
    x = rng.normal(size=50)
    y = 0.3 * x + rng.normal(size=50)
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        ([1, 2, 3], [1, 2], "same length"),
        ([1], [2], "at least 2"),
        ([1, 1, 1], [1, 2, 3], "x is constant"),
        ([1, 2, 3], [0.5, 0.5, 0.5], "y is constant"),
        ([1, NAN, 3], [1, 2, 3], "x has non-finite"),
        ([[1, 2]], [[1, 2]], "must be 1-D"),
    ],
)
def test_pearson_refuses_bad_input(x: list, y: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pearson(x, y)


def test_fisher_z_mean() -> None:
    rs = np.array([0.1, 0.5, -0.3, 0.8])
    assert fisher_z_mean(rs) == pytest.approx(np.tanh(np.mean(np.arctanh(rs))), abs=1e-12)
    # arctanh(tanh(a)) = a: the mean of z = .2 and .4 is .3
    assert fisher_z_mean([math.tanh(0.2), math.tanh(0.4)]) == pytest.approx(math.tanh(0.3), abs=1e-12)
    # z is odd in r, so a symmetric pair averages to 0
    assert fisher_z_mean([0.5, -0.5]) == pytest.approx(0.0, abs=1e-12)


def test_fisher_z_mean_clips_perfect_correlations() -> None:
    # r = 1 is clipped to .9999 before arctanh, so the result is finite and equals the direct clipped formula
    assert fisher_z_mean([1.0, 0.5]) == pytest.approx(np.tanh(np.mean(np.arctanh([0.9999, 0.5]))), abs=1e-12)
    assert fisher_z_mean([1.0, 0.5], max_abs_r=0.999) == pytest.approx(
        np.tanh(np.mean(np.arctanh([0.999, 0.5]))), abs=1e-12
    )
    assert fisher_z_mean([1.0, -1.0]) == pytest.approx(0.0, abs=1e-12)
    assert fisher_z_mean([1.0]) == pytest.approx(0.9999, abs=1e-12)


@pytest.mark.parametrize(
    ("rs", "kwargs", "message"),
    [
        ([], {}, "at least one"),
        ([1.2, 0.1], {}, r"in \[-1, 1\]"),
        ([NAN, 0.1], {}, "finite"),
        ([0.1], {"max_abs_r": 1.0}, "max_abs_r"),
    ],
)
def test_fisher_z_mean_refuses_bad_input(rs: list, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fisher_z_mean(rs, **kwargs)


def test_mtg_oracle() -> None:
    obj = np.zeros((4, 4), dtype=bool)
    obj[:2] = True  # 8 object pixels
    part = np.zeros((4, 4), dtype=bool)
    part[0, :2] = True  # 2 part pixels
    assert mtg_oracle(obj, part) == pytest.approx(1 - 2 / 8)  # 0.75
    assert mtg_oracle(obj, np.zeros((4, 4), bool)) == pytest.approx(1.0)  # nothing edited
    assert mtg_oracle(obj, obj) == pytest.approx(0.0)  # whole object edited
    # documented edge cases: missing mask or empty object -> 0.0
    assert mtg_oracle(None, part) == 0.0
    assert mtg_oracle(obj, None) == 0.0
    assert mtg_oracle(np.zeros((4, 4), bool), part) == 0.0
    # 8-bit masks: any non-zero pixel is foreground by default, a threshold drops low JPEG noise
    obj8 = obj.astype(np.uint8) * 255
    part8 = part.astype(np.uint8) * 255
    part8[3, 3] = 3  # noise outside the object
    assert mtg_oracle(obj8, part8) == pytest.approx(1 - 3 / 8)
    assert mtg_oracle(obj8, part8, threshold=127) == pytest.approx(1 - 2 / 8)
    with pytest.raises(ValueError, match="same shape"):
        mtg_oracle(obj, part[:3])


O1 = np.array([0.9, 0.7, 0.5, 0.3, 0.1])
O2 = np.array([0.2, 0.4, 0.6, 0.8, 0.95])
S11P = np.array([0.95, 0.9, 0.7, 0.75, 0.5])
S22P = np.array([0.6, 0.65, 0.8, 0.85, 0.99])
S12P = np.array([0.5, 0.45, 0.6, 0.55, 0.7])
S21P = np.array([0.8, 0.7, 0.75, 0.6, 0.4])


def _direct_fisher(pairs: list[tuple[np.ndarray, np.ndarray]]) -> float:
    rs = [np.corrcoef(a, b)[0, 1] for a, b in pairs]
    return float(np.tanh(np.mean(np.arctanh(rs))))


def test_mo_score_and_mo_pair_match_direct_computation() -> None:
    expected_mo = _direct_fisher([(S11P, O1), (S22P, O2), (S12P, O2), (S21P, O1)])
    expected_pair = _direct_fisher([(S11P, O1), (S22P, O2)])
    assert mo_score(S11P, S22P, S12P, S21P, O1, O2) == pytest.approx(expected_mo, abs=1e-12)
    assert mo_pair(S11P, S22P, O1, O2) == pytest.approx(expected_pair, abs=1e-12)
    assert expected_mo != pytest.approx(expected_pair)  # the cross-background pairs do change the score


def test_mo_pair_hand_values() -> None:
    o = np.array([0.0, 0.5, 1.0])
    # s = 2o + .1 is a perfect positive correlation (r = 1, clipped to .9999), s = -o a perfect negative one
    assert mo_pair(2 * o + 0.1, 2 * o + 0.1, o, o) == pytest.approx(0.9999, abs=1e-12)
    assert mo_pair(2 * o + 0.1, -o, o, o) == pytest.approx(0.0, abs=1e-12)


def test_mo_score_valid_mask_and_nan() -> None:
    def extended(values: np.ndarray) -> np.ndarray:
        return np.append(values, NAN)  # a sixth sample whose scores are missing

    valid = np.array([T, T, T, T, T, F])
    columns = [extended(c) for c in (S11P, S22P, S12P, S21P, O1, O2)]
    assert mo_score(*columns, valid=valid) == pytest.approx(mo_score(S11P, S22P, S12P, S21P, O1, O2), abs=1e-12)
    assert mo_pair(columns[0], columns[1], columns[4], columns[5], valid=valid) == pytest.approx(
        mo_pair(S11P, S22P, O1, O2), abs=1e-12
    )
    with pytest.raises(ValueError, match=r"s_1_1p is non-finite at valid sample\(s\) \[5\]"):
        mo_score(*columns)
    with pytest.raises(ValueError, match="same length"):
        mo_pair(S11P, S22P[:4], O1, O2)
    with pytest.raises(ValueError, match="constant"):
        mo_pair(np.full(5, 0.5), S22P, O1, O2)
