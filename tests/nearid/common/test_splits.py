import pytest

from nearid.common.splits import assign_splits, default_split_sizes


def test_default_sizes_reach_the_paper_caps() -> None:
    assert default_split_sizes(19386) == (100, 500)
    assert default_split_sizes(600) == (30, 90)
    assert default_split_sizes(3) == (1, 1)
    with pytest.raises(ValueError, match="at least 3"):
        default_split_sizes(2)


def test_assignment_is_stable_and_order_independent() -> None:
    ids = list(range(5, 500, 3))
    splits = assign_splits(ids, 10, 20)
    assert splits == assign_splits(list(reversed(ids)), 10, 20)
    counts = {s: sum(v == s for v in splits.values()) for s in ("train", "val", "test")}
    assert counts == {"train": len(ids) - 30, "val": 10, "test": 20}
    assert splits != assign_splits(ids, 10, 20, salt="other")
    # growing the pool never moves an old training identity into val/test (selection is by hash rank)
    grown = assign_splits(ids + list(range(1000, 1100)), 10, 20)
    assert all(splits[i] != "train" for i in ids if grown[i] != "train")


def test_refuses_impossible_sizes() -> None:
    with pytest.raises(ValueError, match="keep a train set"):
        assign_splits([1, 2, 3], 2, 1)
