"""Galleries: the tuples behind the numbers, as small thumbnails with the cosine each scorer gave them.

Per source, a few example tuples (anchor view, another view of the same object, the anchor's distractor: a
different object in the anchor's own background). When a trained model was evaluated next to a frozen one: the
trained model's worst failures, and the frozen model's failures that training fixed. Scores come from the
per-identity similarities in ``results.json``; images are read from the evaluated dataset, so a report rendered
where the data is not says so instead.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nearid.evaluation.benchmarks.nearid import VIEW_PAIRS
from nearid.evaluation.report.blocks import Gallery, GalleryItem, Section, dig
from nearid.visual import jpeg_bytes, thumbnail
from storage import TableReader, distractors_table


logger = logging.getLogger(__name__)

THUMB_PX = 96
"""Thumbnail side: 40 examples of 3 JPEG thumbnails keep the page well under a megabyte of images."""
PER_SOURCE = 2
FAILURES = 6


Scores = dict[int, tuple[list, list]]
"""Identity id -> (view-pair cosines, view-distractor cosines) of one scorer on one source."""


@dataclass(frozen=True)
class Trial:
    """One directed trial: view ``i`` of ``identity`` against view ``j`` and against its own distractor."""

    source: str
    identity: int
    i: int
    j: int


def _scores(scorer: dict[str, Any], source: str) -> Scores:
    sims = dig(scorer, "nearid", "full", "sources", source, "similarities") or {}
    columns = (sims.get("ids", []), sims.get("views", []), sims.get("distractors", []))
    return {i: (v, d) for i, v, d in zip(*columns, strict=True)}


def trial_scores(scores: Scores, trial: Trial) -> tuple[float, float] | None:
    """(s(view i, view j), s(view i, distractor i)) of a trial, or None when either is missing."""
    if trial.identity not in scores:
        return None
    views, distractors = scores[trial.identity]
    pos = views[VIEW_PAIRS.index((min(trial.i, trial.j), max(trial.i, trial.j)))]
    neg = distractors[trial.i]
    return None if pos is None or neg is None else (pos, neg)


def trials(scores: Scores, source: str, identity: int) -> Iterator[tuple[Trial, float]]:
    """Every scored trial of an identity with its margin (positive: the true view wins)."""
    for i in range(len(scores[identity][1])):
        for j in range(len(scores[identity][1])):
            trial = Trial(source, identity, i, j)
            pair = trial_scores(scores, trial) if i != j else None
            if pair is not None:
                yield trial, pair[0] - pair[1]


def worst_trial(scores: Scores, source: str, identity: int) -> tuple[Trial, float] | None:
    """The identity's trial with the lowest margin: the sample succeeds exactly when this margin is > 0."""
    return min(trials(scores, source, identity), key=lambda t: t[1], default=None)


class _Images:
    """Thumbnails of stored views and distractors: one row read per table and identity."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.readers: dict[str, TableReader] = {}

    def _row(self, table: str, identity: int, columns: list[str]) -> dict[str, Any]:
        if table not in self.readers:
            self.readers[table] = TableReader(self.root, table)
        return self.readers[table].get(identity, columns=["id", *columns])

    def tuple_of(self, trial: Trial) -> tuple[bytes, ...]:
        anchor, other, distractor = f"images{trial.i + 1}", f"images{trial.j + 1}", f"nimg{trial.i + 1}"
        views = self._row("identities", trial.identity, [anchor, other])
        painted = self._row(distractors_table(trial.source), trial.identity, [distractor])
        pictures = (views[anchor], views[other], painted[distractor])
        return tuple(jpeg_bytes(thumbnail(picture, THUMB_PX)) for picture in pictures)


def _item(images: _Images, trial: Trial, scored: list[tuple[str, dict[str, Scores]]]) -> GalleryItem:
    lines = [f"{trial.source} · id {trial.identity} · view {trial.i + 1} vs {trial.j + 1}"]
    for label, by_source in scored:
        pair = trial_scores(by_source[trial.source], trial)
        if pair is not None:
            verdict = "✓" if pair[0] > pair[1] else "✗"
            lines.append(f"{verdict} {label}: view {pair[0]:.3f} · distractor {pair[1]:.3f}")
    labels = ("anchor", "same object", "distractor")
    return GalleryItem(images.tuple_of(trial), labels, tuple(lines))


def _examples(scores: Scores, source: str) -> list[Trial]:
    chosen = []
    for identity in sorted(scores):
        trial = Trial(source, identity, 0, 1)
        if trial_scores(scores, trial) is not None:
            chosen.append(trial)
        if len(chosen) == PER_SOURCE:
            break
    return chosen


def _worst(by_source: dict[str, Scores], keep: Any) -> list[Trial]:
    found = []
    for source, scores in by_source.items():
        for identity in scores:
            worst = worst_trial(scores, source, identity)
            if worst is not None and keep(worst):
                found.append(worst)
    return [trial for trial, _ in sorted(found, key=lambda t: (t[1], t[0].source, t[0].identity))[:FAILURES]]


def gallery_section(results: dict[str, Any]) -> Section | None:
    """The galleries of a results file whose NearID run recorded per-identity similarities."""
    scorers = [s for s in results["scorers"] if dig(s, "nearid", "full", "sources")]
    root = dig(results, "benchmarks", "nearid", "root")
    if not scorers or not root:
        return None
    sources = list(scorers[0]["nearid"]["full"]["sources"])
    scored = [(s["label"], {source: _scores(s, source) for source in sources}) for s in scorers]
    if not any(scored[0][1].values()):
        return None  # results written before per-identity similarities were recorded
    images = _Images(root)

    def items(chosen: list[Trial]) -> tuple[GalleryItem, ...]:
        return tuple(_item(images, trial, scored) for trial in chosen)

    blocks: list[Any] = []
    try:
        examples = [trial for source in sources for trial in _examples(scored[0][1][source], source)]
        caption = (
            f"The first {PER_SOURCE} identities of each source: an anchor view, another view of the same object, and "
            "the distractor in the anchor's background, with each scorer's cosine to both (✓: the view is closer)."
        )
        blocks.append(Gallery("examples", "Examples per source", caption, items(examples)))
        trained = [k for k, s in enumerate(scorers) if s.get("training_sources")]
        frozen = [k for k, s in enumerate(scorers) if not s.get("training_sources")]
        if trained:
            label, model = scored[trained[0]]
            caption = f"The identities {label} gets most wrong: its lowest-margin trial each."
            worst = _worst(model, lambda t: t[1] <= 0)
            blocks.append(Gallery("worst", "Worst failures of the trained model", caption, items(worst)))
        if trained and frozen:
            (label, model), (frozen_label, before) = scored[trained[0]], scored[frozen[0]]

            def fixed(worst: tuple[Trial, float]) -> bool:
                after = worst_trial(model[worst[0].source], worst[0].source, worst[0].identity)
                return worst[1] <= 0 and after is not None and after[1] > 0

            caption = (
                f"Identities {frozen_label} failed (its worst trial shown) and {label} gets right on every trial."
            )
            blocks.append(Gallery("fixed", "Failures fixed by training", caption, items(_worst(before, fixed))))
    except (OSError, KeyError, ValueError) as exc:
        logger.warning("gallery left out: %s", exc)
        return Section("Galleries", (f"Images could not be read from {root} ({exc}); the galleries are left out.",))
    return Section("Galleries", tuple(blocks))
