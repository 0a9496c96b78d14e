"""COCO RLE (checked against pycocotools), results records, label image and overlay."""

import json

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from ocdit_ros.pipeline.export import bop_records, label_image, overlay, result_record, rle_decode, rle_encode
from ocdit_ros.pipeline.segmenter import Instance, SegmentationResult


@pytest.mark.parametrize("seed", range(20))
def test_rle_matches_pycocotools(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(1, 70, 2)
    mask = rng.random((h, w)) < rng.random()
    if seed % 4 == 0:  # large runs exercise the multi-character encoding and deltas
        mask = np.zeros((h, w), bool)
        mask[h // 3:, : w // 2] = True
    ours = rle_encode(mask)
    ref = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    assert ours["counts"] == ref["counts"].decode() and ours["size"] == [h, w]
    assert np.array_equal(rle_decode(ours), mask)
    assert np.array_equal(coco_mask.decode({"size": ours["size"], "counts": ours["counts"].encode()}).astype(bool),
                          mask)


def _result():
    m1 = np.zeros((20, 30), bool); m1[2:8, 3:9] = True
    m2 = np.zeros((20, 30), bool); m2[10:19, 20:29] = True
    insts = [Instance("mug", 1, 0.9, m1, (3, 2, 9, 8), 0.8, np.zeros((20, 30), np.float32), "refined", 0.7),
             Instance("drill", 2, 0.6, m2, (20, 10, 29, 19), 0.7, np.zeros((20, 30), np.float32), "refined", 0.5)]
    return SegmentationResult(insts, (20, 30), "refined", {"total": 1500.0}, 3)


def test_records_hold_coco_boxes_and_decodable_masks():
    rec = result_record("a.png", _result())
    json.dumps(rec)  # serialisable
    assert rec["instances"][0]["bbox"] == [3, 2, 6, 6] and rec["instances"][0]["area"] == 36
    assert np.array_equal(rle_decode(rec["instances"][1]["segmentation"]), _result().instances[1].mask)
    bop = bop_records(_result(), scene_id=4, image_id=7, category_ids={"mug": 1, "drill": 2})
    assert [b["category_id"] for b in bop] == [1, 2]
    assert bop[0]["scene_id"] == 4 and bop[0]["image_id"] == 7 and bop[0]["time"] == pytest.approx(1.5)
    assert set(bop[0]) == {"scene_id", "image_id", "category_id", "score", "bbox", "segmentation", "time"}


def test_label_image_and_overlay():
    res = _result()
    labels = label_image(res.instances, (20, 30))
    assert labels.dtype == np.uint16 and set(np.unique(labels)) == {0, 1, 2}
    assert (labels == 1).sum() == 36
    img = np.full((20, 30, 3), 100, np.uint8)
    ov = overlay(img, res.instances)
    assert ov.shape == img.shape and ov.dtype == np.uint8
    assert (ov[5, 5] != 100).any() and (ov[0, 0] == 100).all()
