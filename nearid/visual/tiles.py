"""Small images with captions, laid out in labelled rows: the one drawing routine sheets and galleries share."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont


BACKGROUND = (255, 255, 255)
MISSING = (214, 218, 222)
TEXT = (31, 35, 40)
LINE_HEIGHT = 12
PAD = 6


@dataclass(frozen=True)
class Tile:
    """One cell: an image (None: nothing stored there) and the caption lines under it (ASCII: the fallback font
    has no other glyphs)."""

    image: Image.Image | None
    caption: tuple[str, ...] = ()


def thumbnail(image: Image.Image, size: int) -> Image.Image:
    """An RGB copy that fits in ``size`` x ``size`` (Lanczos), never enlarged past twice its size."""
    copy = image.convert("RGB")
    scale = min(size / copy.width, size / copy.height, 2.0)
    return copy.resize((max(1, round(copy.width * scale)), max(1, round(copy.height * scale))), Image.LANCZOS)


def mask_image(mask: np.ndarray) -> Image.Image:
    """A boolean object mask as a black-and-white picture (object white)."""
    return Image.fromarray(np.where(np.asarray(mask, dtype=bool), 255, 0).astype(np.uint8)).convert("RGB")


def jpeg_bytes(image: Image.Image, quality: int = 80) -> bytes:
    """The image as JPEG, for pages that must stay small (the report inlines them as ``data:`` URIs)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def tile_grid(rows: Sequence[tuple[str, Sequence[Tile]]], tile: int = 160, label_width: int = 110) -> Image.Image:
    """Rows of tiles, each row headed by its label; missing images are grey, captions sit under the tiles."""
    font = ImageFont.load_default()
    columns = max((len(tiles) for _, tiles in rows), default=1)
    caption_lines = max((len(t.caption) for _, tiles in rows for t in tiles), default=0)
    cell_w, cell_h = tile + PAD, tile + PAD + caption_lines * LINE_HEIGHT + PAD
    sheet = Image.new("RGB", (label_width + columns * cell_w + PAD, max(1, len(rows)) * cell_h + PAD), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for r, (label, tiles) in enumerate(rows):
        top = PAD + r * cell_h
        draw.text((PAD, top + tile // 2 - LINE_HEIGHT), label, fill=TEXT, font=font)
        for c, cell in enumerate(tiles):
            left = label_width + c * cell_w
            if cell.image is None:
                draw.rectangle((left, top, left + tile - 1, top + tile - 1), fill=MISSING)
                draw.text((left + tile // 2 - 12, top + tile // 2 - 6), "none", fill=TEXT, font=font)
            else:
                small = thumbnail(cell.image, tile)
                sheet.paste(small, (left + (tile - small.width) // 2, top + (tile - small.height) // 2))
            for k, line in enumerate(cell.caption):
                draw.text((left, top + tile + 2 + k * LINE_HEIGHT), line, fill=TEXT, font=font)
    return sheet
