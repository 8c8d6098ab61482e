"""``nearid evaluate``: run scorers over the NearID, MTG and DreamBench++ benchmarks and write ``results.json``.

Every benchmark is hashed once; then, scorer by scorer, an engine (``nearid.evaluation.similarity``) computes each
unique input once through the cache, and the benchmark turns similarities into metrics. ``results.json`` holds the
configuration, what each benchmark contained, and per scorer: its fingerprint, NearID SSR/PA per condition and
source with pooled groups, MTG SSR/PA, M-O and M-O pair with per-sample scores, DreamBench++ M-H per category,
judge answer counts, a 2-D projection for the report and the work done (naive, unique, cached, computed).
DreamBench++ scores are also written as rating files, ``RUN/dreambench/<scorer>/<method>.json``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nearid.evaluation.benchmarks.nearid import SPLITS
from nearid.evaluation.cache import EmbeddingCache
from nearid.evaluation.images import CONDITIONS, check_conditions
from nearid.evaluation.scorers import Scorer


logger = logging.getLogger(__name__)

RESULTS_NAME = "results.json"
RESULTS_FORMAT = "nearid-evaluation"
RESULTS_VERSION = 1
CACHE_NAME = "score-cache.sqlite"


@dataclass(frozen=True)
class EvaluationConfig:
    """What to evaluate: a dataset split and its sources, MTG, DreamBench++; at least one of the three."""

    data: str | None = None
    sources: tuple[str, ...] | None = None
    split: str = "test"
    conditions: tuple[str, ...] = CONDITIONS
    mtg: str | None = None
    mtg_split: str | None = "test"
    dreambench_samples: str | None = None
    dreambench_ratings: str | None = None
    batch_size: int = 32
    projection_identities: int = 7
    progress: bool = True

    def __post_init__(self) -> None:
        if self.data is None and self.mtg is None and self.dreambench_samples is None:
            raise ValueError("nothing to evaluate: give a dataset root, an MTG dataset or DreamBench++ samples")
        if self.split not in SPLITS:
            raise ValueError(f"unknown split {self.split!r}; choose from {list(SPLITS)}")
        object.__setattr__(self, "conditions", check_conditions(self.conditions))
        if self.sources is not None:
            if not self.sources:
                raise ValueError("sources, when given, must name at least one distractor source")
            object.__setattr__(self, "sources", tuple(self.sources))
        if self.dreambench_ratings is not None and self.dreambench_samples is None:
            raise ValueError("DreamBench++ human ratings need DreamBench++ samples to score")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.projection_identities < 0:
            raise ValueError(f"projection_identities must be >= 0, got {self.projection_identities}")


def safe_name(label: str) -> str:
    """A scorer label as a folder name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "scorer"


def json_safe(value: Any) -> Any:
    """Nested data with NaN and infinities replaced by None (strict JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(json_safe(payload), indent=2, allow_nan=False) + "\n")
    tmp.replace(path)


def _check_labels(scorers: Sequence[Scorer]) -> None:
    labels = [s.label for s in scorers]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"scorers given more than once: {repeated}")
    if not scorers:
        raise ValueError("at least one scorer is needed")


def evaluate(
    config: EvaluationConfig,
    scorers: Sequence[Scorer],
    out_dir: str | Path,
    cache: EmbeddingCache | None = None,
) -> dict[str, Any]:
    """Evaluate ``scorers`` as ``config`` says, write ``out_dir/results.json`` and return its content.

    ``cache`` defaults to ``out_dir/score-cache.sqlite``, so evaluating a run folder again computes nothing.
    """
    from nearid.evaluation.benchmarks.dreambench import DreamBenchBenchmark, mh_correlations
    from nearid.evaluation.benchmarks.mtg import MTGBenchmark
    from nearid.evaluation.benchmarks.nearid import NearIDBenchmark
    from nearid.evaluation.similarity import EmbeddingEngine, make_engine
    from storage.dreambench import read_human_ratings, write_ratings

    _check_labels(scorers)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    own_cache = cache is None
    cache = cache or EmbeddingCache(out / CACHE_NAME)
    start = time.perf_counter()
    nearid = mtg = dreambench = None
    if config.data is not None:
        nearid = NearIDBenchmark(config.data, config.split, config.sources, config.conditions, config.progress)
    if config.mtg is not None:
        mtg = MTGBenchmark(config.mtg, config.mtg_split, config.conditions, config.progress)
    if config.dreambench_samples is not None:
        dreambench = DreamBenchBenchmark(config.dreambench_samples, config.progress)
    human = read_human_ratings(config.dreambench_ratings) if config.dreambench_ratings else None

    results: dict[str, Any] = {
        "format": RESULTS_FORMAT,
        "version": RESULTS_VERSION,
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "config": asdict(config),
        "benchmarks": {
            "nearid": nearid.describe() if nearid else None,
            "mtg": mtg.describe() if mtg else None,
            "dreambench": {**dreambench.describe(), "ratings": config.dreambench_ratings} if dreambench else None,
        },
        "cache": str(cache.path) if cache.path else None,
        "scorers": [],
    }
    try:
        for scorer in scorers:
            engine = make_engine(scorer, cache, config.batch_size, config.progress)
            embedding = isinstance(engine, EmbeddingEngine)
            entry: dict[str, Any] = {**scorer.describe(), "work": {}}
            used_pairs: list[Any] = []
            for benchmark in (b for b in (nearid, mtg, dreambench) if b is not None):
                if embedding:
                    uses = benchmark.image_uses()
                    stats = engine.run(benchmark.name, uses, benchmark.fetch_images)
                else:
                    uses = benchmark.pair_uses()
                    stats = engine.run(benchmark.name, uses, benchmark.fetch_pairs)
                    used_pairs += uses
                entry["work"][benchmark.name] = stats.to_dict()
            if nearid is not None:
                entry["nearid"] = nearid.metrics(engine.similarity)
                if embedding:
                    entry["projection"] = nearid.projection(engine.vector, config.projection_identities)
            if mtg is not None:
                entry["mtg"] = mtg.metrics(engine.similarity)
            if dreambench is not None:
                ratings = dreambench.ratings(engine.similarity)
                folder = out / "dreambench" / safe_name(scorer.label)
                for method, scores in ratings.items():
                    write_ratings(folder / f"{method}.json", scores)
                entry["dreambench"] = {
                    "ratings_dir": str(folder),
                    "mh": mh_correlations(human, ratings) if human is not None else None,
                }
            if not embedding:
                entry["judge"] = engine.answers(used_pairs)
            results["scorers"].append(entry)
            scorer.unload()
    finally:
        if own_cache:
            cache.close()
    results["seconds"] = time.perf_counter() - start
    _write_json(out / RESULTS_NAME, results)
    logger.info("wrote %s", out / RESULTS_NAME)
    return json_safe(results)


def load_results(run_dir: str | Path) -> dict[str, Any]:
    """Read ``RUN/results.json`` (a run folder or the file itself), checking its format."""
    path = Path(run_dir)
    path = path / RESULTS_NAME if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no {RESULTS_NAME} at {path}: run `nearid evaluate` first")
    data = json.loads(path.read_text())
    if data.get("format") != RESULTS_FORMAT or data.get("version") != RESULTS_VERSION:
        raise ValueError(f"{path} is not a nearid evaluation results file of version {RESULTS_VERSION}")
    return data
