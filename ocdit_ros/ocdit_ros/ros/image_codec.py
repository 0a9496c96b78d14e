"""sensor_msgs/Image and CompressedImage <-> NumPy, validated (no cv_bridge, no OpenCV).

This converter is used on every installation, also where cv_bridge is installed: the node then
accepts the same encodings, converts 16-bit images the same way and reports the same errors
everywhere, and all of it is tested here (cv_bridge cannot be installed in this project's CI).
It covers the encodings below; others (Bayer, YUV) are refused with the list of supported ones:
debayer or convert them first (e.g. image_proc). Every malformed message raises `ImageError` with
the reason, so the node can log it and drop the frame.
"""

from __future__ import annotations

import io

import numpy as np

MAX_SIDE = 8192

# encoding -> (channels, dtype, channel order to RGB or None for mono)
ENCODINGS = {
    "rgb8": (3, np.uint8, (0, 1, 2)),
    "bgr8": (3, np.uint8, (2, 1, 0)),
    "rgba8": (4, np.uint8, (0, 1, 2)),
    "bgra8": (4, np.uint8, (2, 1, 0)),
    "mono8": (1, np.uint8, None),
    "8UC1": (1, np.uint8, None),
    "8UC3": (3, np.uint8, (2, 1, 0)),  # OpenCV convention: BGR
    "rgb16": (3, np.uint16, (0, 1, 2)),
    "bgr16": (3, np.uint16, (2, 1, 0)),
    "mono16": (1, np.uint16, None),
    "16UC1": (1, np.uint16, None),
}


class ImageError(ValueError):
    """A message that cannot be turned into an image; the message says why."""


def image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image -> (H, W, 3) uint8 RGB. 16-bit images are scaled to 8 bit."""
    enc = msg.encoding
    if enc not in ENCODINGS:
        raise ImageError(f"unsupported encoding {enc!r}; supported: {', '.join(ENCODINGS)} "
                         "(debayer or convert other encodings first, e.g. with image_proc)")
    ch, dtype, order = ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ImageError(f"empty image ({w}x{h})")
    if h > MAX_SIDE or w > MAX_SIDE:
        raise ImageError(f"image {w}x{h} exceeds the {MAX_SIDE} px limit")
    itemsize = np.dtype(dtype).itemsize
    row = w * ch * itemsize
    if step < row:
        raise ImageError(f"step {step} is smaller than width x channels x bytes = {row} for {enc}")
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)  # rclpy gives array('B'), rosbags ndarray
    if data.size != step * h:
        raise ImageError(f"data has {data.size} bytes, expected height x step = {h} x {step} = {h * step}")
    rows = data.reshape(h, step)[:, :row]
    big_endian = bool(getattr(msg, "is_bigendian", 0))
    arr = rows.copy().view(np.dtype(dtype).newbyteorder(">" if big_endian else "<") if itemsize > 1 else dtype)
    arr = arr.reshape(h, w, ch)
    if itemsize > 1:
        arr = (arr.astype(np.float32) / 257.0).round().astype(np.uint8)
    if order is None:
        return np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr[..., list(order)])


def compressed_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> (H, W, 3) uint8 RGB."""
    from PIL import Image, UnidentifiedImageError

    data = bytes(msg.data)
    if not data:
        raise ImageError("compressed image has no data")
    try:
        with Image.open(io.BytesIO(data)) as im:
            if max(im.size) > MAX_SIDE:
                raise ImageError(f"image {im.size[0]}x{im.size[1]} exceeds the {MAX_SIDE} px limit")
            return np.asarray(im.convert("RGB")).copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise ImageError(f"cannot decode compressed image (format {msg.format!r}): {exc}") from None


def fill_image(msg, array: np.ndarray, encoding: str):
    """Fill a sensor_msgs/Image from an (H, W) or (H, W, C) array (header left to the caller)."""
    arr = np.ascontiguousarray(array)
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = int(arr.strides[0])
    msg.data = arr.tobytes()
    return msg
