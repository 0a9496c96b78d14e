"""BOP reader and COCO segmentation AP (pycocotools) with known answers; `ocdit eval`."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ocdit_ros.cli import main
from ocdit_ros.data.bop import BopFormatError, open_split
from ocdit_ros.evaluation import evaluate
from ocdit_ros.pipeline.export import rle_encode

pytest.importorskip("pycocotools")
H, W = 64, 80


def _rect(x, y, w, h):
    m = np.zeros((H, W), bool)
    m[y:y + h, x:x + w] = True
    return m


# scene -> image -> [(obj_id, mask, visib_fract)]
SCENES = {
    0: {0: [(1, _rect(5, 5, 20, 15), 1.0), (2, _rect(40, 10, 25, 30), 0.9)],
        1: [(1, _rect(30, 30, 22, 18), 1.0), (3, _rect(2, 40, 12, 10), 0.05)]},  # obj 3: too faint to count
    3: {0: [(2, _rect(10, 12, 30, 20), 0.7), (2, _rect(50, 30, 20, 25), 1.0)],
        2: [(1, _rect(20, 20, 16, 16), 0.5)]},
}


def write_dataset(root: Path, gray: bool = False) -> Path:
    split = root / "test"
    for sid, images in SCENES.items():
        scene = split / f"{sid:06d}"
        for sub in ("gray" if gray else "rgb", "mask_visib", "mask"):
            (scene / sub).mkdir(parents=True, exist_ok=True)
        gt, info, cam = {}, {}, {}
        for im_id, insts in images.items():
            img = np.full((H, W), 100, np.uint8) if gray else np.full((H, W, 3), 100, np.uint8)
            Image.fromarray(img).save(scene / ("gray" if gray else "rgb") / f"{im_id:06d}.png")
            gt[str(im_id)], info[str(im_id)] = [], []
            cam[str(im_id)] = {"cam_K": [90.0, 0, W / 2, 0, 90.0, H / 2, 0, 0, 1], "depth_scale": 0.1}
            for k, (oid, mask, vf) in enumerate(insts):
                Image.fromarray(mask.astype(np.uint8) * 255).save(scene / "mask_visib" / f"{im_id:06d}_{k:06d}.png")
                Image.fromarray(mask.astype(np.uint8) * 255).save(scene / "mask" / f"{im_id:06d}_{k:06d}.png")
                gt[str(im_id)].append({"obj_id": oid, "cam_R_m2c": np.eye(3).ravel().tolist(), "cam_t_m2c": [0, 0, 400]})
                ys, xs = np.nonzero(mask)
                info[str(im_id)].append({"bbox_visib": [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1,
                                                        int(np.ptp(ys)) + 1], "visib_fract": vf})
        for name, data in (("scene_gt.json", gt), ("scene_gt_info.json", info), ("scene_camera.json", cam)):
            (scene / name).write_text(json.dumps(data))
    return split


def records(transform=lambda m: m, score=0.9, skip=(), include_faint=False):
    out = []
    for sid, images in SCENES.items():
        for im_id, insts in images.items():
            for k, (oid, mask, vf) in enumerate(insts):
                if (sid, im_id, k) in skip or (vf < 0.1 and not include_faint):
                    continue
                m = transform(mask)
                out.append({"scene_id": sid, "image_id": im_id, "category_id": oid, "score": score,
                            "bbox": [0, 0, 1, 1], "segmentation": rle_encode(m), "time": 0.5})
    return out


@pytest.fixture
def split(tmp_path):
    return open_split(write_dataset(tmp_path))


def test_reader_round_trip(tmp_path):
    write_dataset(tmp_path)
    split = open_split(tmp_path)  # the dataset root with one split
    assert split.path.name == "test" and len(split) == 4
    im = split.images[1]
    assert (im.scene_id, im.image_id) == (0, 1)
    assert im.K[0, 0] == 90.0 and im.depth_scale == 0.1 and im.load_rgb().shape == (H, W, 3)
    assert [i.obj_id for i in im.instances] == [1, 3] and im.instances[1].visib_fract == 0.05
    assert np.array_equal(im.load_mask(im.instances[0]), SCENES[0][1][0][1])
    assert split.object_ids() == [1, 2, 3]  # no models/: ids from the ground truth


def test_reader_gray_images_and_errors(tmp_path):
    split = open_split(write_dataset(tmp_path / "g", gray=True))
    assert split.images[0].load_rgb().shape == (H, W, 3)
    (split.path / "000003" / "scene_camera.json").unlink()
    with pytest.raises(BopFormatError, match="scene_camera.json is missing"):
        open_split(split.path).images
    with pytest.raises(BopFormatError, match="pass --split"):
        open_split(tmp_path / "g" / "test" / "000000")  # a scene, not a split
    (tmp_path / "two" / "val" / "000000").mkdir(parents=True)
    (tmp_path / "two" / "val" / "000000" / "scene_gt.json").write_text("{}")
    (tmp_path / "two" / "train" / "000000").mkdir(parents=True)
    (tmp_path / "two" / "train" / "000000" / "scene_gt.json").write_text("{}")
    assert open_split(tmp_path / "two").path.name == "val"


def test_ground_truth_as_predictions_is_perfect(split):
    s = evaluate(split, records())
    assert (s.ap, s.ap50, s.ap75) == (1.0, 1.0, 1.0)
    assert s.num_gt == 6 and s.num_ignored_gt == 1 and s.num_images == 4
    assert s.per_object == {1: 1.0, 2: 1.0}


def test_empty_predictions_score_zero(split):
    s = evaluate(split, [])
    assert (s.ap, s.ap50, s.ap75) == (0.0, 0.0, 0.0) and s.num_gt == 6


def test_faint_instances_are_neither_targets_nor_false_positives(split):
    assert evaluate(split, records(include_faint=True)).ap == 1.0


def test_shifted_masks_drop_strict_thresholds_only(split):
    # Shift by 30 % of each mask's width: IoU ~ 0.54 -> matched at 0.5, not at 0.6 and above.
    def shift(m):
        ys, xs = np.nonzero(m)
        return np.roll(m, int(round(0.3 * (np.ptp(xs) + 1))), axis=1)

    s = evaluate(split, records(shift))
    assert s.ap50 == 1.0 and s.ap75 == 0.0
    assert s.ap == pytest.approx(0.1, abs=1e-6)  # 1 of the 10 IoU thresholds


def test_missing_one_object_type_shows_in_per_object_ap(split):
    skip = {(3, 0, 0), (3, 0, 1), (0, 0, 1)}  # every obj 2 instance
    s = evaluate(split, records(skip=skip))
    assert s.per_object == {1: 1.0, 2: 0.0}
    assert s.ap == pytest.approx(0.5)


def test_matches_pycocotools_called_directly(split):
    """Random noisy predictions: our GT building, ids and crowd handling == plain pycocotools."""
    import contextlib
    import io

    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    preds = []
    for rec in records(lambda m: np.roll(m, int(rng.integers(-6, 7)), axis=int(rng.integers(2))), score=0.0):
        rec["score"] = float(rng.random())
        preds.append(rec)
    preds.append({**preds[0], "category_id": 2, "score": 0.95})  # a confident wrong label
    ours = evaluate(split, preds)

    gts, dts, imgs = [], [], []
    for sid, images in SCENES.items():
        for im_id, insts in images.items():
            key = sid * 1_000_000 + im_id
            imgs.append({"id": key, "height": H, "width": W})
            for oid, m, vf in insts:
                rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
                gts.append({"id": len(gts) + 1, "image_id": key, "category_id": oid, "segmentation": rle,
                            "area": float(m.sum()), "iscrowd": int(vf < 0.1), "bbox": list(mask_utils.toBbox(rle))})
    for p in preds:
        dts.append({"image_id": p["scene_id"] * 1_000_000 + p["image_id"], "category_id": p["category_id"],
                    "score": p["score"], "segmentation": p["segmentation"]})
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {"images": imgs, "annotations": gts, "categories": [{"id": c} for c in (1, 2, 3)]}
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(dts), "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert 0.0 < ours.ap < 1.0
    assert ours.ap == pytest.approx(ev.stats[0], abs=1e-9)
    assert ours.ap50 == pytest.approx(ev.stats[1], abs=1e-9)


def test_cli_scores_a_results_file(split, tmp_path, capsys):
    res = tmp_path / "res.json"
    res.write_text(json.dumps(records()))
    code = main(["eval", "--dataset", str(split.path.parent), "--results", str(res), "--out", str(tmp_path / "r.json")])
    assert code == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ap"] == 1.0 and report["ap50"] == 1.0 and report["ap75"] == 1.0 and report["num_images"] == 4
    assert report["timing"]["mean_seconds_per_image"] == pytest.approx(0.5)
    assert "AP50" in capsys.readouterr().out


@pytest.mark.parametrize("content, message", [
    ("{not json", "not JSON"),
    (json.dumps([{"scene_id": 0}]), "entry 0 lacks"),
    (json.dumps([{"scene_id": 0, "image_id": 0, "category_id": 1, "score": 1, "segmentation": [1, 2]}]), "COCO RLE"),
])
def test_cli_bad_results_are_one_line(split, tmp_path, capsys, content, message):
    res = tmp_path / "bad.json"
    res.write_text(content)
    assert main(["eval", "--dataset", str(split.path), "--results", str(res), "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert main(["eval", "--dataset", str(tmp_path / "nowhere"), "--results", str(res), "--out", "x.json"]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_cli_runs_the_pipeline_and_reports_coarse_and_refined(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    pytest.importorskip("pybullet")
    import torch

    from ocdit_ros.model import OCDiT, save_weights, tiny

    split = write_dataset(tmp_path)
    models = tmp_path / "models"
    models.mkdir()
    info = {}
    for oid, ext in ((1, (60, 40, 30)), (2, (30, 30, 60)), (3, (20, 50, 20))):
        trimesh.creation.box(extents=ext).export(models / f"obj_{oid:06d}.ply")
        info[str(oid)] = {"diameter": float(np.linalg.norm(ext))}
    (models / "models_info.json").write_text(json.dumps(info))
    torch.manual_seed(0)
    save_weights(OCDiT.from_config(tiny()), tmp_path / "w.safetensors")
    cfg = tmp_path / "pipe.yaml"
    cfg.write_text("proposal_threshold: 0.0\nscore_threshold: 0.0\nmin_support: 0.0\n"
                   "refine:\n  ensemble: 1\n  augmentations: 1\n")
    out = tmp_path / "report.json"
    code = main(["eval", "--dataset", str(split), "--weights", str(tmp_path / "w.safetensors"), "--config", str(cfg),
                 "--out", str(out), "--max-images", "2", "--ensemble", "1", "--steps", "2"])
    assert code == 0
    report = json.loads(out.read_text())
    for key in ("ap", "ap50", "ap75", "ap_coarse"):
        assert 0.0 <= report[key] <= 1.0
    assert report["num_images"] == 2 and report["timing"]["mean_seconds_per_image"] > 0
    results = json.loads((tmp_path / "report_results.json").read_text())
    assert results and {r["category_id"] for r in results} <= {1, 2, 3}
    assert all(r["scene_id"] == 0 and r["image_id"] in (0, 1) for r in results)
    assert len(list((tmp_path / "templates_cache").glob("obj_*.npz"))) == 3
