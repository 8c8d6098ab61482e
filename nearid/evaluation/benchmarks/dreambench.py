"""DreamBench++: score generated images against their references, and M-H, the metric-human correlation.

Scores are ``100 x similarity(reference, generated)`` in the published metric rating layout
(``storage.dreambench``). M-H, per category: for each of the seven methods, the Pearson correlation of the metric
with each human group, averaged over the two groups; then the Fisher-z mean over the methods (appendix E.2). The
paper reports the ``object`` category. Items are matched by canonical key, never by position, and any mismatch
between a metric's items and the human ones stops the computation with the differing keys named.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from nearid.common.progress import progress_bar
from nearid.evaluation.images import ImageId, PairId, bytes_digest
from nearid.evaluation.metrics import fisher_z_mean, pearson
from storage.dreambench import (
    CATEGORIES,
    METHODS,
    DreamBenchLayoutError,
    canonical_key,
    category_of,
    iter_sample_pairs,
    read_ratings,
)


logger = logging.getLogger(__name__)

CONDITION = "full"
SCORE_SCALE = 100.0

Similarity = Callable[[ImageId, ImageId], float]
HumanRatings = Mapping[str, tuple[Mapping[str, float], Mapping[str, float]]]


class DreamBenchBenchmark:
    """The (reference, generated) pairs of a DreamBench++ samples folder, hashed by file content."""

    name = "dreambench"

    def __init__(self, samples_root: str | Path, progress: bool = True) -> None:
        self.root = Path(samples_root)
        self.pairs = list(iter_sample_pairs(self.root))
        self._paths: dict[str, Path] = {}
        digests: dict[Path, str] = {}
        self.records: list[tuple[str, str, str, str]] = []
        for pair in progress_bar(self.pairs, desc="hash DreamBench++", enabled=progress, leave=False):
            hashes = []
            for path in (pair.reference, pair.generated):
                if path not in digests:
                    digests[path] = bytes_digest(path.read_bytes())
                    self._paths.setdefault(digests[path], path)
                hashes.append(digests[path])
            self.records.append((pair.method, pair.key, hashes[0], hashes[1]))

    def image_uses(self) -> list[ImageId]:
        """Reference and generated image of every pair."""
        return [(CONDITION, h) for _, _, ref, gen in self.records for h in (ref, gen)]

    def pair_uses(self) -> list[PairId]:
        """(reference, generated) of every pair."""
        return [(CONDITION, ref, gen) for _, _, ref, gen in self.records]

    def _load(self, key: str) -> Image.Image:
        with Image.open(self._paths[key]) as image:
            return image.convert("RGB")

    def fetch_images(self, wanted: set[ImageId]) -> Iterator[tuple[ImageId, Image.Image]]:
        for image_id in sorted(wanted, key=lambda i: str(self._paths[i[1]])):
            yield image_id, self._load(image_id[1])

    def fetch_pairs(self, wanted: set[PairId]) -> Iterator[tuple[PairId, Image.Image, Image.Image]]:
        for pair in sorted(wanted, key=lambda p: str(self._paths[p[2]])):
            yield pair, self._load(pair[1]), self._load(pair[2])

    def ratings(self, similarity: Similarity) -> dict[str, dict[str, float]]:
        """Per method, metric key -> 100 x similarity (NaN where a judge gave no usable answer)."""
        out: dict[str, dict[str, float]] = {}
        for method, key, ref, gen in self.records:
            out.setdefault(method, {})[key] = SCORE_SCALE * similarity((CONDITION, ref), (CONDITION, gen))
        return out

    def describe(self) -> dict[str, Any]:
        return {"samples": str(self.root), "pairs": len(self.records), "methods": sorted({r[0] for r in self.records})}


def _canonical(method: str, scores: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in scores.items():
        canonical = canonical_key(key)
        if canonical in out:
            raise DreamBenchLayoutError(f"{method}: metric keys {key!r} and another one both name item {canonical!r}")
        out[canonical] = float(value)
    return out


def _correlation(x: np.ndarray, y: np.ndarray) -> tuple[float | None, str | None]:
    try:
        return pearson(x, y), None
    except ValueError as exc:
        return None, str(exc)


def mh_correlations(human: HumanRatings, metric: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """M-H per category (and the human-human agreement as a ceiling); see the module docstring.

    ``human`` maps method -> (group 1, group 2) ratings by canonical key, ``metric`` method -> scores by metric
    or canonical key. Every human-rated method must be scored, on exactly the human items. Items a judge could
    not score (NaN) are left out of that method's correlations and counted in ``excluded``.
    """
    methods = [m for m in METHODS if m in human] + sorted(set(human) - set(METHODS))
    missing = [m for m in methods if m not in metric]
    if missing:
        raise DreamBenchLayoutError(f"no metric scores for human-rated method(s) {missing}; scored: {sorted(metric)}")
    aligned: dict[str, dict[str, float]] = {}
    for method in methods:
        scores = _canonical(method, metric[method])
        only_metric = sorted(set(scores) - set(human[method][0]))
        only_human = sorted(set(human[method][0]) - set(scores))
        if only_metric or only_human:
            raise DreamBenchLayoutError(
                f"{method}: metric and human items differ: {len(only_human)} rated by humans only "
                f"(e.g. {only_human[:3]}), {len(only_metric)} scored by the metric only (e.g. {only_metric[:3]})"
            )
        aligned[method] = scores
    categories: dict[str, Any] = {}
    for category in CATEGORIES:
        per_method: dict[str, Any] = {}
        for method in methods:
            keys = sorted(k for k in human[method][0] if category_of(k) == category)
            if not keys:
                continue
            m = np.array([aligned[method][k] for k in keys])
            h1 = np.array([human[method][0][k] for k in keys])
            h2 = np.array([human[method][1][k] for k in keys])
            usable = np.isfinite(m)
            r1, e1 = _correlation(m[usable], h1[usable])
            r2, e2 = _correlation(m[usable], h2[usable])
            rh, _ = _correlation(h1, h2)
            per_method[method] = {
                "items": len(keys),
                "excluded": int((~usable).sum()),
                "r1": r1,
                "r2": r2,
                "r": None if r1 is None or r2 is None else (r1 + r2) / 2.0,
                "human_human": rh,
                "error": e1 or e2,
            }
        if not per_method:
            continue
        rs = [v["r"] for v in per_method.values()]
        human_rs = [v["human_human"] for v in per_method.values() if v["human_human"] is not None]
        undefined = [m for m, v in per_method.items() if v["r"] is None]
        categories[category] = {
            "mh": None if undefined else fisher_z_mean(rs),
            "error": f"undefined correlation for {undefined}" if undefined else None,
            "human_human": fisher_z_mean(human_rs) if human_rs else None,
            "items": sum(v["items"] for v in per_method.values()),
            "excluded": sum(v["excluded"] for v in per_method.values()),
            "methods": per_method,
        }
    return {"methods": methods, "categories": categories}


def mh_from_files(ratings_dir: str | Path, metric_dir: str | Path) -> dict[str, Any]:
    """M-H of a folder of published-layout metric files (``<metric_dir>/<method>.json``)."""
    from storage.dreambench import read_human_ratings

    human = read_human_ratings(ratings_dir)
    metric = {}
    for method in human:
        path = Path(metric_dir) / f"{method}.json"
        if not path.is_file():
            raise DreamBenchLayoutError(f"{metric_dir} has no {path.name}")
        metric[method] = read_ratings(path)
    return mh_correlations(human, metric)
