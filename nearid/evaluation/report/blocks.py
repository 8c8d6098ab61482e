"""The neutral blocks a report is made of (tables, figures, galleries, sections) and the cell formatting they
share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


MISSING = "—"


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
class GalleryItem:
    """One example: its images (JPEG bytes) with a label each, and caption lines (scores, verdicts)."""

    images: tuple[bytes, ...]
    labels: tuple[str, ...]
    lines: tuple[str, ...]


@dataclass(frozen=True)
class Gallery:
    """A titled row of examples, with a caption saying what they were chosen for."""

    name: str
    title: str
    caption: str
    items: tuple[GalleryItem, ...]


@dataclass(frozen=True)
class Section:
    """A titled run of paragraphs, tables, figures and galleries."""

    title: str
    blocks: tuple[str | Table | Figure | Gallery, ...]


def pct(value: float | None) -> str:
    return MISSING if value is None else f"{value:.2f}"


def corr(value: float | None) -> str:
    return MISSING if value is None else f"{value:.3f}"


def delta(a: float | None, b: float | None, fmt: str) -> str:
    return MISSING if a is None or b is None else format(b - a, fmt)


def dig(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data
