"""One distractor shard, streamed: its memory stays bounded however large the shard grows.

Identity rows are read row group by row group; a view is decoded only when its batch is about to run; a finished
image is kept only as what the writer needs (its PNG, seed, prompt, QC values and working size), and every row
whose views are all done is handed to the shard writer at once, in input order, so the rows and their bytes are
those of a run that kept everything. A view that cannot be made is a reject with a reason, never the end of the
shard.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import nearid
from generators.base import GeneratedImage, Generator, GeneratorInputError, InpaintRequest
from generators.policy import derive_seed
from generators.prompts import PromptBook
from nearid.common.progress import progress_bar
from storage import ShardEntry, ShardWriter, TableReader, distractors_table
from storage.codecs import DecodeError, encode_png
from storage.schemas import MAX_VIEWS


logger = logging.getLogger(__name__)


def rejects_path(config: str, index: int) -> str:
    return f"rejects/{config}-{index:05d}.parquet"


@dataclass(frozen=True)
class Made:
    """What the shard writer needs of one finished image."""

    png: bytes
    seed: int
    prompt: str
    fg_change: float
    bg_change: float
    working_size: tuple[int, int]
    seconds: float

    @classmethod
    def of(cls, request: InpaintRequest, image: GeneratedImage) -> Made:
        return cls(
            encode_png(image.image),
            request.seed,
            request.prompt,
            image.fg_change,
            image.bg_change,
            image.raw.size,
            image.seconds,
        )


class ShardGenerator:
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
        self._made: OrderedDict[int, dict[int, Made]] = OrderedDict()  # rows read, not yet written
        self._waiting: dict[int, int] = {}  # views of each open row still in a batch
        self._rejects: list[dict] = []
        self._written = self._rows_in = 0
        self._seconds = 0.0
        self._filling: int | None = None
        self._provenance = self.generator.model_provenance()
        name = f"{config.name} {path.rsplit('/', 1)[-1]}"
        with (
            ShardWriter(self.root, distractors_table(config.name), path, digest) as writer,
            progress_bar(total=identities.rows, desc=name, unit="identity", enabled=self.progress, leave=False) as bar,
        ):
            batch: list[InpaintRequest] = []
            for row in reader.iter_rows(shards=[identities], decode=False):
                bar.update(1)
                if self.splits is not None and row["split"] not in self.splits:
                    continue
                self._rows_in += 1
                self._made[row["id"]], self._waiting[row["id"]] = {}, 0
                self._filling = row["id"]  # not written before all its views are queued
                for view in range(1, MAX_VIEWS + 1):
                    request = self._request(reader, identities.path, row, view)
                    if request is None:
                        continue
                    self._waiting[row["id"]] += 1
                    batch.append(request)
                    if len(batch) == config.batch_size:
                        self._run(batch, writer)
                        batch = []
                self._filling = None
                self._write_ready(writer)
            if batch:
                self._run(batch, writer)
            self._write_ready(writer)
            stats = {
                "rows_in": self._rows_in,
                "images_in": self._written + len(self._rejects),
                "images_written": self._written,
                "images_rejected": len(self._rejects),
                "generate_ms": round(1000 * self._seconds),
                "device": str(self.generator.device),
                "dtype": self.generator.dtype,  # "auto" resolved: provenance of the precision used
            }
            entry = writer.close(stats=stats)
        with ShardWriter(self.root, "rejects", rejects_path(config.name, index), digest) as reject_writer:
            for reject in self._rejects:
                reject_writer.write(reject)
        self.images_written += self._written
        self.images_rejected += len(self._rejects)
        return [entry, reject_writer.entry]

    # -- one view in, one image out --------------------------------------------------------------

    def _request(self, reader: TableReader, where: str, row: dict, view: int) -> InpaintRequest | None:
        """The decoded, checked request of one view, or None (absent, or refused: a reject is recorded)."""
        if row[f"images{view}"] is None:
            return None
        cells = {"id": row["id"], f"images{view}": row[f"images{view}"], f"masks{view}": row[f"masks{view}"]}
        try:  # one broken view is a reject naming its shard, id and column, not the end of the shard
            decoded = reader.decode_row(cells, where)
        except DecodeError as exc:
            self._rejects.append(self._reject(row["id"], view, "input-undecodable", str(exc)))
            return None
        request = InpaintRequest(
            identity_id=row["id"],
            view=view,
            image=decoded[f"images{view}"],
            mask=decoded[f"masks{view}"],
            prompt=self.book.prompt(row["id"]),
            seed=derive_seed(self.generator.config.name, row["id"], view),
        )
        try:
            self.generator.check_inputs(request)
        except GeneratorInputError as exc:
            self._rejects.append(self._reject(row["id"], view, exc.reason, exc.detail))
            return None
        return request

    def _run(self, batch: list[InpaintRequest], writer: ShardWriter) -> None:
        for request, outcome in zip(batch, self._generate(batch), strict=True):
            self._waiting[request.identity_id] -= 1
            if isinstance(outcome, Exception):
                reason = outcome.reason if isinstance(outcome, GeneratorInputError) else "generation-failed"
                detail = outcome.detail if isinstance(outcome, GeneratorInputError) else repr(outcome)
                self._rejects.append(self._reject(request.identity_id, request.view, reason, detail))
            else:
                self._made[request.identity_id][request.view] = Made.of(request, outcome)
        self._write_ready(writer)

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

    # -- rows out ---------------------------------------------------------------------------------

    def _write_ready(self, writer: ShardWriter) -> None:
        """Write, in input order, every leading row whose views are all done."""
        while self._made and (first := next(iter(self._made))) != self._filling and self._waiting[first] == 0:
            identity, made = self._made.popitem(last=False)
            del self._waiting[identity]
            if made:
                writer.write(self._row(identity, made))
                self._written += len(made)
                self._seconds += sum(m.seconds for m in made.values())

    def _row(self, identity: int, made: dict[int, Made]) -> dict[str, Any]:
        config = self.generator.config
        model_ids, revisions = self._provenance
        slots = [made.get(view) for view in range(1, MAX_VIEWS + 1)]
        out: dict[str, Any] = {
            "id": identity,
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
            "seeds": [m.seed if m else None for m in slots],
            "qc_fg_change": [round(m.fg_change, 5) if m else None for m in slots],
            "qc_bg_change": [round(m.bg_change, 5) if m else None for m in slots],
        }
        for view, m in enumerate(slots, start=1):
            out[f"nimg{view}"] = m.png if m else None
            out[f"prompts{view}"] = m.prompt if m else None
            if m:
                out["working_width"], out["working_height"] = m.working_size
        return out

    def _reject(self, identity: int, view: int, reason: str, detail: str) -> dict:
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
