"""Lossless image and mask codecs (PNG) and the conversions around them.

PNG is the only codec: a lossy one would change the generator fingerprints that the benchmark measures.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


PNG_COMPRESS_LEVEL = 1
"""zlib level for PNG: at 512x512, level 1 encoded 5x faster than PIL's default 6 at the same size (±5 %);
``benchmarks/storage.py`` measures both. Decoders do not care which level wrote a file."""


class DecodeError(ValueError):
    """Raised when stored bytes are not a complete, decodable image."""


def encode_png(image: Image.Image | np.ndarray, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """Encode an RGB image (PIL or HxWx3 uint8 array) as PNG bytes."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 uint8 array, got shape {image.shape} dtype {image.dtype}")
        image = Image.fromarray(image, mode="RGB")
    if image.mode != "RGB":
        raise ValueError(f"expected an RGB image, got mode {image.mode!r}; convert it explicitly first")
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def encode_mask(mask: Image.Image | np.ndarray, compress_level: int = PNG_COMPRESS_LEVEL) -> bytes:
    """Encode a binary foreground mask as an 8-bit greyscale PNG holding only 0 and 255.

    Boolean arrays are taken as they are; uint8 arrays and PIL images must already be binary
    (0 and 255, or 0 and 1): cleaning and thresholding are the caller's job, not the codec's.
    """
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise ValueError(f"a mask must be 2-D, got shape {arr.shape}")
    if arr.dtype != np.bool_:
        values = np.unique(arr)
        if not (set(values.tolist()) <= {0, 255} or set(values.tolist()) <= {0, 1}):
            raise ValueError(f"mask is not binary: values {values[:8].tolist()}...")
        arr = arr > 0
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8) * 255, mode="L").save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def decode_image(data: bytes) -> Image.Image:
    """Decode PNG (or any PIL-readable) bytes fully into memory; raise :class:`DecodeError` if broken."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        raise DecodeError(f"undecodable image ({len(data)} bytes): {exc}") from exc
    return image


def decode_rgb(data: bytes) -> Image.Image:
    """Decode an image that must be RGB."""
    image = decode_image(data)
    if image.mode != "RGB":
        raise DecodeError(f"expected an RGB image, found mode {image.mode!r}")
    return image


def decode_rgb_array(data: bytes) -> np.ndarray:
    """Decode an RGB PNG straight into an ``H x W x 3`` uint8 array (OpenCV: the training hot path).

    The pixels equal :func:`decode_rgb`'s; anything that is not 8-bit RGB raises :class:`DecodeError`.
    """
    import cv2

    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DecodeError(f"undecodable image ({len(data)} bytes)")
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise DecodeError(f"expected an 8-bit RGB image, found shape {image.shape} dtype {image.dtype}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def decode_mask(data: bytes) -> np.ndarray:
    """Decode a stored mask into a boolean HxW array."""
    image = decode_image(data)
    if image.mode not in ("L", "1"):
        raise DecodeError(f"expected a greyscale mask, found mode {image.mode!r}")
    return np.asarray(image) > 0
