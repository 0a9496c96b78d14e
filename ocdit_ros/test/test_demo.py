"""`make demo`'s scene AP: the same COCO AP as `ocdit eval`, on the demo's one-image split."""

import numpy as np
import pytest
from PIL import Image

from ocdit_ros.data.objects import DEFAULT_FURNITURE_DIR
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


@pytest.mark.skipif(not any(DEFAULT_FURNITURE_DIR.glob("*.sh3f")),
                    reason="sweethome3d-furniture not installed (make installs it)")
def test_a_second_demo_run_makes_its_own_scene_and_queries_only_its_objects(tmp_path, monkeypatch):
    """An earlier run's finished scene and templates in the same --out must not leak into this one."""
    from ocdit_ros import demo
    from ocdit_ros.templates.render import RenderSettings

    monkeypatch.setenv("OCDIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(demo, "CACHE", tmp_path / "cache")
    images = []
    for seed in (3, 4):
        scene, _ = demo.prepare_scene(tmp_path / "out", seed, 2, 96, 72)
        folder, queried = demo.prepare_templates(scene, RenderSettings.training(48), 1, seed)
        images.append((scene / "rgb" / "000000.jpg").read_bytes())
        assert sorted(p.stem for p in folder.glob("*.npz")) == sorted(f"obj_{o:06d}" for o in queried)
    assert images[0] != images[1]  # a new seed, a new scene (not the first run's, kept as "done")
