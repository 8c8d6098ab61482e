"""``nearid report RUN``: render ``RUN/results.json`` as Markdown and as one self-contained HTML page.

Sections: a Table-1-style summary (NearID SSR/PA pooled over the primary sources, MTG SSR/PA, M-O, M-O pair,
DreamBench++ M-H), a Table-5-style per-source breakdown per condition, foreground-minus-full deltas (appendix
E.7), MTG and DreamBench++ tables, judge answer counts, the work each scorer did, and three plots: SSR per source,
the CDF of MTG edit scores against the oracle's (appendix E.3) and a 2-D kernel PCA of positives and distractors
(§4.3). The page is built once as neutral blocks and written twice; the HTML embeds its plots as base64 PNGs and
needs no other file.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nearid.evaluate import load_results
from nearid.metrics import SOURCE_GROUPS
from storage.dreambench import CATEGORIES


logger = logging.getLogger(__name__)

MISSING = "—"
GROUP_ROWS = (
    ("training", "Avg. (training)"),
    ("unseen_fill", "Avg. (unseen fill)"),
    ("unseen_canny", "Avg. (unseen Canny)"),
    ("primary", "Avg. (primary 7, Table 1)"),
    ("all", "Avg. (all 9)"),
    ("evaluated", "Avg. (every evaluated source)"),
)
SOURCE_KIND = (
    ("training", "training"),
    ("unseen_fill", "unseen fill"),
    ("unseen_canny", "unseen Canny"),
)
CATEGORY_NAMES = {
    "object": "object",
    "live_subject_animal": "animal",
    "live_subject_human": "human",
    "style": "style",
}


@dataclass(frozen=True)
class Table:
    """A captioned table of already formatted cells."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    caption: str = ""


@dataclass(frozen=True)
class Figure:
    """A plot as PNG bytes, with a file name for the Markdown copy."""

    name: str
    png: bytes
    caption: str


@dataclass(frozen=True)
class Section:
    """A titled run of paragraphs, tables and figures."""

    title: str
    blocks: tuple[str | Table | Figure, ...]


@dataclass(frozen=True)
class ReportFiles:
    """Where ``write_report`` put its outputs."""

    markdown: Path
    html: Path
    figures: tuple[Path, ...]


# -- formatting ---------------------------------------------------------------------------------------


def _pct(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}"


def _r(value: float | None) -> str:
    return MISSING if value is None else f"{value:.3f}"


def _delta(a: float | None, b: float | None, fmt: str) -> str:
    return MISSING if a is None or b is None else format(b - a, fmt)


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _pooled_group(scorer: dict[str, Any], condition: str) -> str | None:
    groups = _get(scorer, "nearid", condition, "groups") or {}
    return "primary" if "primary" in groups else ("evaluated" if "evaluated" in groups else None)


# -- sections -----------------------------------------------------------------------------------------


def _summary(results: dict[str, Any]) -> Section:
    rows = []
    group_used = set()
    for scorer in results["scorers"]:
        group = _pooled_group(scorer, "full")
        if group:
            group_used.add(group)
        pooled = _get(scorer, "nearid", "full", "groups", group) if group else None
        mtg = _get(scorer, "mtg", "full") or {}
        rows.append(
            (
                scorer["label"],
                _pct(_get(pooled, "ssr")),
                _pct(_get(pooled, "pa")),
                str(_get(pooled, "n_samples") or MISSING),
                _pct(mtg.get("ssr")),
                _pct(mtg.get("pa")),
                _r(mtg.get("mo")),
                _r(mtg.get("mo_pair")),
                _r(_get(scorer, "dreambench", "mh", "categories", "object", "mh")),
            )
        )
    header = ("Scorer", "NearID SSR", "NearID PA", "n", "MTG SSR", "MTG PA", "M–O", "M–O pair", "DB++ M–H")
    which = " / ".join(sorted(group_used)) or "none"
    caption = (
        f"Full images. NearID SSR and PA (%) pooled over the {which} sources (support-weighted); M–O and M–H are "
        "Fisher-z means of Pearson correlations; DB++ M–H is the object category."
    )
    return Section("Summary", (Table(header, tuple(rows), caption),))


def _per_source(results: dict[str, Any], condition: str) -> Section | None:
    scorers = [s for s in results["scorers"] if _get(s, "nearid", condition)]
    if not scorers:
        return None
    sources = list(scorers[0]["nearid"][condition]["sources"])
    header = ["Source", "Kind", "n"] + [f"{s['label']} {m}" for s in scorers for m in ("SSR", "PA")]
    rows = []
    for source in sources:
        kind = next((name for group, name in SOURCE_KIND if source in SOURCE_GROUPS[group]), "other")
        n = scorers[0]["nearid"][condition]["sources"][source]["n_samples"]
        cells = [source, kind, str(n)]
        for scorer in scorers:
            values = scorer["nearid"][condition]["sources"][source]
            cells += [_pct(values["ssr"]), _pct(values["pa"])]
        rows.append(tuple(cells))
    for group, label in GROUP_ROWS:
        pooled = [_get(s, "nearid", condition, "groups", group) for s in scorers]
        if pooled[0] is None:
            continue
        cells = [label, "pooled", str(pooled[0]["n_samples"])]
        for values in pooled:
            cells += [_pct(_get(values, "ssr")), _pct(_get(values, "pa"))]
        rows.append(tuple(cells))
    name = "full image" if condition == "full" else "foreground only"
    caption = (
        f"SSR and PA (%) per distractor source, {name}; n = identities with at least one trial. Averages pool "
        "wins and supports over their sources (a group is shown when all its sources were evaluated)."
    )
    return Section(f"Per-source discrimination, {name}", (Table(tuple(header), tuple(rows), caption),))


def _foreground(results: dict[str, Any]) -> Section | None:
    rows = []
    for scorer in results["scorers"]:
        if not (_get(scorer, "nearid", "foreground") or _get(scorer, "mtg", "foreground")):
            continue
        group = _pooled_group(scorer, "full")
        full = _get(scorer, "nearid", "full", "groups", group) if group else None
        fg = _get(scorer, "nearid", "foreground", "groups", group) if group else None
        mo_full, mo_fg = _get(scorer, "mtg", "full", "mo"), _get(scorer, "mtg", "foreground", "mo")
        rows.append(
            (
                scorer["label"],
                _pct(_get(full, "ssr")),
                _pct(_get(fg, "ssr")),
                _delta(_get(full, "ssr"), _get(fg, "ssr"), "+.2f"),
                _pct(_get(full, "pa")),
                _pct(_get(fg, "pa")),
                _delta(_get(full, "pa"), _get(fg, "pa"), "+.2f"),
                _r(mo_full),
                _r(mo_fg),
                _delta(mo_full, mo_fg, "+.3f"),
            )
        )
    if not rows:
        return None
    header = ("Scorer", "SSR full", "SSR FG", "Δ SSR", "PA full", "PA FG", "Δ PA", "M–O full", "M–O FG", "Δ M–O")
    caption = (
        "Foreground only (background blacked out with the view's cleaned mask, also on its distractor) minus full."
    )
    return Section("Foreground-only condition", (Table(header, tuple(rows), caption),))


def _mtg(results: dict[str, Any]) -> Section | None:
    rows = []
    for scorer in results["scorers"]:
        for condition, values in (scorer.get("mtg") or {}).items():
            rows.append(
                (
                    scorer["label"],
                    condition,
                    str(values["n_samples"]),
                    _pct(values["ssr"]),
                    _pct(values["pa"]),
                    _r(values.get("mo")),
                    _r(values.get("mo_pair")),
                    str(values.get("failed_trials", 0)),
                )
            )
    if not rows:
        return None
    header = ("Scorer", "Condition", "n", "SSR", "PA", "M–O", "M–O pair", "Failed trials")
    caption = (
        "Mind-the-Glitch: margins s(1,2) − s(1,1′) and s(1,2) − s(2,2′); oracle 1 − |part|/|object|. Failed trials "
        "are judge trials without a usable answer, counted as lost."
    )
    return Section("Mind-the-Glitch", (Table(header, tuple(rows), caption),))


def _dreambench(results: dict[str, Any]) -> Section | None:
    scorers = [s for s in results["scorers"] if _get(s, "dreambench", "mh")]
    if not scorers:
        return None
    header = ("Scorer", *(CATEGORY_NAMES[c] for c in CATEGORIES))
    rows = [
        (s["label"], *(_r(_get(s, "dreambench", "mh", "categories", c, "mh")) for c in CATEGORIES)) for s in scorers
    ]
    ceiling = [_r(_get(scorers[0], "dreambench", "mh", "categories", c, "human_human")) for c in CATEGORIES]
    rows.append(("human 1 vs human 2", *ceiling))
    blocks: list[str | Table | Figure] = [
        Table(
            header,
            tuple(rows),
            "M–H: Pearson r with each human group, averaged over the groups, Fisher-z mean over the seven methods.",
        )
    ]
    methods = _get(scorers[0], "dreambench", "mh", "methods") or []
    if methods and _get(scorers[0], "dreambench", "mh", "categories", "object"):
        method_rows = [
            (m, *(_r(_get(s, "dreambench", "mh", "categories", "object", "methods", m, "r")) for s in scorers))
            for m in methods
        ]
        blocks.append(
            Table(("Method", *(s["label"] for s in scorers)), tuple(method_rows), "Object category, per method.")
        )
    return Section("DreamBench++ human alignment", tuple(blocks))


def _judge(results: dict[str, Any]) -> Section | None:
    rows = []
    for scorer in results["scorers"]:
        judge = scorer.get("judge")
        if judge is None:
            continue
        share = 100.0 * judge["unparseable"] / judge["answers"] if judge["answers"] else None
        problems = ", ".join(f"{k}: {v}" for k, v in judge["problems"].items()) or "none"
        rows.append((scorer["label"], str(judge["answers"]), str(judge["unparseable"]), _pct(share), problems))
    if not rows:
        return None
    header = ("Scorer", "Answers", "Unparseable", "Unparseable %", "Problems")
    caption = "Unique judged pairs; an unusable answer loses every trial it takes part in and leaves the correlations."
    return Section("VLM judge answers", (Table(header, tuple(rows), caption),))


def _work(results: dict[str, Any]) -> Section:
    rows = []
    for scorer in results["scorers"]:
        for benchmark, stats in scorer.get("work", {}).items():
            rate = stats.get("per_second")
            rows.append(
                (
                    scorer["label"],
                    benchmark,
                    stats["unit"],
                    str(stats["naive"]),
                    str(stats["unique"]),
                    str(stats["cache_hits"]),
                    str(stats["shared"]),
                    str(stats["computed"]),
                    MISSING if rate is None else f"{rate:.1f}",
                )
            )
    header = ("Scorer", "Benchmark", "Unit", "Naive", "Unique", "Cache hits", "Shared", "Computed", "Per second")
    caption = (
        "Naive: what a per-source evaluation computes; unique: distinct inputs; cache hits: found in the score cache; "
        "shared: computed earlier in this run for another benchmark; computed: model work done now."
    )
    return Section("Work done", (Table(header, tuple(rows), caption),))


# -- figures ------------------------------------------------------------------------------------------


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _ssr_figure(results: dict[str, Any]) -> Figure | None:
    from matplotlib.figure import Figure as MplFigure

    conditions = [c for c in ("full", "foreground") if any(_get(s, "nearid", c) for s in results["scorers"])]
    if not conditions:
        return None
    figure = MplFigure(figsize=(10, 3.6 * len(conditions)), layout="constrained")
    axes = np.atleast_1d(figure.subplots(len(conditions), 1, squeeze=False)[:, 0])
    for ax, condition in zip(axes, conditions, strict=True):
        scorers = [s for s in results["scorers"] if _get(s, "nearid", condition)]
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


def _cdf_figure(results: dict[str, Any]) -> Figure | None:
    from matplotlib.figure import Figure as MplFigure

    scorers = [s for s in results["scorers"] if _get(s, "mtg", "full", "per_sample")]
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


def _projection_figure(results: dict[str, Any]) -> Figure | None:
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


# -- rendering ----------------------------------------------------------------------------------------


def build_sections(results: dict[str, Any]) -> list[Section]:
    """Every section of the report, in order; sections without data are left out."""
    sections = [
        _summary(results),
        _per_source(results, "full"),
        _per_source(results, "foreground"),
        _foreground(results),
        _mtg(results),
        _dreambench(results),
        _judge(results),
        _work(results),
    ]
    figures = tuple(f for f in (_ssr_figure(results), _cdf_figure(results), _projection_figure(results)) if f)
    if figures:
        sections.append(Section("Plots", figures))
    return [s for s in sections if s is not None]


def _header_lines(results: dict[str, Any]) -> list[str]:
    lines = [
        f"Created {results.get('created_at', MISSING)}; scorers: {', '.join(s['label'] for s in results['scorers'])}."
    ]
    nearid = _get(results, "benchmarks", "nearid")
    if nearid:
        lines.append(
            f"NearID: {nearid['root']}, split {nearid['split']} ({nearid['identities']} identities), "
            f"sources {', '.join(nearid['sources'])}."
        )
    mtg = _get(results, "benchmarks", "mtg")
    if mtg:
        lines.append(f"MTG: {mtg['path']} ({mtg['samples']} samples, split {mtg['split']}).")
    dreambench = _get(results, "benchmarks", "dreambench")
    if dreambench:
        lines.append(f"DreamBench++: {dreambench['samples']} ({dreambench['pairs']} pairs).")
    return lines


def _md_table(table: Table) -> list[str]:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(cell(h) for h in table.header) + " |", "|" + "---|" * len(table.header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in table.rows]
    if table.caption:
        lines += ["", f"*{table.caption}*"]
    return lines


def render_markdown(results: dict[str, Any], sections: Sequence[Section], figure_dir: str = "figures") -> str:
    """The report as Markdown; figures are referenced as ``figure_dir/<name>``."""
    lines = ["# NearID evaluation report", "", *_header_lines(results)]
    for section in sections:
        lines += ["", f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Table):
                lines += [*_md_table(block), ""]
            elif isinstance(block, Figure):
                lines += [f"![{block.caption}]({figure_dir}/{block.name})", "", f"*{block.caption}*", ""]
            else:
                lines += [block, ""]
    text = "\n".join(lines).rstrip() + "\n"
    return re.sub(r"\n{3,}", "\n\n", text)


_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #1f2328; }
h1 { font-size: 1.7rem; } h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #d0d7de; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.85rem; }
th, td { border: 1px solid #d0d7de; padding: 0.3rem 0.6rem; text-align: right; }
th { background: #f6f8fa; } td:first-child, th:first-child { text-align: left; }
caption { caption-side: bottom; text-align: left; font-style: italic; color: #59636e; padding-top: 0.3rem; }
figure { margin: 1rem 0; } img { max-width: 100%; border: 1px solid #d0d7de; }
figcaption { font-style: italic; color: #59636e; } .meta { color: #59636e; }
"""


def render_html(results: dict[str, Any], sections: Sequence[Section]) -> str:
    """The report as one HTML page with inline CSS and base64 PNG plots."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>NearID evaluation report</title><style>{_STYLE}</style></head><body>",
        "<h1>NearID evaluation report</h1>",
        *(f'<p class="meta">{esc(line)}</p>' for line in _header_lines(results)),
    ]
    for section in sections:
        parts.append(f"<h2>{esc(section.title)}</h2>")
        for block in section.blocks:
            if isinstance(block, Table):
                parts.append("<table>")
                if block.caption:
                    parts.append(f"<caption>{esc(block.caption)}</caption>")
                parts.append(
                    "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in block.header) + "</tr></thead><tbody>"
                )
                parts += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in block.rows]
                parts.append("</tbody></table>")
            elif isinstance(block, Figure):
                data = base64.b64encode(block.png).decode("ascii")
                parts.append(
                    f'<figure><img alt="{esc(block.caption)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{esc(block.caption)}</figcaption></figure>"
                )
            else:
                parts.append(f"<p>{esc(block)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(run_dir: str | Path, out_dir: str | Path | None = None) -> ReportFiles:
    """Render ``run_dir/results.json`` into ``out_dir`` (default ``run_dir/report``): ``report.md`` with
    ``figures/*.png``, and the self-contained ``report.html``."""
    results = load_results(run_dir)
    if not results.get("scorers"):
        raise ValueError(f"{run_dir}: results hold no scorer")
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "report"
    figure_dir = out / "figures"
    figure_dir.mkdir(parents=True, exist_ok=True)
    sections = build_sections(results)
    figures = []
    for section in sections:
        for block in section.blocks:
            if isinstance(block, Figure):
                path = figure_dir / block.name
                path.write_bytes(block.png)
                figures.append(path)
    markdown = out / "report.md"
    markdown.write_text(render_markdown(results, sections))
    page = out / "report.html"
    page.write_text(render_html(results, sections))
    logger.info("wrote %s and %s", markdown, page)
    return ReportFiles(markdown, page, tuple(figures))
