"""Image message <-> NumPy for the encodings cameras publish (no cv_bridge, no ROS needed)."""

import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from ocdit_ros.ros.image_codec import ImageError, compressed_to_rgb, fill_image, image_to_rgb


def msg(arr, encoding, big_endian=False, pad=0):
    arr = np.ascontiguousarray(arr)
    h, w = arr.shape[:2]
    raw = (arr.astype(arr.dtype.newbyteorder(">" if big_endian else "<")).tobytes() if arr.dtype.itemsize > 1
           else arr.tobytes())
    row = len(raw) // h
    data = b"".join(raw[r * row:(r + 1) * row] + b"\0" * pad for r in range(h))
    return SimpleNamespace(height=h, width=w, step=row + pad, encoding=encoding, is_bigendian=int(big_endian),
                           data=data)


RGB = np.random.default_rng(0).integers(0, 255, (5, 7, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding,arr", [
    ("rgb8", RGB), ("bgr8", RGB[..., ::-1]), ("8UC3", RGB[..., ::-1]),
    ("rgba8", np.dstack([RGB, np.full((5, 7), 9, np.uint8)])), ("bgra8", np.dstack([RGB[..., ::-1], RGB[..., :1]])),
])
def test_colour_encodings_become_rgb(encoding, arr):
    assert np.array_equal(image_to_rgb(msg(arr, encoding)), RGB)
    assert np.array_equal(image_to_rgb(msg(arr, encoding, pad=3)), RGB)  # row padding (step > width)


def test_mono_and_16_bit_and_big_endian():
    mono = RGB[..., 0]
    assert np.array_equal(image_to_rgb(msg(mono, "mono8")), np.dstack([mono] * 3))
    m16 = mono.astype(np.uint16) * 257
    for big in (False, True):
        out = image_to_rgb(msg(m16, "mono16", big_endian=big))
        assert np.array_equal(out[..., 0], mono)


def test_fill_image_round_trip_and_compressed():
    m = fill_image(SimpleNamespace(), RGB, "rgb8")
    assert (m.height, m.width, m.step) == (5, 7, 21)
    assert np.array_equal(image_to_rgb(m), RGB)
    labels = np.arange(35, dtype=np.uint16).reshape(5, 7)
    lab = fill_image(SimpleNamespace(), labels, "mono16")
    assert lab.step == 14 and np.array_equal(np.frombuffer(lab.data, np.uint16).reshape(5, 7), labels)
    buf = io.BytesIO()
    Image.fromarray(RGB).save(buf, format="PNG")
    assert np.array_equal(compressed_to_rgb(SimpleNamespace(format="png", data=buf.getvalue())), RGB)
    with pytest.raises(ImageError, match="cannot decode"):
        compressed_to_rgb(SimpleNamespace(format="jpeg", data=b"garbage"))


@pytest.mark.parametrize("change,why", [
    (dict(encoding="yuv422"), "unsupported encoding"),
    (dict(height=0), "empty image"),
    (dict(width=9000), "limit"),
    (dict(step=2), "step 2 is smaller"),
    (dict(data=b"\0" * 10), "data has 10 bytes"),
])
def test_malformed_messages_say_why(change, why):
    m = msg(RGB, "rgb8")
    for k, v in change.items():
        setattr(m, k, v)
    with pytest.raises(ImageError, match=why):
        image_to_rgb(m)


# 16-bit words whose two bytes differ, so reading them in the wrong byte order changes the image:
# 0x1234 = 4660 -> round(4660 / 257) = 18, but read byte-swapped 0x3412 = 13330 -> 52.
WORDS = np.array([[0x1234, 0xFF00, 0x00FF], [0x0100, 0xABCD, 0x8001]], np.uint16)
WORDS_8BIT = np.array([[18, 254, 1], [1, 171, 128]], np.uint8)  # round(w / 257), by hand


def test_16_bit_byte_order_matters_and_is_honoured():
    assert np.array_equal((WORDS / 257.0).round().astype(np.uint8), WORDS_8BIT)  # the table above
    for big in (False, True):
        out = image_to_rgb(msg(WORDS, "mono16", big_endian=big))
        assert np.array_equal(out[..., 0], WORDS_8BIT), f"is_bigendian={big}"
    swapped = msg(WORDS, "mono16", big_endian=True)
    swapped.is_bigendian = 0  # the same bytes declared little-endian are a different image
    assert image_to_rgb(swapped)[0, 0, 0] == 52


@pytest.mark.parametrize("encoding", ["rgb16", "bgr16"])
@pytest.mark.parametrize("big", [False, True])
def test_rgb16_and_bgr16_channel_and_byte_order(encoding, big):
    r, g, b = WORDS, WORDS[::-1], WORDS[:, ::-1]  # three different channels
    planes = [r, g, b] if encoding == "rgb16" else [b, g, r]
    out = image_to_rgb(msg(np.dstack(planes), encoding, big_endian=big))
    expected = np.dstack([WORDS_8BIT, WORDS_8BIT[::-1], WORDS_8BIT[:, ::-1]])
    assert out.dtype == np.uint8 and np.array_equal(out, expected)
    assert np.array_equal(image_to_rgb(msg(np.dstack(planes), encoding, big_endian=big, pad=4)), expected)


def test_unsupported_encoding_names_the_supported_ones_and_the_fix():
    m = msg(RGB[..., 0], "mono8")
    m.encoding = "bayer_rggb8"
    with pytest.raises(ImageError) as err:
        image_to_rgb(m)
    assert "'bayer_rggb8'" in str(err.value) and "rgb8, bgr8" in str(err.value) and "debayer" in str(err.value)
