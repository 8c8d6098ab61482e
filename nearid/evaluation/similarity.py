"""Compute every similarity a benchmark needs exactly once per scorer and condition, through the cache.

A benchmark hands an engine its *uses*: every image (embedding scorers) or image pair (judges) that a naive
per-source evaluation would score, repeats included, and a *fetch* function that loads scorer inputs by id. The
engine scores only the unique uses that neither the persistent cache nor an earlier benchmark of this run already
holds, and counts all of it (``WorkStats``): naive uses, unique uses, cache hits, shared, computed.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

from nearid.common.progress import progress_bar
from nearid.evaluation.cache import EmbeddingCache, Judgement
from nearid.evaluation.images import ImageId, PairId
from nearid.evaluation.scorers import EmbeddingScorer, Scorer, VlmJudgeScorer


logger = logging.getLogger(__name__)

ImageFetch = Callable[[set[ImageId]], Iterator[tuple[ImageId, Image.Image]]]
PairFetch = Callable[[set[PairId]], Iterator[tuple[PairId, Image.Image, Image.Image]]]


@dataclass
class WorkStats:
    """What one benchmark asked of a scorer and what it cost (``unit``: images embedded or pairs judged)."""

    unit: Literal["images", "pairs"]
    naive: int = 0
    unique: int = 0
    cache_hits: int = 0
    shared: int = 0
    computed: int = 0
    model_calls: int = 0
    seconds: float = 0.0

    @property
    def per_second(self) -> float:
        """Computed units per second of the compute phase (fetching and decoding included, model loading not)."""
        return self.computed / self.seconds if self.computed and self.seconds > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "per_second": self.per_second}


class _Engine(ABC):
    """Shared bookkeeping: what the cache held before this run and what this run computed."""

    unit: Literal["images", "pairs"]

    def __init__(self, scorer: Scorer, cache: EmbeddingCache, batch_size: int, progress: bool) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.scorer = scorer
        self.cache = cache
        self.batch_size = batch_size
        self.progress = progress
        self._on_disk: dict[str, set[Any]] = {}
        self._computed: set[Any] = set()

    @abstractmethod
    def _known_on_disk(self, condition: str) -> set[Any]:
        """What the persistent cache holds for this scorer and condition (read once per condition)."""

    @staticmethod
    @abstractmethod
    def _disk_key(item: Any) -> Any:
        """How the cache names a use within its condition."""

    def _split(self, uses: Sequence[Any], stats: WorkStats) -> set[Any]:
        """Count uses and return the unique ones that still need computing."""
        unique = set(uses)
        stats.naive, stats.unique = len(uses), len(unique)
        missing = set()
        for item in unique:
            condition = item[0]
            if condition not in self._on_disk:
                self._on_disk[condition] = self._known_on_disk(condition)
            if self._disk_key(item) in self._on_disk[condition]:
                stats.cache_hits += 1
            elif item in self._computed:
                stats.shared += 1
            else:
                missing.add(item)
        stats.computed = len(missing)
        return missing

    def _batches(self, items: Iterable[Any], total: int, desc: str) -> Iterator[list[Any]]:
        batch: list[Any] = []
        for item in progress_bar(
            items, total=total, desc=desc, unit=self.unit[:-1], enabled=self.progress, leave=False
        ):
            batch.append(item)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch:
            yield batch


class EmbeddingEngine(_Engine):
    """Embeds each unique image once; similarity is the cosine of the cached unit vectors."""

    unit = "images"

    def __init__(self, scorer: EmbeddingScorer, cache: EmbeddingCache, batch_size: int, progress: bool) -> None:
        super().__init__(scorer, cache, batch_size, progress)
        self._vectors: dict[ImageId, np.ndarray] = {}

    def _known_on_disk(self, condition: str) -> set[str]:
        return self.cache.known_images(self.scorer.fingerprint, condition)

    @staticmethod
    def _disk_key(item: ImageId) -> str:
        return item[1]

    def run(self, benchmark: str, uses: Sequence[ImageId], fetch: ImageFetch) -> WorkStats:
        """Make sure every used image has an embedding; returns the counts of this benchmark."""
        stats = WorkStats(unit="images")
        missing = self._split(uses, stats)
        if missing:
            self.scorer.load()
        start = time.perf_counter()
        if missing:
            produced: set[ImageId] = set()
            desc = f"{self.scorer.label} {benchmark}"
            for batch in self._batches(fetch(set(missing)), len(missing), desc):
                batch = list({image_id: image for image_id, image in batch if image_id not in produced}.items())
                if not batch:
                    continue
                vectors = self.scorer.embed([image for _, image in batch])
                stats.model_calls += 1
                by_condition: dict[str, list[int]] = {}
                for row, (image_id, _) in enumerate(batch):
                    by_condition.setdefault(image_id[0], []).append(row)
                for condition, rows in by_condition.items():
                    keys = [batch[row][0][1] for row in rows]
                    self.cache.put_embeddings(self.scorer.fingerprint, condition, keys, vectors[rows])
                for row, (image_id, _) in enumerate(batch):
                    self._vectors[image_id] = vectors[row]
                produced.update(image_id for image_id, _ in batch)
            if produced != missing:
                lost = sorted(missing - produced)[:3]
                raise RuntimeError(
                    f"{benchmark}: fetch produced no image for {len(missing - produced)} id(s), e.g. {lost}"
                )
            self._computed |= produced
        stats.seconds = time.perf_counter() - start
        self._load_vectors(set(uses))
        logger.info("%s %s: %s", self.scorer.label, benchmark, stats.to_dict())
        return stats

    def _load_vectors(self, ids: set[ImageId]) -> None:
        by_condition: dict[str, list[str]] = {}
        for condition, key in ids:
            if (condition, key) not in self._vectors:
                by_condition.setdefault(condition, []).append(key)
        for condition, keys in by_condition.items():
            vectors = self.cache.get_embeddings(self.scorer.fingerprint, condition, keys)
            self._vectors.update({(condition, key): vector for key, vector in zip(keys, vectors, strict=True)})

    def vector(self, image: ImageId) -> np.ndarray:
        """The unit embedding of a used image."""
        return self._vectors[image]

    def similarity(self, a: ImageId, b: ImageId) -> float:
        """Cosine similarity of two used images."""
        return float(np.dot(self._vectors[a], self._vectors[b]))


class JudgeEngine(_Engine):
    """Judges each unique ordered pair once; similarity is score / 10, NaN for an unusable answer."""

    unit = "pairs"

    def __init__(self, scorer: VlmJudgeScorer, cache: EmbeddingCache, batch_size: int, progress: bool) -> None:
        super().__init__(scorer, cache, batch_size, progress)
        self._judgements: dict[PairId, Judgement] = {}

    def _known_on_disk(self, condition: str) -> set[tuple[str, str]]:
        return self.cache.known_pairs(self.scorer.fingerprint, condition)

    @staticmethod
    def _disk_key(item: PairId) -> tuple[str, str]:
        return item[1], item[2]

    def run(self, benchmark: str, uses: Sequence[PairId], fetch: PairFetch) -> WorkStats:
        """Make sure every used pair has a judgement; returns the counts of this benchmark."""
        stats = WorkStats(unit="pairs")
        missing = self._split(uses, stats)
        if missing:
            self.scorer.load()
        start = time.perf_counter()
        if missing:
            produced: set[PairId] = set()
            desc = f"{self.scorer.label} {benchmark}"
            for batch in self._batches(fetch(set(missing)), len(missing), desc):
                batch = list({item[0]: item for item in batch if item[0] not in produced}.values())
                if not batch:
                    continue
                answers = self.scorer.judge([(a, b) for _, a, b in batch])
                stats.model_calls += 1
                by_condition: dict[str, list[tuple[str, str, Judgement]]] = {}
                for (pair, _, _), (verdict, answer) in zip(batch, answers, strict=True):
                    judgement = verdict.judgement(answer)
                    self._judgements[pair] = judgement
                    by_condition.setdefault(pair[0], []).append((pair[1], pair[2], judgement))
                    produced.add(pair)
                for condition, items in by_condition.items():
                    self.cache.put_judgements(self.scorer.fingerprint, condition, items)
            if produced != missing:
                lost = sorted(missing - produced)[:2]
                raise RuntimeError(
                    f"{benchmark}: fetch produced no pair for {len(missing - produced)} id(s), e.g. {lost}"
                )
            self._computed |= produced
        stats.seconds = time.perf_counter() - start
        self._load_judgements(set(uses))
        logger.info("%s %s: %s", self.scorer.label, benchmark, stats.to_dict())
        return stats

    def _load_judgements(self, pairs: set[PairId]) -> None:
        by_condition: dict[str, list[tuple[str, str]]] = {}
        for condition, a, b in pairs:
            if (condition, a, b) not in self._judgements:
                by_condition.setdefault(condition, []).append((a, b))
        for condition, items in by_condition.items():
            found = self.cache.get_judgements(self.scorer.fingerprint, condition, items)
            self._judgements.update({(condition, a, b): j for (a, b), j in found.items()})

    def similarity(self, a: ImageId, b: ImageId) -> float:
        """score / 10 of the judged pair (A, B) under their shared condition, NaN if the answer was unusable."""
        if a[0] != b[0]:
            raise ValueError(f"images of different conditions cannot be judged together: {a[0]!r} and {b[0]!r}")
        judgement = self._judgements[(a[0], a[1], b[1])]
        return math.nan if judgement.score is None else judgement.score / 10.0

    def answers(self, pairs: Iterable[PairId]) -> dict[str, Any]:
        """Answer counts over the unique ``pairs``: total, unparseable and per problem."""
        unique = set(pairs)
        problems = Counter(self._judgements[pair].problem for pair in unique if self._judgements[pair].problem)
        return {
            "answers": len(unique),
            "unparseable": sum(problems.values()),
            "problems": dict(sorted(problems.items())),
        }


def make_engine(
    scorer: Scorer, cache: EmbeddingCache, batch_size: int, progress: bool
) -> EmbeddingEngine | JudgeEngine:
    """The engine for a scorer's kind."""
    if isinstance(scorer, EmbeddingScorer):
        return EmbeddingEngine(scorer, cache, batch_size, progress)
    if isinstance(scorer, VlmJudgeScorer):
        return JudgeEngine(scorer, cache, batch_size, progress)
    raise ValueError(f"no engine for scorer {scorer.label!r} of kind {scorer.kind!r}")
