"""COCO-style segmentation AP of BOP 2D-segmentation results, computed by pycocotools.

Targets are the visible masks (`mask_visib`) of instances with visib_fract >= 0.1 (BOP's
threshold). Fainter instances are marked `iscrowd`: pycocotools then neither counts a prediction
on them as a false positive nor their absence as a miss, which is what "not a target" means (a
method that finds a 5 %-visible object is not punished).

Why iscrowd and not bop_toolkit's `"ignore": true`: stock pycocotools overwrites `ignore` with
`iscrowd` in COCOeval._prepare, so bop_toolkit's flag has no effect there and the faint instances
end up as ordinary targets. `visib_threshold=0` reproduces that (every instance is a target).
A crowd region matches a prediction when intersection / prediction area >= the IoU threshold.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ..data.bop import BopImage, BopSplit

REQUIRED_KEYS = ("scene_id", "image_id", "category_id", "score", "segmentation")


class ResultsError(ValueError):
    """A results file entry is malformed; the message names the entry."""


@dataclass
class CocoScores:
    ap: float  # mean over IoU 0.50:0.05:0.95, all areas, 100 detections
    ap50: float
    ap75: float
    per_object: dict[int, float] = field(default_factory=dict)
    num_images: int = 0
    num_gt: int = 0
    num_ignored_gt: int = 0
    num_predictions: int = 0  # on the evaluated images (entries for other images are dropped)

    @property
    def has_targets(self) -> bool:
        """False when no image has a target: AP is then reported as 0.0, not NaN/-1."""
        return self.num_gt > 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["has_targets"] = self.has_targets
        d["per_object"] = {str(k): v for k, v in self.per_object.items()}
        return d


def image_key(scene_id: int, image_id: int) -> int:
    """A unique COCO image id per (scene, image)."""
    return int(scene_id) * 1_000_000 + int(image_id)


def validate_records(records) -> list[dict]:
    if not isinstance(records, list):
        raise ResultsError("results must be a JSON list of BOP 2D segmentation entries")
    for i, r in enumerate(records):
        if not isinstance(r, dict):
            raise ResultsError(f"entry {i} is not an object")
        missing = [k for k in REQUIRED_KEYS if k not in r]
        if missing:
            raise ResultsError(f"entry {i} lacks {missing} (needs {list(REQUIRED_KEYS)})")
        seg = r["segmentation"]
        if not isinstance(seg, dict) or "counts" not in seg or "size" not in seg:
            raise ResultsError(f"entry {i}: segmentation must be COCO RLE {{'counts': ..., 'size': [h, w]}}")
        if not isinstance(r["score"], (int, float)) or not math.isfinite(r["score"]):
            raise ResultsError(f"entry {i}: score must be a finite number")
        for key in ("scene_id", "image_id", "category_id"):
            if isinstance(r[key], bool) or not isinstance(r[key], int):
                raise ResultsError(f"entry {i}: {key} must be an integer, got {r[key]!r}")
        size = seg["size"]
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) for v in size)) \
                or not isinstance(seg["counts"], (str, list)):
            raise ResultsError(f"entry {i}: segmentation needs 'size' [h, w] and 'counts' (string or list)")
    return records


def ground_truth(images: list[BopImage], visib_threshold: float = 0.1) -> dict:
    """A COCO ground-truth dataset of the visible masks (faint instances as iscrowd)."""
    from ..pipeline.export import rle_encode

    anns, coco_images, cats = [], [], set()
    for im in images:
        key = image_key(im.scene_id, im.image_id)
        h = w = None
        for inst in im.instances:
            mask = im.load_mask(inst, visible=True)
            h, w = mask.shape
            if not mask.any():
                continue
            rle = rle_encode(mask)
            ys, xs = np.nonzero(mask)
            anns.append({"id": len(anns) + 1, "image_id": key, "category_id": inst.obj_id, "segmentation": rle,
                         "area": float(mask.sum()), "iscrowd": int(inst.visib_fract < visib_threshold),
                         "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                                  float(ys.max() - ys.min() + 1)]})
            cats.add(inst.obj_id)
        if h is None:
            from PIL import Image

            with Image.open(im.rgb_path) as f:
                w, h = f.size
        coco_images.append({"id": key, "height": int(h), "width": int(w)})
    return {"images": coco_images, "annotations": anns, "categories": [{"id": c} for c in sorted(cats)]}


def evaluate(split: BopSplit | list[BopImage], records: list[dict], visib_threshold: float = 0.1,
             images: list[BopImage] | None = None) -> CocoScores:
    """AP of BOP records on the split's images (or `images`, a subset); records of other images are dropped."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from ..pipeline.export import rle_decode, rle_encode

    images = images if images is not None else (split.images if isinstance(split, BopSplit) else split)
    records = validate_records(records)
    gt = ground_truth(images, visib_threshold)
    sizes = {im["id"]: [im["height"], im["width"]] for im in gt["images"]}
    dets = []
    for i, r in enumerate(records):
        key = image_key(r["scene_id"], r["image_id"])
        if key in sizes:
            if list(r["segmentation"]["size"]) != sizes[key]:
                raise ResultsError(f"entry {i} (scene {r['scene_id']}, image {r['image_id']}): mask size "
                                   f"{r['segmentation']['size']} != image size {sizes[key]}")
            if isinstance(r["segmentation"]["counts"], list):  # uncompressed RLE: pycocotools wants it compressed
                r = {**r, "segmentation": rle_encode(rle_decode(r["segmentation"]))}
            dets.append({"image_id": key, "category_id": int(r["category_id"]), "score": float(r["score"]),
                         "segmentation": {"size": list(r["segmentation"]["size"]),
                                          "counts": r["segmentation"]["counts"]}})
    targets = [a for a in gt["annotations"] if not a["iscrowd"]]
    scores = CocoScores(0.0, 0.0, 0.0, {c: 0.0 for c in sorted({a["category_id"] for a in targets})},
                        len(images), len(targets), len(gt["annotations"]) - len(targets), len(dets))
    if not targets or not dets:
        return scores  # nothing to find, or nothing found: AP 0 (pycocotools would say -1)
    # Categories only in the predictions are listed too; as in COCO, a category without targets
    # has no precision (-1) and stays out of the mean, so such predictions cost nothing.
    gt["categories"] = [{"id": c} for c in sorted({a["category_id"] for a in gt["annotations"]}
                                                   | {d["category_id"] for d in dets})]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    scores.ap, scores.ap50, scores.ap75 = (max(0.0, float(v)) for v in ev.stats[:3])
    precision = ev.eval["precision"]  # (T iou, R recall, K category, A area, M maxDets)
    for k, cat in enumerate(ev.params.catIds):
        if cat in scores.per_object:
            p = precision[:, :, k, 0, -1]
            scores.per_object[cat] = float(p[p > -1].mean()) if (p > -1).any() else 0.0
    return scores
