"""NearID discrimination: SSR and PA per distractor source, their pooling, and SSR/PA on Mind-the-Glitch.

Definitions follow the NearID paper: the bidirectional margins and SSR / PA of §3.4 (Eq. 4-5) and the source
groups of appendix E.4 (Table 5). Only numpy is imported.

Trials. For one identity with views ``p_i`` and a distractor ``n_i`` inpainted into the background of ``p_i``,
the directed trial ``i -> j`` (``i != j``) has margin ``s(p_i, p_j) - s(p_i, n_i)`` and is won when the margin
is strictly positive; a tie is a loss. A 3-view identity with all distractors has 6 trials, a 2-view one 2.
SSR is the percentage of identities whose every trial is won, PA the percentage of won trials. Pooling over
sources sums wins and supports (micro-average), as in paper §4.2 ("support-weighted averaging").

Differences from the authors' evaluation code (we follow the paper):
    * PA: the authors' table code also counts each sample's mean-margin win as one extra trial (7 trials
      for a 3-view sample, 3 for a 2-view one), which moves PA towards the per-sample mean. Here a trial is
      a directed margin only, as in Eq. 5. (Their training-time logger agrees with us.)
    * SSR: the column the authors' code names "SSR" is "mean margin > 0" per sample; the paper's SSR (their
      "SSRm") requires every directed margin to win, which is what ``Discrimination.ssr`` is.
    * Non-finite similarities: the authors drop a trial whose margin is NaN; here a NaN or infinite
      similarity that takes part in a trial raises ``ValueError`` naming the sample, so a broken scorer
      cannot silently lose (or gain) trials. Values in slots that are marked invalid are never read.
    * Slots: the authors' offline scorer compacts present images, so a missing middle view can pair a view
      with a distractor from another background. Inputs here are slot-aligned: distractor ``i`` always
      shares the background of view ``i``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from nearid.evaluation.metrics.arrays import bool_array, float_array


SOURCES: tuple[str, ...] = (
    "flux-fill-512",
    "flux-fill-1024",
    "qwen-512",
    "qwen-1328",
    "powerpaint",
    "sdxl-512",
    "sdxl-1024",
    "flux-canny-512",
    "flux-canny-1024",
)

# Source groups of paper appendix E.4, Table 5 ("Per-source discrimination breakdown"). Training sources are
# the rows marked with a dagger (FLUX.1-Fill and Qwen-Image, each at 512 and native resolution); the caption
# says "the remaining sources are unseen". "primary" is Table 5's "Avg. (all 7, main)", the seven fill-based
# sources that Table 1 reports; the two FLUX.1-Canny sources are excluded from it "due to the additional
# structural prior". "unseen" (all five non-training sources) is not a row of Table 5; the paper's "unseen"
# averages are split into "unseen_fill" (3) and "unseen_canny" (2).
SOURCE_GROUPS: dict[str, tuple[str, ...]] = {
    "primary": ("flux-fill-512", "flux-fill-1024", "qwen-512", "qwen-1328", "powerpaint", "sdxl-512", "sdxl-1024"),
    "all": SOURCES,
    "training": ("flux-fill-512", "flux-fill-1024", "qwen-512", "qwen-1328"),
    "unseen_fill": ("powerpaint", "sdxl-512", "sdxl-1024"),
    "unseen_canny": ("flux-canny-512", "flux-canny-1024"),
    "unseen": ("powerpaint", "sdxl-512", "sdxl-1024", "flux-canny-512", "flux-canny-1024"),
}


@dataclass(frozen=True)
class Discrimination:
    """Counts behind SSR and PA for one table of samples.

    Only counts are stored so that results pool exactly: ``ssr`` and ``pa`` are derived, in percent, and
    are NaN when there is no support (no sample with a trial), so an empty source never crashes a table.
    """

    n_samples: int
    sample_wins: int
    n_trials: int
    trial_wins: int

    def __post_init__(self) -> None:
        for name in ("n_samples", "sample_wins", "n_trials", "trial_wins"):
            value = operator.index(getattr(self, name))
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
            object.__setattr__(self, name, value)
        if self.sample_wins > self.n_samples:
            raise ValueError(f"sample_wins ({self.sample_wins}) exceeds n_samples ({self.n_samples})")
        if self.trial_wins > self.n_trials:
            raise ValueError(f"trial_wins ({self.trial_wins}) exceeds n_trials ({self.n_trials})")
        if self.n_samples > self.n_trials:
            raise ValueError(f"n_samples ({self.n_samples}) exceeds n_trials ({self.n_trials}); each has a trial")

    @property
    def ssr(self) -> float:
        """Sample Success Rate (%): samples whose every trial margin is > 0, over samples with a trial."""
        return 100.0 * self.sample_wins / self.n_samples if self.n_samples else math.nan

    @property
    def pa(self) -> float:
        """Pairwise Accuracy (%): trials with margin > 0 over all trials."""
        return 100.0 * self.trial_wins / self.n_trials if self.n_trials else math.nan

    def to_dict(self) -> dict[str, float | int]:
        """Metrics and supports as a flat dict, for tables and JSON."""
        return {
            "ssr": self.ssr,
            "pa": self.pa,
            "n_samples": self.n_samples,
            "sample_wins": self.sample_wins,
            "n_trials": self.n_trials,
            "trial_wins": self.trial_wins,
        }


def _tally(margin: np.ndarray, trial: np.ndarray) -> Discrimination:
    """Count samples and trials from margins [N, ...] and a same-shape trial mask (margins already checked)."""
    per_sample = tuple(range(1, trial.ndim))
    wins = trial & (np.where(trial, margin, 0.0) > 0)
    trials_per_sample = trial.sum(axis=per_sample)
    wins_per_sample = wins.sum(axis=per_sample)
    has_trial = trials_per_sample > 0
    return Discrimination(
        n_samples=int(has_trial.sum()),
        sample_wins=int((has_trial & (wins_per_sample == trials_per_sample)).sum()),
        n_trials=int(trials_per_sample.sum()),
        trial_wins=int(wins_per_sample.sum()),
    )


def discrimination(
    pos_sim: npt.ArrayLike,
    own_distractor_sim: npt.ArrayLike,
    view_valid: npt.ArrayLike,
    distractor_valid: npt.ArrayLike,
) -> Discrimination:
    """SSR and PA counts over N identities with V (2 or 3) slot-aligned views (paper §3.4, Eq. 4-5).

    Args:
        pos_sim: [N, V, V] similarities between views; trial ``i -> j`` reads ``pos_sim[n, i, j]``, so pass a
            symmetric matrix for a symmetric score. The diagonal is never read.
        own_distractor_sim: [N, V] similarity between view ``i`` and the distractor in view ``i``'s background.
        view_valid: [N, V] bool, the view exists.
        distractor_valid: [N, V] bool, the distractor for view ``i`` exists.

    A trial ``i -> j`` exists when views ``i`` and ``j`` and distractor ``i`` are valid. Samples without a
    trial are left out of ``n_samples``. A non-finite similarity used by a trial raises ``ValueError``.
    """
    pos = float_array("pos_sim", pos_sim, 3)
    n, v = pos.shape[0], pos.shape[1]
    if pos.shape[2] != v:
        raise ValueError(f"pos_sim must be [N, V, V], got shape {pos.shape}")
    if v not in (2, 3):
        raise ValueError(f"expected 2 or 3 views per sample, got V={v} (pos_sim shape {pos.shape})")
    own = float_array("own_distractor_sim", own_distractor_sim, 2)
    if own.shape != (n, v):
        raise ValueError(f"own_distractor_sim must have shape {(n, v)} to match pos_sim, got {own.shape}")
    views = bool_array("view_valid", view_valid, (n, v))
    distractors = bool_array("distractor_valid", distractor_valid, (n, v))

    trial = views[:, :, None] & views[:, None, :] & distractors[:, :, None] & ~np.eye(v, dtype=bool)
    with np.errstate(invalid="ignore"):
        margin = pos - own[:, :, None]
    bad = trial & ~np.isfinite(margin)
    if bad.any():
        s, i, j = (int(k) for k in np.argwhere(bad)[0])
        n_bad = int(bad.any(axis=(1, 2)).sum())
        raise ValueError(
            f"sample {s}: trial {i}->{j} uses a non-finite similarity (pos_sim[{s}, {i}, {j}]={pos[s, i, j]}, "
            f"own_distractor_sim[{s}, {i}]={own[s, i]}); {n_bad} sample(s) affected. Mark missing views or "
            "distractors invalid instead of passing NaN."
        )
    return _tally(margin, trial)


def pool(results: Mapping[str, Discrimination], sources: Iterable[str]) -> Discrimination:
    """Support-weighted pooling: sum wins and supports over ``sources`` (paper §4.2, Table 5 averages).

    Equals recomputing on the concatenated tables; differs from the unweighted mean of per-source rates
    whenever supports differ. Unknown or repeated sources raise (a repeat would count a source twice).
    """
    names = list(sources)
    if not names:
        raise ValueError("pool needs at least one source")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"sources listed more than once: {repeated}")
    missing = [name for name in names if name not in results]
    if missing:
        raise ValueError(f"no result for source(s) {missing}; available: {sorted(results)}")
    chosen = [results[name] for name in names]
    return Discrimination(
        n_samples=sum(r.n_samples for r in chosen),
        sample_wins=sum(r.sample_wins for r in chosen),
        n_trials=sum(r.n_trials for r in chosen),
        trial_wins=sum(r.trial_wins for r in chosen),
    )


def pool_group(results: Mapping[str, Discrimination], group: str) -> Discrimination:
    """Pool the sources of a named group of ``SOURCE_GROUPS`` (e.g. ``"primary"`` for Table 1)."""
    if group not in SOURCE_GROUPS:
        raise ValueError(f"unknown source group {group!r}; valid groups: {sorted(SOURCE_GROUPS)}")
    return pool(results, SOURCE_GROUPS[group])


def mtg_discrimination(
    s12: npt.ArrayLike,
    s1_1p: npt.ArrayLike,
    s2_2p: npt.ArrayLike,
    pair_valid: npt.ArrayLike | None = None,
    edit_valid: npt.ArrayLike | None = None,
) -> Discrimination:
    """SSR and PA on Mind-the-Glitch: margins ``s(1,2) - s(1,1')`` and ``s(1,2) - s(2,2')`` per sample.

    Args:
        s12: [N] similarity between the two originals (same object, two views and backgrounds).
        s1_1p: [N] similarity between original 1 and its part-edited version 1' (same background).
        s2_2p: [N] similarity between original 2 and its part-edited version 2'.
        pair_valid: [N] bool, both originals exist; default all True.
        edit_valid: [N, 2] bool, edits 1' and 2' exist; default all True.

    This is ``discrimination`` with two views, the edits as distractors: trial 1 exists when the pair and
    edit 1' are valid, trial 2 when the pair and edit 2' are valid. Non-finite values in a trial raise.
    """
    pair_sim = float_array("s12", s12, 1)
    n = pair_sim.shape[0]
    edit_columns = []
    for name, values in (("s1_1p", s1_1p), ("s2_2p", s2_2p)):
        column = float_array(name, values, 1)
        if column.shape != (n,):
            raise ValueError(f"{name} must have shape {(n,)} to match s12, got {column.shape}")
        edit_columns.append(column)
    edit_sim = np.stack(edit_columns, axis=1)
    pairs = np.ones(n, dtype=bool) if pair_valid is None else bool_array("pair_valid", pair_valid, (n,))
    edits = np.ones((n, 2), dtype=bool) if edit_valid is None else bool_array("edit_valid", edit_valid, (n, 2))

    trial = pairs[:, None] & edits
    with np.errstate(invalid="ignore"):
        margin = pair_sim[:, None] - edit_sim
    bad = trial & ~np.isfinite(margin)
    if bad.any():
        s, k = (int(i) for i in np.argwhere(bad)[0])
        edit_name = ("s1_1p", "s2_2p")[k]
        raise ValueError(
            f"sample {s}: MTG trial {k + 1} uses a non-finite similarity (s12={pair_sim[s]}, "
            f"{edit_name}={edit_sim[s, k]}); mark missing images invalid instead of passing NaN"
        )
    return _tally(margin, trial)
