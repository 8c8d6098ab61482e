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

import nearid
from generators.base import Generator, GeneratorInputError, InpaintRequest
from generators.config import GeneratorConfig
from generators.families import build_generator
from generators.policy import derive_seed
from generators.prompts import PromptBook
from generators.registry import get_config
from nearid.common.hashing import config_hash
from nearid.common.progress import progress_bar
from storage import ShardEntry, ShardWriter, TableReader, distractors_table, load_manifest
from storage.codecs import DecodeError, encode_png
from storage.jobs import run_shard_jobs
from storage.schemas import MAX_VIEWS


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


def rejects_path(config: str, index: int) -> str:
    return f"rejects/{config}-{index:05d}.parquet"


class _ShardGenerator:
    """Makes the distractor shard of one identities shard; runs in-process so the model stays resident."""

    def __init__(
        self,
        root: str,
        generator: Generator,
        book: PromptBook,
        device: str,
        dtype: str,
        progress: bool,
        splits: tuple[str, ...] | None = None,
    ) -> None:
        self.root, self.generator, self.book = root, generator, book
        self.device, self.dtype, self.progress = device, dtype, progress
        self.splits = splits
        self.images_written = self.images_rejected = 0

    def __call__(self, path: str, digest: str, job: tuple[int, ShardEntry]) -> list[ShardEntry]:
        index, identities = job
        config = self.generator.config
        if not self.generator.loaded:
            self.generator.load(self.device, self.dtype)
        reader = TableReader(self.root, "identities")
        rows = list(reader.iter_rows(shards=[identities], decode=False))
        if self.splits is not None:
            rows = [row for row in rows if row["split"] in self.splits]
        requests, rejects = [], []
        for row in rows:
            for view in range(1, MAX_VIEWS + 1):
                if row[f"images{view}"] is None:
                    continue
                cells = {"id": row["id"], f"images{view}": row[f"images{view}"], f"masks{view}": row[f"masks{view}"]}
                try:  # one broken view is a reject naming its shard, id and column, not the end of the shard
                    view_cells = reader.decode_row(cells, identities.path)
                except DecodeError as exc:
                    rejects.append(self._reject_view(row["id"], view, "input-undecodable", str(exc)))
                    continue
                request = InpaintRequest(
                    identity_id=row["id"],
                    view=view,
                    image=view_cells[f"images{view}"],
                    mask=view_cells[f"masks{view}"],
                    prompt=self.book.prompt(row["id"]),
                    seed=derive_seed(config.name, row["id"], view),
                )
                try:
                    self.generator.check_inputs(request)
                    requests.append(request)
                except GeneratorInputError as exc:
                    rejects.append(self._reject(request, exc.reason, exc.detail))
        results: dict[tuple[int, int], Any] = {}
        with progress_bar(
            total=len(requests),
            desc=f"{config.name} {path.rsplit('/', 1)[-1]}",
            unit="img",
            enabled=self.progress,
            leave=False,
        ) as bar:
            for start in range(0, len(requests), config.batch_size):
                batch = requests[start : start + config.batch_size]
                for request, outcome in zip(batch, self._generate(batch), strict=True):
                    if isinstance(outcome, Exception):
                        reason = outcome.reason if isinstance(outcome, GeneratorInputError) else "generation-failed"
                        detail = outcome.detail if isinstance(outcome, GeneratorInputError) else repr(outcome)
                        rejects.append(self._reject(request, reason, detail))
                    else:
                        results[(request.identity_id, request.view)] = (request, outcome)
                bar.update(len(batch))
        return self._write(path, digest, index, rows, results, rejects)

    def _generate(self, batch: list[InpaintRequest]) -> list[Any]:
        """Images for a batch; when the batch fails, each request alone, so one bad image fails alone."""
        try:
            return list(self.generator.generate(batch))
        except Exception as exc:  # a model error must not end the run: isolate the culprit
            if len(batch) == 1:
                logger.warning(
                    "%s: id %d view %d failed: %r",
                    self.generator.config.name,
                    batch[0].identity_id,
                    batch[0].view,
                    exc,
                )
                return [exc]
            return [self._generate([request])[0] for request in batch]

    def _reject(self, request: InpaintRequest, reason: str, detail: str) -> dict:
        return self._reject_view(request.identity_id, request.view, reason, detail)

    def _reject_view(self, identity: int, view: int, reason: str, detail: str) -> dict:
        config = self.generator.config.name
        return {
            "stage": "generate",
            "table": distractors_table(config),
            "id": identity,
            "view": view,
            "source": config,
            "reason": reason,
            "detail": detail,
        }

    def _write(
        self, path: str, digest: str, index: int, rows: list[dict], results: dict, rejects: list[dict]
    ) -> list[ShardEntry]:
        config = self.generator.config
        model_ids, revisions = self.generator.model_provenance()
        table = distractors_table(config.name)
        with ShardWriter(self.root, table, path, digest) as writer:
            for row in rows:
                slots = [results.get((row["id"], v)) for v in range(1, MAX_VIEWS + 1)]
                if all(s is None for s in slots):
                    continue
                out: dict[str, Any] = {
                    "id": row["id"],
                    "config": config.name,
                    "family": config.family,
                    "model_ids": model_ids,
                    "model_revisions": revisions,
                    "steps": config.steps,
                    "guidance": config.guidance,
                    "strength": config.strength,
                    "composited": config.composite,
                    "params_hash": config.params_hash(),
                    "code_version": nearid.__version__,
                    "seeds": [s[0].seed if s else None for s in slots],
                    "qc_fg_change": [round(s[1].fg_change, 5) if s else None for s in slots],
                    "qc_bg_change": [round(s[1].bg_change, 5) if s else None for s in slots],
                }
                for v, slot in enumerate(slots, start=1):
                    out[f"nimg{v}"] = encode_png(slot[1].image) if slot else None
                    out[f"prompts{v}"] = slot[0].prompt if slot else None
                    if slot:
                        out["working_width"], out["working_height"] = slot[1].raw.size
                writer.write(out)
            written = len(results)
            entry = writer.close(
                stats={
                    "rows_in": len(rows),
                    "images_in": written + len(rejects),
                    "images_written": written,
                    "images_rejected": len(rejects),
                    "generate_ms": round(1000 * sum(result.seconds for _, result in results.values())),
                }
            )
        with ShardWriter(self.root, "rejects", rejects_path(config.name, index), digest) as reject_writer:
            for reject in rejects:
                reject_writer.write(reject)
        self.images_written += written
        self.images_rejected += len(rejects)
        return [entry, reject_writer.entry]


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
    dtype: str = "float32",
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
        job_fn = _ShardGenerator(root, generator, book, device, dtype, progress, only)
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
