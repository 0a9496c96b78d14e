"""`make demo`'s scene AP: the same COCO AP as `ocdit eval`, on the demo's one-image split."""

import numpy as np
import pytest
from PIL import Image

from ocdit_ros.demo import scene_ap

from test_training import _write_scene


def test_scene_ap_scores_the_demo_instances(tmp_path):
    split = _write_scene(tmp_path, np.random.default_rng(1), images=1)
    scene = split / "000000"
    gt = [np.asarray(Image.open(scene / "mask_visib" / f"000000_{k:06d}.png")) > 0 for k in range(3)]
    # The rectangles may overlap (later ones paint over earlier ones, masks stay whole): use the
    # ground-truth masks themselves as the perfect answer.
    perfect = [(f"obj_{oid:06d}", 0.9, m) for oid, m in zip((1, 2, 3), gt)]
    assert scene_ap(tmp_path, perfect, "train").ap == pytest.approx(1.0)
    wrong_object = [("obj_000002", 0.9, gt[0]), ("obj_000003", 0.9, gt[1]), ("obj_000001", 0.9, gt[2])]
    assert scene_ap(tmp_path, wrong_object, "train").ap < 0.5
    two_of_three = perfect[:2]
    scores = scene_ap(tmp_path, two_of_three, "train")
    assert scores.ap == pytest.approx(2 / 3, abs=0.01) and scores.num_gt == 3 and scores.num_predictions == 2
    assert scene_ap(tmp_path, [], "train").ap == 0.0
