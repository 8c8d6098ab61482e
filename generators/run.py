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
    model_loads: int = 0
    """How many times the configuration's models were loaded (0 when every shard was complete)."""
    load_seconds: float = 0.0


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


class ResidentGenerator:
    """One configuration's generator, loaded on first use and kept resident for every shard asked of it after:
    a ``nearid generate`` run over a shard group, or a Ray actor pulling shards from a queue."""

    def __init__(
        self,
        root: str,
        config: str,
        device: str = "cpu",
        dtype: str = "auto",
        model_dir: str | None = None,
        overrides: Mapping[str, Any] | None = None,
        progress: bool = True,
        splits: Sequence[str] | None = None,
        revisions: Mapping[str, str] | None = None,
    ) -> None:
        self.root = root
        self.config = get_config(config).with_overrides(**(overrides or {})).with_revisions(dict(revisions or {}))
        self.only = normalise_splits(splits)
        self.progress = progress
        self.generator = build_generator(self.config, model_dir)
        self.book = prompt_book(root, self.config)
        self.job_fn = ShardGenerator(root, self.generator, self.book, device, dtype, progress, self.only)

    def run(self, shards: str | None = None, force: bool = False) -> GenerationSummary:
        """Write the selected shards that are not complete (``None``: all, and drop shards outside the plan)."""
        start = time.perf_counter()
        before = (self.job_fn.images_written, self.job_fn.images_rejected, self.generator.loads)
        load_before = self.generator.load_seconds
        every_shard = shard_plan(self.root, self.config, None, self.only, self.book)
        selected = set(parse_shards(shards, len(every_shard)))
        jobs = [(p.path, p.digest, self.job_fn, (p.index, p.identities)) for p in every_shard if p.index in selected]
        written, skipped = run_shard_jobs(
            self.root,
            distractors_table(self.config.name),
            jobs,
            force=force,
            progress=self.progress,
            companions=partial(_companion_rejects, self.config.name),
            plan={p.path: p.digest for p in every_shard},
            prune=shards is None,
        )
        return GenerationSummary(
            self.config.name,
            written,
            skipped,
            self.job_fn.images_written - before[0],
            self.job_fn.images_rejected - before[1],
            time.perf_counter() - start,
            self.generator.loads - before[2],
            self.generator.load_seconds - load_before,
        )


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
    """Write ``distractors/<config>`` shards for each configuration (see the module docstring), loading each
    configuration's models once; ``splits`` limits generation to identities of those splits (e.g. only ``test``
    for a benchmark); ``revisions`` pins hub models to commits (hub id -> commit)."""
    pins = dict(revisions or {})
    used = {m.hub_id for name in configs for m in get_config(name).models}
    if set(pins) - used:
        raise ValueError(f"--revision for models no chosen configuration loads: {sorted(set(pins) - used)}")
    return [
        ResidentGenerator(root, name, device, dtype, model_dir, overrides, progress, splits, pins).run(shards, force)
        for name in configs
    ]


def _companion_rejects(config: str, path: str) -> list[str]:
    index = int(path.rsplit("-", 1)[1].split(".")[0])
    return [rejects_path(config, index)]
