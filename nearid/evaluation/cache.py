"""A persistent cache of what scorers computed: embeddings per image, judge scores per image pair.

Entries are keyed by (scorer fingerprint, condition, image hash), or (fingerprint, condition, hash A, hash B) for
a judge, so an image shared by several benchmarks or distractor sources is computed once per scorer and condition,
and a second evaluation of the same data with the same model computes nothing. The store is one SQLite file
(atomic commits, safe to interrupt); ``path=None`` keeps it in memory.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


logger = logging.getLogger(__name__)

CACHE_FORMAT = "nearid-score-cache-1"
_CHUNK = 500  # keys per SELECT ... IN (...), well under SQLite's variable limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS embeddings (
    scorer TEXT NOT NULL, condition TEXT NOT NULL, image TEXT NOT NULL, vector BLOB NOT NULL,
    PRIMARY KEY (scorer, condition, image)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS judgements (
    scorer TEXT NOT NULL, condition TEXT NOT NULL, image_a TEXT NOT NULL, image_b TEXT NOT NULL,
    score REAL, problem TEXT, answer TEXT NOT NULL,
    PRIMARY KEY (scorer, condition, image_a, image_b)
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class Judgement:
    """One judge answer: ``score`` on the judge's 0-10 scale, or None with the ``problem`` that made it unusable."""

    score: float | None
    problem: str | None
    answer: str

    def __post_init__(self) -> None:
        if (self.score is None) == (self.problem is None):
            raise ValueError(
                f"a judgement has either a score or a problem, got score={self.score} problem={self.problem}"
            )
        if self.score is not None and not (math.isfinite(self.score) and 0.0 <= self.score <= 10.0):
            raise ValueError(f"judge score must be finite and in [0, 10], got {self.score}")


class EmbeddingCache:
    """Embeddings (float32) and judge answers in one SQLite file; see the module docstring."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = None if path is None else Path(path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(":memory:" if self.path is None else str(self.path))
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta (key, value) VALUES ('format', ?)", (CACHE_FORMAT,))
            self._db.commit()
        elif row[0] != CACHE_FORMAT:
            raise ValueError(f"{self.path} is a cache of format {row[0]!r}, expected {CACHE_FORMAT!r}; remove it")

    def close(self) -> None:
        """Close the database (every write is already committed)."""
        self._db.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- embeddings -------------------------------------------------------------------------------

    def known_images(self, scorer: str, condition: str) -> set[str]:
        """Hashes of every image with an embedding for this scorer and condition."""
        rows = self._db.execute("SELECT image FROM embeddings WHERE scorer = ? AND condition = ?", (scorer, condition))
        return {image for (image,) in rows}

    def put_embeddings(self, scorer: str, condition: str, images: Sequence[str], vectors: np.ndarray) -> None:
        """Store one row of ``vectors`` [N, D] per image hash (replacing any earlier value)."""
        array = np.asarray(vectors, dtype=np.float32)
        if array.ndim != 2 or array.shape[0] != len(images):
            raise ValueError(f"expected vectors of shape [{len(images)}, D], got {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError(f"refusing to cache non-finite embeddings for scorer {scorer[:12]}")
        self._db.executemany(
            "INSERT OR REPLACE INTO embeddings (scorer, condition, image, vector) VALUES (?, ?, ?, ?)",
            [(scorer, condition, image, row.tobytes()) for image, row in zip(images, array, strict=True)],
        )
        self._db.commit()

    def get_embeddings(self, scorer: str, condition: str, images: Sequence[str]) -> np.ndarray:
        """Embeddings [N, D] in the order of ``images``; a hash without an entry raises ``KeyError``."""
        found: dict[str, bytes] = {}
        unique = list(dict.fromkeys(images))
        for start in range(0, len(unique), _CHUNK):
            chunk = unique[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            query = f"SELECT image, vector FROM embeddings WHERE scorer = ? AND condition = ? AND image IN ({marks})"
            found.update(self._db.execute(query, (scorer, condition, *chunk)).fetchall())
        missing = [image for image in unique if image not in found]
        if missing:
            raise KeyError(f"{len(missing)} image(s) have no {condition!r} embedding, e.g. {missing[:3]}")
        if not images:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([np.frombuffer(found[image], dtype=np.float32) for image in images])

    # -- judge answers ----------------------------------------------------------------------------

    def known_pairs(self, scorer: str, condition: str) -> set[tuple[str, str]]:
        """(image A, image B) hash pairs with a stored judgement for this scorer and condition."""
        rows = self._db.execute(
            "SELECT image_a, image_b FROM judgements WHERE scorer = ? AND condition = ?", (scorer, condition)
        )
        return {(a, b) for a, b in rows}

    def put_judgements(self, scorer: str, condition: str, items: Iterable[tuple[str, str, Judgement]]) -> None:
        """Store judge answers for ordered image pairs (replacing any earlier value)."""
        self._db.executemany(
            "INSERT OR REPLACE INTO judgements (scorer, condition, image_a, image_b, score, problem, answer) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(scorer, condition, a, b, j.score, j.problem, j.answer) for a, b, j in items],
        )
        self._db.commit()

    def get_judgements(
        self, scorer: str, condition: str, pairs: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], Judgement]:
        """Stored judgements of ``pairs``; a pair without an entry raises ``KeyError``."""
        found: dict[tuple[str, str], Judgement] = {}
        wanted = set(pairs)
        by_first: dict[str, set[str]] = {}
        for a, b in wanted:
            by_first.setdefault(a, set()).add(b)
        firsts = list(by_first)
        for start in range(0, len(firsts), _CHUNK):
            chunk = firsts[start : start + _CHUNK]
            marks = ",".join("?" * len(chunk))
            query = (
                "SELECT image_a, image_b, score, problem, answer FROM judgements "
                f"WHERE scorer = ? AND condition = ? AND image_a IN ({marks})"
            )
            for a, b, score, problem, answer in self._db.execute(query, (scorer, condition, *chunk)):
                if b in by_first[a]:
                    found[(a, b)] = Judgement(score, problem, answer)
        missing = [pair for pair in wanted if pair not in found]
        if missing:
            raise KeyError(f"{len(missing)} image pair(s) have no {condition!r} judgement, e.g. {missing[:2]}")
        return found
