"""Render a report: the sections built once as neutral blocks, written as Markdown (figures as PNG files) and as one
self-contained HTML page (inline CSS, base64 PNG plots)."""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from nearid.evaluation.evaluate import load_results
from nearid.evaluation.report.blocks import MISSING, Figure, Gallery, Section, Table, dig
from nearid.evaluation.report.figures import cdf_figure, projection_figure, ssr_figure
from nearid.evaluation.report.gallery import THUMB_PX, gallery_section
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
    sections.append(gallery_section(results))
    return [s for s in sections if s is not None]


def gallery_names(gallery: Gallery, item: int) -> list[str]:
    """File names of one gallery example's thumbnails in the Markdown copy's figure folder."""
    return [f"{gallery.name}-{item}-{k}.jpg" for k in range(len(gallery.items[item].images))]


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
            elif isinstance(block, Gallery):
                lines += [f"### {block.title}", "", f"*{block.caption}*", ""]
                for n, item in enumerate(block.items):
                    names = gallery_names(block, n)
                    pictures = zip(item.labels, names, strict=True)
                    lines.append(" ".join(f"![{label}]({figure_dir}/{name})" for label, name in pictures))
                    lines += ["", *(f"- {line}" for line in item.lines), ""]
            else:
                lines += [block, ""]
    text = "\n".join(lines).rstrip() + "\n"
    return re.sub(r"\n{3,}", "\n\n", text)


_JINJA = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
_JINJA.tests.update(
    table=lambda b: isinstance(b, Table),
    figure=lambda b: isinstance(b, Figure),
    gallery=lambda b: isinstance(b, Gallery),
)
_JINJA.filters["data_uri"] = lambda data, mime: f"data:{mime};base64,{base64.b64encode(data).decode()}"
_PAGE = _JINJA.from_string(
    """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>NearID evaluation report</title>
<style>
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #1f2328; }
h1 { font-size: 1.7rem; } h2 { font-size: 1.25rem; margin-top: 2rem; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 1rem; margin: 1.2rem 0 0.4rem; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.85rem; }
th, td { border: 1px solid #d0d7de; padding: 0.3rem 0.6rem; text-align: right; }
th { background: #f6f8fa; } td:first-child, th:first-child { text-align: left; }
caption { caption-side: bottom; text-align: left; font-style: italic; color: #59636e; padding-top: 0.3rem; }
figure { margin: 1rem 0; } figure > img { max-width: 100%; border: 1px solid #d0d7de; }
figcaption, .caption { font-style: italic; color: #59636e; } .meta { color: #59636e; }
.gallery { display: flex; flex-wrap: wrap; gap: 0.8rem; }
.example { border: 1px solid #d0d7de; padding: 0.4rem; font-size: 0.75rem; }
.example .tiles { display: flex; gap: 0.25rem; } .example .tile { text-align: center; color: #59636e; }
.example img { display: block; width: {{ thumb }}px; height: {{ thumb }}px; object-fit: contain; }
.example p { margin: 0.15rem 0; }
</style></head><body>
<h1>NearID evaluation report</h1>
{% for line in header %}<p class="meta">{{ line }}</p>
{% endfor %}
{% for section in sections %}
<h2>{{ section.title }}</h2>
{% for block in section.blocks %}
{% if block is table %}
<table>{% if block.caption %}<caption>{{ block.caption }}</caption>{% endif %}
<thead><tr>{% for h in block.header %}<th>{{ h }}</th>{% endfor %}</tr></thead><tbody>
{% for row in block.rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>
{% endfor %}</tbody></table>
{% elif block is figure %}
<figure><img alt="{{ block.caption }}" src="{{ block.png | data_uri('image/png') }}">
<figcaption>{{ block.caption }}</figcaption></figure>
{% elif block is gallery %}
<h3>{{ block.title }}</h3><p class="caption">{{ block.caption }}</p>
<div class="gallery">
{% for item in block.items %}<div class="example"><div class="tiles">
{% for image in item.images %}<div class="tile"><img alt="{{ item.labels[loop.index0] }}" \
src="{{ image | data_uri('image/jpeg') }}">{{ item.labels[loop.index0] }}</div>{% endfor %}
</div>{% for line in item.lines %}<p>{{ line }}</p>{% endfor %}</div>
{% else %}<p>No examples.</p>
{% endfor %}</div>
{% else %}
<p>{{ block }}</p>
{% endif %}
{% endfor %}
{% endfor %}
</body></html>
"""
)


def render_html(results: dict[str, Any], sections: Sequence[Section]) -> str:
    """The report as one HTML page with inline CSS, base64 PNG plots and JPEG gallery thumbnails."""
    return _PAGE.render(header=_header_lines(results), sections=sections, thumb=THUMB_PX)


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
            elif isinstance(block, Gallery):
                for n, item in enumerate(block.items):
                    for name, data in zip(gallery_names(block, n), item.images, strict=True):
                        (figure_dir / name).write_bytes(data)
    markdown = out / "report.md"
    markdown.write_text(render_markdown(results, sections))
    page = out / "report.html"
    page.write_text(render_html(results, sections))
    logger.info("wrote %s and %s", markdown, page)
    return ReportFiles(markdown, page, tuple(figures))
