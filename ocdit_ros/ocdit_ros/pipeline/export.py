"""Results on disk: COCO RLE, results JSON (ours and BOP's 2D-segmentation format), PNGs."""

from __future__ import annotations

import colorsys
from typing import Iterable

import numpy as np

from ..naming import obj_id_of
from .segmenter import Instance, SegmentationResult


def rle_encode(mask: np.ndarray) -> dict:
    """COCO compressed RLE of a (H, W) bool mask (column-major runs, first run = background)."""
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    flat = mask.ravel(order="F")
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": [int(h), int(w)], "counts": _counts_to_string(counts)}


def rle_decode(rle: dict) -> np.ndarray:
    h, w = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = _string_to_counts(counts)
    flat = np.zeros(h * w, dtype=bool)
    pos, value = 0, False
    for c in counts:
        if value:
            flat[pos:pos + c] = True
        pos += c
        value = not value
    return flat.reshape((h, w), order="F")


def _counts_to_string(counts: list[int]) -> str:
    # The LEB128-like text encoding of the COCO API: runs are delta-coded against the run two
    # back (from the fourth run on), 5 bits per character, offset by 48.
    out = []
    for i, x in enumerate(counts):
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = (x != -1) if (c & 0x10) else (x != 0)
            if more:
                c |= 0x20
            out.append(chr(c + 48))
    return "".join(out)


def _string_to_counts(s: str) -> list[int]:
    counts: list[int] = []
    p = 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def instance_record(inst: Instance) -> dict:
    x0, y0, x1, y1 = inst.bbox
    return {
        "object_id": inst.object_id,
        "instance_id": inst.instance_id,
        "score": round(inst.score, 6),
        "bbox": [x0, y0, x1 - x0, y1 - y0],  # COCO: x, y, width, height
        "segmentation": rle_encode(inst.mask),
        "area": int(inst.mask.sum()),
        "mask_agreement": round(inst.agreement, 6),
        "stage": inst.stage,
        "coarse_confidence": round(inst.coarse_confidence, 6),
    }


def result_record(image_name: str, result: SegmentationResult) -> dict:
    return {
        "image": image_name,
        "height": result.image_size[0],
        "width": result.image_size[1],
        "stage": result.stage,
        "num_proposals": result.num_proposals,
        "timings_ms": {k: round(v, 2) for k, v in result.timings_ms.items()},
        "instances": [instance_record(i) for i in result.instances],
    }


def bop_category_ids(object_ids: Iterable[str]) -> dict[str, int]:
    """The one rule for BOP category ids (`ocdit segment --format bop`, `ocdit bag --bop-json`,
    `ocdit eval`): a BOP object name keeps its number (obj_000005 -> 5); every other id gets the
    smallest numbers no BOP name uses, in sorted order (mug, box -> box 1, mug 2)."""
    ids = sorted(set(object_ids))
    out = {o: n for o in ids if (n := obj_id_of(o)) is not None}
    used, n = set(out.values()), 0
    for o in ids:
        if o not in out:
            n += 1
            while n in used:
                n += 1
            out[o] = n
    return out


def bop_records(result: SegmentationResult, scene_id: int, image_id: int, category_ids: dict[str, int]) -> list[dict]:
    """BOP challenge 2D segmentation entries (one per instance); `time` is seconds per image."""
    seconds = result.timings_ms.get("total", 0.0) / 1e3
    out = []
    for inst in result.instances:
        x0, y0, x1, y1 = inst.bbox
        out.append({
            "scene_id": int(scene_id),
            "image_id": int(image_id),
            "category_id": int(category_ids[inst.object_id]),
            "score": float(inst.score),
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "segmentation": rle_encode(inst.mask),
            "time": seconds,
        })
    return out


def palette(n: int) -> np.ndarray:
    """n distinct, saturated RGB colours (uint8)."""
    return np.array([[int(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.85, 0.95)]
                     for i in range(max(n, 1))], dtype=np.uint8)


def overlay(image: np.ndarray, instances: Iterable[Instance], alpha: float = 0.5) -> np.ndarray:
    """RGB uint8 image with instance masks tinted and their boxes outlined."""
    out = np.asarray(image, dtype=np.float32).copy()
    if out.max() <= 1.0:
        out *= 255.0
    instances = list(instances)
    colours = palette(len(instances)).astype(np.float32)
    for inst, col in zip(instances, colours):
        out[inst.mask] = (1 - alpha) * out[inst.mask] + alpha * col
        x0, y0, x1, y1 = inst.bbox
        if x1 > x0 and y1 > y0:
            out[y0, x0:x1] = col
            out[y1 - 1, x0:x1] = col
            out[y0:y1, x0] = col
            out[y0:y1, x1 - 1] = col
    return out.clip(0, 255).astype(np.uint8)


def label_image(instances: Iterable[Instance], shape: tuple[int, int]) -> np.ndarray:
    """uint16 label image: 0 = background, instance_id elsewhere (masks never overlap)."""
    labels = np.zeros(shape, dtype=np.uint16)
    for inst in instances:
        labels[inst.mask] = inst.instance_id
    return labels
