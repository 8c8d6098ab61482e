"""Render a report: the sections built once as neutral blocks, written as Markdown (figures as PNG files) and as one
self-contained HTML page (inline CSS, base64 PNG plots)."""

from __future__ import annotations

import base64
import html
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nearid.evaluation.evaluate import load_results
from nearid.evaluation.report.blocks import MISSING, Figure, Section, Table, dig
from nearid.evaluation.report.figures import cdf_figure, projection_figure, ssr_figure
from nearid.evaluation.report.sections import (
    dreambench_section,
    foreground_section,
    judge_section,
    mtg_section,
    per_source_section,
    summary_section,
    work_section,
)


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportFiles:
    """Where ``write_report`` put its outputs."""

    markdown: Path
    html: Path
    figures: tuple[Path, ...]


def build_sections(results: dict[str, Any]) -> list[Section]:
    """Every section of the report, in order; sections without data are left out."""
    sections = [
        summary_section(results),
        per_source_section(results, "full"),
        per_source_section(results, "foreground"),
        foreground_section(results),
        mtg_section(results),
        dreambench_section(results),
        judge_section(results),
        work_section(results),
    ]
    figures = tuple(f for f in (ssr_figure(results), cdf_figure(results), projection_figure(results)) if f)
    if figures:
        sections.append(Section("Plots", figures))
    return [s for s in sections if s is not None]


def _header_lines(results: dict[str, Any]) -> list[str]:
    lines = [
        f"Created {results.get('created_at', MISSING)}; scorers: {', '.join(s['label'] for s in results['scorers'])}."
    ]
    nearid = dig(results, "benchmarks", "nearid")
    if nearid:
        lines.append(
            f"NearID: {nearid['root']}, split {nearid['split']} ({nearid['identities']} identities), "
            f"sources {', '.join(nearid['sources'])}."
        )
    mtg = dig(results, "benchmarks", "mtg")
    if mtg:
        lines.append(f"MTG: {mtg['path']} ({mtg['samples']} samples, split {mtg['split']}).")
    dreambench = dig(results, "benchmarks", "dreambench")
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
