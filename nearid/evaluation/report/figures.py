"""The report's plots: SSR per source, the CDF of MTG edit scores against the oracle's (appendix E.3) and a 2-D
kernel PCA of positives and distractors (§4.3). matplotlib is imported inside the functions that draw."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from nearid.evaluation.report.blocks import Figure, dig


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def ssr_figure(results: dict[str, Any]) -> Figure | None:
    from matplotlib.figure import Figure as MplFigure

    conditions = [c for c in ("full", "foreground") if any(dig(s, "nearid", c) for s in results["scorers"])]
    if not conditions:
        return None
    figure = MplFigure(figsize=(10, 3.6 * len(conditions)), layout="constrained")
    axes = np.atleast_1d(figure.subplots(len(conditions), 1, squeeze=False)[:, 0])
    for ax, condition in zip(axes, conditions, strict=True):
        scorers = [s for s in results["scorers"] if dig(s, "nearid", condition)]
        sources = list(scorers[0]["nearid"][condition]["sources"])
        width = 0.8 / len(scorers)
        x = np.arange(len(sources))
        for k, scorer in enumerate(scorers):
            values = [scorer["nearid"][condition]["sources"][s]["ssr"] for s in sources]
            ax.bar(
                x + k * width - 0.4 + width / 2,
                [np.nan if v is None else v for v in values],
                width,
                label=scorer["label"],
            )
        ax.set_xticks(x, sources, rotation=30, ha="right")
        ax.set_ylim(0, 100)
        ax.set_ylabel("SSR (%)")
        ax.set_title("full image" if condition == "full" else "foreground only")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, ncol=min(len(scorers), 4))
    return Figure("ssr_by_source.png", _png(figure), "SSR per distractor source and scorer.")


def cdf_figure(results: dict[str, Any]) -> Figure | None:
    from matplotlib.figure import Figure as MplFigure

    scorers = [s for s in results["scorers"] if dig(s, "mtg", "full", "per_sample")]
    if not scorers:
        return None
    figure = MplFigure(figsize=(6.5, 4.2), layout="constrained")
    ax = figure.subplots()
    first = scorers[0]["mtg"]["full"]["per_sample"]
    oracle = np.sort(np.array(first["o1"] + first["o2"], dtype=float))
    ax.step(oracle, np.arange(1, oracle.size + 1) / oracle.size, where="post", color="black", ls="--", label="oracle")
    for scorer in scorers:
        samples = scorer["mtg"]["full"]["per_sample"]
        scores = np.array([v for v in samples["s_1_1p"] + samples["s_2_2p"] if v is not None], dtype=float)
        if scores.size:
            scores = np.sort(scores)
            ax.step(scores, np.arange(1, scores.size + 1) / scores.size, where="post", label=scorer["label"])
    ax.set_xlabel("identity-preservation score of an edit: s(k, k′) or oracle")
    ax.set_ylabel("cumulative share of edits")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return Figure("mtg_score_cdf.png", _png(figure), "Empirical CDF of MTG edit scores against the part-level oracle.")


def projection_figure(results: dict[str, Any]) -> Figure | None:
    from matplotlib import colormaps
    from matplotlib.figure import Figure as MplFigure

    scorers = [s for s in results["scorers"] if s.get("projection")][:6]
    if not scorers:
        return None
    columns = min(3, len(scorers))
    rows = (len(scorers) + columns - 1) // columns
    figure = MplFigure(figsize=(4.2 * columns, 3.8 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    palette = colormaps["tab10"]
    for ax, scorer in zip(axes, scorers, strict=False):
        projection = scorer["projection"]
        for k, identity in enumerate(projection["identities"]):
            for role, marker in (("positive", "o"), ("distractor", "x")):
                pts = [
                    (p["x"], p["y"]) for p in projection["points"] if p["identity"] == identity and p["role"] == role
                ]
                if pts:
                    xs, ys = zip(*pts, strict=True)
                    ax.scatter(
                        xs,
                        ys,
                        marker=marker,
                        color=palette(k % 10),
                        s=40,
                        label=f"S{k + 1}" if role == "positive" else None,
                    )
        ax.set_title(f"{scorer['label']} ({projection['source']})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes[len(scorers) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=7, loc="best")
    caption = (
        "Kernel PCA (RBF) of positives (circles) and their matched-context distractors (crosses), "
        "one colour per identity."
    )
    return Figure("projection.png", _png(figure), caption)
