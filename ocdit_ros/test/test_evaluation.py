"""COCO segmentation AP (pycocotools) of BOP results with known answers; `ocdit eval`."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ocdit_ros.cli import main
from ocdit_ros.data.bop import open_split
from ocdit_ros.evaluation import evaluate
from ocdit_ros.pipeline.export import rle_encode
from test_bop_dataset import SCENES, H, W, write_dataset  # the tiny BOP dataset (pytest puts test/ on sys.path)

pytest.importorskip("pycocotools")


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


def test_ground_truth_as_predictions_is_perfect(split):
    s = evaluate(split, records())
    assert (s.ap, s.ap50, s.ap75) == (1.0, 1.0, 1.0)
    assert s.num_gt == 6 and s.num_ignored_gt == 1 and s.num_images == 4
    assert s.per_object == {1: 1.0, 2: 1.0}


def test_empty_predictions_score_zero(split):
    s = evaluate(split, [])
    assert (s.ap, s.ap50, s.ap75) == (0.0, 0.0, 0.0) and s.num_gt == 6


def test_faint_instances_are_neither_targets_nor_false_positives(split):
    assert evaluate(split, records()).ap == 1.0  # not found: no miss
    s = evaluate(split, records(include_faint=True, score=0.5))
    assert s.ap == 1.0 and s.num_predictions == 7  # found: no false positive (obj 3 has no targets)
    faint = [r for r in records(include_faint=True) if r["category_id"] == 3][0]
    s = evaluate(split, records(score=0.5) + [{**faint, "category_id": 1, "score": 0.99}])
    assert s.per_object[1] == pytest.approx(0.75)  # ignore regions are per object: calling it obj 1 is an FP


def test_visib_threshold_zero_makes_every_instance_a_target(split):
    s = evaluate(split, records(), visib_threshold=0.0)
    assert s.num_gt == 7 and s.num_ignored_gt == 0 and s.per_object == {1: 1.0, 2: 1.0, 3: 0.0}
    assert s.ap == pytest.approx(2 / 3)
    assert evaluate(split, records(include_faint=True), visib_threshold=0.0).ap == 1.0


def test_images_without_targets_give_zero_not_nan(split):
    from dataclasses import replace

    faint_only = [replace(im, instances=im.instances[1:]) for im in split.images
                  if (im.scene_id, im.image_id) == (0, 1)]
    s = evaluate(faint_only, records(include_faint=True))
    assert (s.ap, s.ap50, s.ap75, s.num_gt, s.has_targets) == (0.0, 0.0, 0.0, 0, False)
    assert s.to_dict()["has_targets"] is False and s.num_images == 1


def test_mask_size_must_match_the_image(split):
    from ocdit_ros.evaluation import ResultsError

    bad = records()
    bad[2]["segmentation"] = rle_encode(np.ones((H, W + 1), bool))
    with pytest.raises(ResultsError, match=r"entry 2 \(scene 0, image 1\): mask size \[64, 81\] != image size"):
        evaluate(split, bad)


def test_uncompressed_rle_counts_are_accepted(split):
    from ocdit_ros.pipeline.export import rle_decode

    recs = records()
    for r in recs:
        m = rle_decode(r["segmentation"]).ravel(order="F")
        change = np.flatnonzero(m[1:] != m[:-1]) + 1
        counts = np.diff(np.concatenate([[0], change, [m.size]])).tolist()
        r["segmentation"] = {"size": r["segmentation"]["size"], "counts": [0] + counts if m[0] else counts}
    assert evaluate(split, recs).ap == 1.0


def trim(iou):
    """Drop the first pixels (column-major) of a mask so that IoU(trimmed, mask) is just below `iou`."""
    def f(m):
        idx = np.flatnonzero(m.ravel(order="F"))
        n = int(np.ceil(len(idx) * (1 - iou)))
        out = m.ravel(order="F").copy()
        out[idx[:n]] = False
        return out.reshape(m.shape, order="F")
    return f


@pytest.mark.parametrize("iou, ap, ap50, ap75", [
    (0.58, 0.2, 1.0, 0.0),  # matched at IoU thresholds .50 and .55 only
    (0.78, 0.6, 1.0, 1.0),  # .50 ... .75
    (0.93, 0.9, 1.0, 1.0),  # all but .95
])
def test_degraded_masks_drop_strict_thresholds_only(split, iou, ap, ap50, ap75):
    s = evaluate(split, records(trim(iou)))
    assert (s.ap50, s.ap75) == (ap50, ap75)
    assert s.ap == pytest.approx(ap, abs=1e-9)


def test_shifted_masks_keep_ap50_only(split):
    # Shift by 30 % of the mask's width: rectangles keep IoU ~0.54, the ellipse falls below 0.5.
    def shift(m):
        ys, xs = np.nonzero(m)
        return np.roll(m, int(round(0.3 * (np.ptp(xs) + 1))), axis=1)

    s = evaluate(split, records(shift))
    assert s.ap75 == 0.0 and 0.0 < s.ap < 0.1 < s.ap50 < 1.0
    assert s.per_object[1] == pytest.approx(0.1)  # obj 1: rectangles only, matched at .50 only


def test_a_confident_false_positive_costs_precision(split):
    fp = {**records()[0], "scene_id": 3, "image_id": 0, "score": 0.99}  # obj 1 where there is none
    s = evaluate(split, records() + [fp])
    # obj 1: FP, TP, TP, TP by score -> interpolated precision 0.75 at every recall; obj 2 stays perfect.
    assert s.per_object == {1: pytest.approx(0.75), 2: 1.0}
    assert s.ap == pytest.approx(0.875) and s.num_predictions == 7


def test_per_object_ap_of_one_degraded_object(split):
    good, bad = records(), records(trim(0.58))
    s = evaluate(split, [g if g["category_id"] == 1 else b for g, b in zip(good, bad)])
    assert s.per_object == {1: 1.0, 2: pytest.approx(0.2)}
    assert s.ap == pytest.approx(0.6)


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
    res.write_text(json.dumps(records(skip={(3, 0, 1)})))  # one obj 2 instance missed
    out = tmp_path / "reports" / "r.json"
    code = main(["eval", "--dataset", str(split.path.parent), "--results", str(res), "--out", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert (report["num_images"], report["num_gt"], report["num_predictions"]) == (4, 6, 5)
    # obj 2: recall stops at 2/3, i.e. at 67 of COCO's 101 recall points (precision 1 up to there).
    assert report["per_object"] == {"1": 1.0, "2": pytest.approx(67 / 101)}
    for key in ("ap", "ap50", "ap75"):
        assert report[key] == pytest.approx((1 + 67 / 101) / 2)
    assert report["timing"] == {"mean_seconds_per_image": 0.5, "total_seconds": 2.0}
    assert report["dataset"] == str(split.path) and report["results"] == str(res) and report["has_targets"]
    table = capsys.readouterr().out
    assert "AP50" in table and "obj_000002" in table and "0.500 s per image" in table


def test_cli_honours_max_images_and_targets_file(split, tmp_path):
    res = tmp_path / "res.json"
    res.write_text(json.dumps(records()))
    out = tmp_path / "r.json"
    assert main(["eval", "--dataset", str(split.path), "--results", str(res), "--out", str(out),
                 "--max-images", "1"]) == 0
    assert json.loads(out.read_text())["num_images"] == 1 and json.loads(out.read_text())["num_predictions"] == 2
    (split.root / "test_targets_bop19.json").write_text(json.dumps([{"scene_id": 3, "im_id": 2, "obj_id": 1,
                                                                     "inst_count": 1}]))
    assert main(["eval", "--dataset", str(split.root), "--results", str(res), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["num_images"] == 1 and report["num_gt"] == 1 and report["targets_file"].endswith("bop19.json")
    assert main(["eval", "--dataset", str(split.root), "--results", str(res), "--out", str(out), "--all-images"]) == 0
    assert json.loads(out.read_text())["num_images"] == 4


@pytest.mark.parametrize("content, message", [
    ("{not json", "not JSON"),
    ("{}", "must be a JSON list"),
    (json.dumps([{"scene_id": 0}]), "entry 0 lacks"),
    (json.dumps([{"scene_id": 0, "image_id": 0, "category_id": 1, "score": 1, "segmentation": [1, 2]}]), "COCO RLE"),
    (json.dumps([{"scene_id": 0, "image_id": 0, "category_id": "a", "score": 1,
                  "segmentation": {"size": [H, W], "counts": "PPYo1"}}]), "category_id must be an integer"),
    (json.dumps([{"scene_id": 0, "image_id": 1, "category_id": 1, "score": 1,
                  "segmentation": rle_encode(np.zeros((10, 10), bool))}]), "entry 0 (scene 0, image 1): mask size"),
])
def test_cli_bad_results_are_one_line(split, tmp_path, capsys, content, message):
    res = tmp_path / "bad.json"
    res.write_text(content)
    assert main(["eval", "--dataset", str(split.path), "--results", str(res), "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and str(res) in err and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--dataset", "{tmp}/nowhere", "--results", "{tmp}/res.json"], "nowhere is not a folder"),
    (["--dataset", "{split}", "--results", "{tmp}/missing.json"], "--results {tmp}/missing.json: no such file"),
    (["--dataset", "{split}", "--split", "val", "--results", "{tmp}/res.json"], "no split folder 'val'"),
    (["--dataset", "{split}", "--results", "{tmp}/res.json", "--max-images", "0"], "--max-images 0: must be >= 1"),
    (["--dataset", "{split}"], "no models/ folder with models_info.json"),
])
def test_cli_bad_arguments_are_one_line(split, tmp_path, capsys, args, message):
    (tmp_path / "res.json").write_text("[]")
    fill = {"tmp": str(tmp_path), "split": str(split.path)}
    args = [a.format(**fill) for a in args]
    assert main(["eval", *args, "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ocdit eval: error: ") and message.format(**fill) in err and "\n" not in err


def test_cli_without_a_shipped_model_says_so(split, tmp_path, capsys, monkeypatch):
    from ocdit_ros.model import default

    def none():
        raise default.NoDefaultModel("no default model in X; pass --weights")

    monkeypatch.setattr(default, "default_weights", none)
    _write_models(split.root, {1: (60, 40, 30)})
    assert main(["eval", "--dataset", str(split.path), "--out", str(tmp_path / "r.json")]) == 2
    assert capsys.readouterr().err.strip() == "ocdit eval: error: --weights: no default model in X; pass --weights"
    assert main(["eval", "--dataset", str(split.path), "--weights", str(tmp_path / "nope.safetensors"),
                 "--out", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ocdit eval: error: --weights:") and "does not exist" in err and "\n" not in err


def _write_models(root: Path, boxes: dict[int, tuple]) -> None:
    trimesh = pytest.importorskip("trimesh")
    models = root / "models"
    models.mkdir(exist_ok=True)
    info = {}
    for oid, ext in boxes.items():  # BOP models are in millimetres
        trimesh.creation.box(extents=ext).export(models / f"obj_{oid:06d}.ply")
        info[str(oid)] = {"diameter": float(np.linalg.norm(ext)), "min_x": -ext[0] / 2, "size_x": ext[0]}
    (models / "models_info.json").write_text(json.dumps(info))


def test_cli_runs_the_pipeline_and_reports_coarse_and_refined(tmp_path, capsys, monkeypatch):
    pytest.importorskip("pybullet")
    import torch

    from ocdit_ros.model import OCDiT, save_weights, tiny

    # One image with one box-shaped object: a random-weight tiny model, 1 sample, 1 step.
    scene = tmp_path / "test" / "000000"
    for sub in ("rgb", "mask_visib", "mask"):
        (scene / sub).mkdir(parents=True)
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(scene / "rgb" / "000000.png")
    mask = np.zeros((H, W), np.uint8)
    mask[10:40, 20:60] = 255
    Image.fromarray(mask).save(scene / "mask_visib" / "000000_000000.png")
    (scene / "scene_gt.json").write_text(json.dumps({"0": [{"obj_id": 1, "cam_R_m2c": np.eye(3).ravel().tolist(),
                                                            "cam_t_m2c": [0, 0, 500]}]}))
    (scene / "scene_gt_info.json").write_text(json.dumps({"0": [{"visib_fract": 1.0,
                                                                 "bbox_visib": [20, 10, 40, 30]}]}))
    (scene / "scene_camera.json").write_text(json.dumps({"0": {"cam_K": [90, 0, 40, 0, 90, 32, 0, 0, 1],
                                                               "depth_scale": 1.0}}))
    _write_models(tmp_path, {1: (60, 40, 30)})
    torch.manual_seed(0)
    save_weights(OCDiT.from_config(tiny()), tmp_path / "w.safetensors")
    cfg = tmp_path / "pipe.yaml"
    cfg.write_text("proposal_threshold: 0.0\nscore_threshold: 0.0\nmin_support: 0.0\n"
                   "refine:\n  ensemble: 1\n  augmentations: 1\n")
    out = tmp_path / "report.json"
    code = main(["eval", "--dataset", str(tmp_path), "--weights", str(tmp_path / "w.safetensors"), "--config", str(cfg),
                 "--out", str(out), "--ensemble", "1", "--steps", "1"])
    assert code == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    for key in ("ap", "ap50", "ap75", "ap_coarse", "ap50_coarse"):
        assert 0.0 <= report[key] <= 1.0
    assert report["num_images"] == 1 and report["num_gt"] == 1 and set(report["per_object"]) == {"1"}
    assert report["timing"]["mean_seconds_per_image"] > 0 and report["timing"]["total_seconds"] > 0
    used = report["pipeline_config"]
    assert used["coarse"]["ensemble"] == 1 and used["coarse"]["num_steps"] == used["refine"]["num_steps"] == 1
    assert report["pipeline_config"]["template_settings"]["template_size"] == tiny().template_size[0]
    results = json.loads((tmp_path / "report_results.json").read_text())
    assert all(r["category_id"] == 1 and (r["scene_id"], r["image_id"]) == (0, 0) and r["time"] > 0 for r in results)
    assert report["num_predictions"] == len(results)
    assert (tmp_path / "templates_cache" / "obj_000001.npz").is_file()
    assert "coarse" in capsys.readouterr().out
    # Without pybullet the model's pybullet templates fall back to the rasteriser, with a warning.
    monkeypatch.setitem(sys.modules, "pybullet", None)  # import pybullet now raises ImportError
    code = main(["eval", "--dataset", str(tmp_path), "--weights", str(tmp_path / "w.safetensors"), "--config", str(cfg),
                 "--out", str(out), "--ensemble", "1", "--steps", "1", "--no-coarse-ap"])
    assert code == 0 and "warning: templates for this model are rendered with pybullet" in capsys.readouterr().err
    assert json.loads(out.read_text())["pipeline_config"]["template_settings"]["renderer"] == "raster"


def test_a_faint_instance_of_an_object_with_targets_is_ignored_not_dropped(split):
    """The crowd rule where it matters: the faint instance (scene 0, image 1) relabelled as object 1,
    which has 3 targets. Found as object 1 it is neither a hit nor a false positive; had faint
    instances been dropped from the ground truth, that confident detection would be a false positive
    and object 1's AP would be 0.75 (precision 3/4 at every recall)."""
    from dataclasses import replace

    images = [replace(im, instances=tuple(replace(i, obj_id=1) if i.visib_fract < 0.1 else i
                                          for i in im.instances)) for im in split.images]
    faint = {**[r for r in records(include_faint=True) if r["category_id"] == 3][0], "category_id": 1,
             "score": 0.99}
    s = evaluate(images, records(score=0.5))
    assert (s.ap, s.num_gt, s.num_ignored_gt, s.per_object) == (1.0, 6, 1, {1: 1.0, 2: 1.0})  # not found: no miss
    s = evaluate(images, records(score=0.5) + [faint])
    assert s.per_object[1] == 1.0 and s.ap == 1.0  # found: no false positive either
    s = evaluate(images, records(score=0.5) + [faint], visib_threshold=0.0)
    assert s.num_gt == 7 and s.per_object[1] == 1.0  # as a target it is a hit
    s = evaluate(images, records(score=0.5), visib_threshold=0.0)
    assert s.per_object[1] == pytest.approx(76 / 101)  # missing it: precision 1 up to recall 3/4 only


def test_cli_queries_present_asks_each_image_only_for_its_ground_truth_objects(tmp_path, capsys):
    pytest.importorskip("pybullet")
    import torch

    from ocdit_ros.model import OCDiT, save_weights, tiny

    # Two images: object 1 only in image 0, object 2 only in image 1; models for 1 and 2 (and 3).
    scene = tmp_path / "test" / "000000"
    for sub in ("rgb", "mask_visib", "mask"):
        (scene / sub).mkdir(parents=True)
    gt, info, cam = {}, {}, {}
    for im, oid in ((0, 1), (1, 2)):
        Image.fromarray(np.full((H, W, 3), 90 + 40 * im, np.uint8)).save(scene / "rgb" / f"{im:06d}.png")
        mask = np.zeros((H, W), np.uint8)
        mask[10:40, 20:60] = 255
        Image.fromarray(mask).save(scene / "mask_visib" / f"{im:06d}_000000.png")
        gt[str(im)] = [{"obj_id": oid, "cam_R_m2c": np.eye(3).ravel().tolist(), "cam_t_m2c": [0, 0, 500]}]
        info[str(im)] = [{"visib_fract": 1.0, "bbox_visib": [20, 10, 40, 30]}]
        cam[str(im)] = {"cam_K": [90, 0, 40, 0, 90, 32, 0, 0, 1], "depth_scale": 1.0}
    for name, content in (("scene_gt", gt), ("scene_gt_info", info), ("scene_camera", cam)):
        (scene / f"{name}.json").write_text(json.dumps(content))
    _write_models(tmp_path, {1: (60, 40, 30), 2: (50, 50, 20), 3: (30, 30, 30)})
    torch.manual_seed(0)
    save_weights(OCDiT.from_config(tiny()), tmp_path / "w.safetensors")
    cfg = tmp_path / "pipe.yaml"
    # mask_threshold 0.01: every queried object yields a prediction, so the records show what was asked.
    cfg.write_text("proposal_threshold: 0.0\nscore_threshold: 0.0\nmin_support: 0.0\nmask_threshold: 0.01\n"
                   "refine_enabled: false\n")

    def asked(queries):
        out = tmp_path / queries / "report.json"
        code = main(["eval", "--dataset", str(tmp_path), "--weights", str(tmp_path / "w.safetensors"),
                     "--config", str(cfg), "--out", str(out), "--ensemble", "1", "--steps", "1",
                     "--queries", queries, "--templates", str(tmp_path / queries / "templates")])
        assert code == 0, capsys.readouterr().err
        assert json.loads(out.read_text())["pipeline_config"]["queries"] == queries
        results = json.loads((out.parent / "report_results.json").read_text())
        rendered = sorted(p.name for p in (tmp_path / queries / "templates").glob("obj_*.npz"))
        return {im: {r["category_id"] for r in results if r["image_id"] == im} for im in (0, 1)}, rendered

    per_image, rendered = asked("present")
    assert per_image == {0: {1}, 1: {2}}
    assert rendered == ["obj_000001.npz", "obj_000002.npz"]  # no templates for object 3
    per_image, rendered = asked("all")
    assert per_image == {0: {1, 2, 3}, 1: {1, 2, 3}}
    assert rendered == ["obj_000001.npz", "obj_000002.npz", "obj_000003.npz"]
