import numpy as np
import pytest
from PIL import Image

from storage.codecs import DecodeError, decode_image, decode_mask, decode_rgb, encode_mask, encode_png


def test_png_round_trip_is_lossless() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    assert np.array_equal(np.asarray(decode_rgb(encode_png(rgb))), rgb)
    assert np.array_equal(np.asarray(decode_rgb(encode_png(Image.fromarray(rgb)))), rgb)


def test_mask_round_trip_and_binary_check() -> None:
    mask = np.zeros((9, 7), dtype=bool)
    mask[2:5, 1:4] = True
    assert np.array_equal(decode_mask(encode_mask(mask)), mask)
    assert np.array_equal(decode_mask(encode_mask(mask.astype(np.uint8) * 255)), mask)
    with pytest.raises(ValueError, match="not binary"):
        encode_mask(np.full((4, 4), 128, dtype=np.uint8))


def test_encode_refuses_non_rgb() -> None:
    with pytest.raises(ValueError, match="RGB"):
        encode_png(Image.new("RGBA", (4, 4)))
    with pytest.raises(ValueError, match="HxWx3"):
        encode_png(np.zeros((4, 4), dtype=np.uint8))


def test_truncated_png_is_a_decode_error() -> None:
    data = encode_png(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    with pytest.raises(DecodeError, match="undecodable"):
        decode_image(data[: len(data) // 2])
    with pytest.raises(DecodeError, match="RGB"):
        decode_rgb(encode_mask(np.ones((4, 4), dtype=bool)))
