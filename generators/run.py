"""``nearid generate``: distractor shards for one or more configurations, without Prefect.

Shard k of ``distractors/<config>`` holds the distractors of shard k of ``identities``. A shard is
skipped when it is complete for the same configuration hash (generator parameters, the identities
shard's checksum, the prompts); the model stays resident across shards and batches; an image that
cannot be made is a reject with a reason, never the end of the run. Rows depend only on the inputs and the
configuration (the time a shard took goes to its manifest entry), so two runs write the same bytes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from generators.config import GeneratorConfig
from generators.families import build_generator
from generators.prompts import PromptBook
from generators.registry import get_config
from generators.shard_job import ShardGenerator, rejects_path
from nearid.common.hashing import config_hash
from storage import ShardEntry, TableReader, distractors_table, load_manifest
from storage.jobs import run_shard_jobs


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationSummary:
    """What one configuration's run wrote."""

    config: str
    shards_written: int
    shards_skipped: int
    images_written: int
    images_rejected: int
    seconds: float


def parse_shards(spec: str | None, count: int) -> list[int]:
    """``None``/``all`` -> every shard; ``0-3,7`` -> [0, 1, 2, 3, 7]; out-of-range is an error."""
    if spec is None or spec.strip() == "all":
        return list(range(count))
    chosen: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        try:
            low, _, high = part.partition("-")
            first, last = int(low), int(high or low)
        except ValueError as exc:
            raise ValueError(f"bad shard selection {part!r} in {spec!r}: use e.g. 0-3,7 or all") from exc
        if first > last or first < 0 or last >= count:
            raise ValueError(f"shard selection {part!r} is outside 0-{count - 1}")
        chosen.update(range(first, last + 1))
    return sorted(chosen)


@dataclass(frozen=True)
class PlannedShard:
    """One distractor shard to be made: its identities shard, where it goes and its config hash."""

    index: int
    identities: ShardEntry
    path: str
    digest: str


def normalise_splits(splits: Sequence[str] | None) -> tuple[str, ...] | None:
    """The split filter as recorded in the hash: sorted and unique, or None for every split."""
    only = tuple(sorted(set(splits))) if splits else None
    if only and set(only) - {"train", "val", "test"}:
        raise ValueError(f"unknown splits {sorted(set(only) - {'train', 'val', 'test'})}: use train, val, test")
    return only


def shard_plan(
    root: str, config: GeneratorConfig, shards: str | None, splits: Sequence[str] | None, book: PromptBook
) -> list[PlannedShard]:
    """The selected shards of ``config`` with the hash a run records: the configuration's parameters,
    the identities shard's checksum, the prompts and the split filter. The one place that formula lives."""
    identity_shards = load_manifest(root).table("identities")
    if not identity_shards:
        raise ValueError(f"{root} has no identities: curate first")
    only, table = normalise_splits(splits), distractors_table(config.name)
    plan = []
    for index in parse_shards(shards, len(identity_shards)):
        identities = identity_shards[index]
        payload = {"params": config.params_hash(), "identities": identities.sha256, "prompts": book.digest()}
        digest = config_hash({**payload, "splits": only})
        plan.append(PlannedShard(index, identities, identities.path.replace("identities/", f"{table}/", 1), digest))
    return plan


def prompt_book(root: str, config: GeneratorConfig) -> PromptBook:
    """The prompts of every identity under ``config``'s strategy (reads only two columns)."""
    reader = TableReader(root, "identities")
    descriptions = {}
    for batch in reader.iter_batches(["id", "category_description"], batch_size=65536):
        for identity, description in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True):
            descriptions[identity] = description or ""
    return PromptBook(descriptions, config.prompt_strategy, config.prompt_template)


def generate_distractors(
    root: str,
    configs: Sequence[str],
    shards: str | None = None,
    force: bool = False,
    device: str = "cpu",
    dtype: str = "auto",
    model_dir: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    progress: bool = True,
    splits: Sequence[str] | None = None,
    revisions: Mapping[str, str] | None = None,
) -> list[GenerationSummary]:
    """Write ``distractors/<config>`` shards for each configuration (see the module docstring);
    ``splits`` limits generation to identities of those splits (e.g. only ``test`` for a benchmark);
    ``revisions`` pins hub models to commits (hub id -> commit)."""
    only = normalise_splits(splits)
    pins = dict(revisions or {})
    used = {m.hub_id for name in configs for m in get_config(name).models}
    if set(pins) - used:
        raise ValueError(f"--revision for models no chosen configuration loads: {sorted(set(pins) - used)}")
    summaries = []
    for name in configs:
        start = time.perf_counter()
        config = get_config(name).with_overrides(**(overrides or {})).with_revisions(pins)
        generator = build_generator(config, model_dir)
        book = prompt_book(root, config)
        table = distractors_table(config.name)
        job_fn = ShardGenerator(root, generator, book, device, dtype, progress, only)
        every_shard = shard_plan(root, config, None, only, book)
        selected = set(parse_shards(shards, len(every_shard)))
        jobs = [(p.path, p.digest, job_fn, (p.index, p.identities)) for p in every_shard if p.index in selected]
        written, skipped = run_shard_jobs(
            root,
            table,
            jobs,
            force=force,
            progress=progress,
            companions=partial(_companion_rejects, config.name),
            plan={p.path: p.digest for p in every_shard},
            prune=shards is None,
        )
        summaries.append(
            GenerationSummary(
                config.name,
                written,
                skipped,
                job_fn.images_written,
                job_fn.images_rejected,
                time.perf_counter() - start,
            )
        )
    return summaries


def _companion_rejects(config: str, path: str) -> list[str]:
    index = int(path.rsplit("-", 1)[1].split(".")[0])
    return [rejects_path(config, index)]
