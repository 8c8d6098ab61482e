"""Checks on incoming rows that every writer shares, so what one entry point refuses, all refuse.

Each check raises :class:`RowProblem` with a stable reject code (the codes ``nearid validate`` reports for the
same defects) and a detail naming the value; a writer turns it into a reject row and goes on. Image sizes are
read from the file header before anything is decoded, so an oversized image costs nothing.
"""

from __future__ import annotations

import io
import math
import warnings
from typing import Any

import numpy as np
from PIL import Image

from storage.schemas import SPLITS


MAX_PIXELS = 8192 * 8192
"""Largest view accepted (67 MP): larger ones are refused from their header, before decoding."""
MAX_ID = 2**63 - 1


class RowProblem(ValueError):
    """An input row (or one of its views) cannot be used; ``code`` is the stable reject reason."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


def check_id(value: Any) -> int:
    """An identity id: an integer in [0, 2^63)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise RowProblem("bad-id", f"id must be an integer, got {_shown(value)}")
    if not 0 <= int(value) <= MAX_ID:
        raise RowProblem("bad-id", f"id {value} is outside [0, 2^63)")
    return int(value)


def check_text(value: Any, column: str) -> str | None:
    """Optional text that can be stored as UTF-8 (no lone surrogates, no NUL)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise RowProblem("bad-text", f"{column} must be text, got {_shown(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RowProblem("bad-text", f"{column} is not valid Unicode ({exc.reason} at {exc.start})") from exc
    if "\x00" in value:
        raise RowProblem("bad-text", f"{column} contains a NUL character")
    return value


def check_number(value: Any, column: str) -> float | None:
    """An optional finite number."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise RowProblem("bad-number", f"{column} must be a number, got {_shown(value)}")
    if not math.isfinite(float(value)):
        raise RowProblem("bad-number", f"{column} is {value}, not a finite number")
    return float(value)


def check_split(value: Any) -> str:
    if value not in SPLITS:
        raise RowProblem("bad-split", f"split {_shown(value)} is not one of {list(SPLITS)}")
    return value


def open_image(data: Any, what: str = "image") -> Image.Image:
    """An image opened from its header only, refused when unreadable or larger than :data:`MAX_PIXELS`."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise RowProblem(f"{what}-undecodable", f"{what} bytes are missing ({_shown(data)})")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked below
            image = Image.open(io.BytesIO(bytes(data)))
    except Image.DecompressionBombError as exc:
        raise RowProblem(f"{what}-too-large", f"{what}: {exc}") from exc
    except Exception as exc:  # PIL raises many types for broken or hostile files
        raise RowProblem(f"{what}-undecodable", f"{what}: {exc}") from exc
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise RowProblem(f"{what}-too-large", f"{what} is {width}x{height}, more than {MAX_PIXELS} pixels")
    return image


def _load(image: Image.Image, what: str) -> Image.Image:
    try:
        image.load()
    except Exception as exc:
        raise RowProblem(f"{what}-undecodable", f"{what}: {exc}") from exc
    return image


def open_view(image_data: Any, mask_data: Any) -> tuple[Image.Image, Image.Image]:
    """A view and its mask opened from their headers: missing, undecodable, too large or of another size is
    refused before a pixel is decoded."""
    image = open_image(image_data, "image")
    if mask_data is None:
        raise RowProblem("mask-missing", "the view has no mask")
    mask = open_image(mask_data, "mask")
    if mask.size != image.size:
        raise RowProblem(
            "mask-size-mismatch", f"mask is {mask.size[0]}x{mask.size[1]}, view is {image.size[0]}x{image.size[1]}"
        )
    return image, mask


def opaque_rgb(image: Image.Image) -> np.ndarray:
    """The pixels of an opaque colour view: greyscale is refused (no colour, no identity), CMYK too (converting
    without colour management would change colours silently), and so are transparent pixels; palette and fully
    opaque RGBA images are converted losslessly."""
    image = _load(image, "image")
    if image.mode in ("L", "LA", "1", "I", "I;16", "F"):
        raise RowProblem("greyscale-image", f"the view is {image.mode}: a view must show the object's colour")
    if image.mode == "CMYK":
        raise RowProblem("cmyk-image", "the view is CMYK: convert it to RGB with a colour-managed tool")
    if image.mode in ("RGBA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        if np.asarray(image)[..., 3].min() < 255:
            raise RowProblem("transparent-image", "the view has transparent pixels")
    return np.asarray(image.convert("RGB"))


def check_view(image_data: Any, mask_data: Any) -> tuple[np.ndarray, np.ndarray]:
    """An RGB view and its boolean mask, or the reason they cannot be used (:func:`open_view`,
    :func:`opaque_rgb`, and a mask with no foreground)."""
    image, mask = open_view(image_data, mask_data)
    rgb = opaque_rgb(image)
    binary = np.asarray(_load(mask, "mask").convert("L")) > 127
    if not binary.any():
        raise RowProblem("mask-empty", "the mask has no foreground pixel")
    return rgb, binary


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
