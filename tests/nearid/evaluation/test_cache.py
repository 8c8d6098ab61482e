"""The score cache: exact round trips, persistence, and refusals."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from nearid.evaluation.cache import EmbeddingCache, Judgement


def test_embeddings_round_trip_and_persist(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    vectors = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    with EmbeddingCache(path) as cache:
        cache.put_embeddings("fp", "full", ["a", "b", "c"], vectors)
        assert cache.known_images("fp", "full") == {"a", "b", "c"}
        assert cache.known_images("fp", "foreground") == set() and cache.known_images("other", "full") == set()
    with EmbeddingCache(path) as cache:
        got = cache.get_embeddings("fp", "full", ["c", "a", "c"])
        assert np.array_equal(got, vectors[[2, 0, 2]])
        with pytest.raises(KeyError, match="1 image"):
            cache.get_embeddings("fp", "full", ["a", "zz"])
        with pytest.raises(ValueError, match="non-finite"):
            cache.put_embeddings("fp", "full", ["d"], np.array([[np.nan, 1.0]]))
        with pytest.raises(ValueError, match="shape"):
            cache.put_embeddings("fp", "full", ["d", "e"], vectors)


def test_judgements_round_trip(tmp_path: Path) -> None:
    with EmbeddingCache(tmp_path / "c.sqlite") as cache:
        items = [("a", "b", Judgement(7.0, None, '{"score": 7}')), ("b", "a", Judgement(None, "no-json", "?"))]
        cache.put_judgements("judge", "full", items)
        assert cache.known_pairs("judge", "full") == {("a", "b"), ("b", "a")}
        got = cache.get_judgements("judge", "full", [("b", "a"), ("a", "b")])
        assert got == {("a", "b"): items[0][2], ("b", "a"): items[1][2]}
        with pytest.raises(KeyError):
            cache.get_judgements("judge", "full", [("a", "c")])


def test_judgement_and_format_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="either a score or a problem"):
        Judgement(5.0, "no-json", "")
    with pytest.raises(ValueError, match=r"\[0, 10\]"):
        Judgement(12.0, None, "")
    path = tmp_path / "c.sqlite"
    EmbeddingCache(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = 'something-else' WHERE key = 'format'")
    with pytest.raises(ValueError, match="remove it"):
        EmbeddingCache(path)
