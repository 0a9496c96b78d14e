"""`ocdit templates render` and `ocdit segment` end to end (in process)."""

import json

import numpy as np
import torch
import trimesh
from PIL import Image

from ocdit_ros.cli import main
from ocdit_ros.model import OCDiT, save_weights, tiny
from ocdit_ros.pipeline.export import rle_decode


def _setup(tmp_path):
    box = trimesh.creation.box(extents=(0.1, 0.06, 0.04))
    box.visual.face_colors = np.tile([200, 40, 40, 255], (len(box.faces), 1))
    box.export(tmp_path / "box.ply")
    torch.manual_seed(0)
    save_weights(OCDiT.from_config(tiny()), tmp_path / "tiny.safetensors")
    img = np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    Image.fromarray(img).save(tmp_path / "scene.png")
    (tmp_path / "broken.png").write_text("not an image")


def test_render_then_segment_writes_masks_json_and_overlays(tmp_path, capsys):
    _setup(tmp_path)
    assert main(["templates", "render", str(tmp_path / "box.ply"), "--out", str(tmp_path / "tpl"),
                 "--views", "12", "--size", "42"]) == 0
    assert "rendered 12 views" in capsys.readouterr().err
    assert main(["templates", "render", str(tmp_path / "box.ply"), "--out", str(tmp_path / "tpl"),
                 "--views", "12", "--size", "42"]) == 0
    assert "cached" in capsys.readouterr().err
    (tmp_path / "cfg.yaml").write_text("pipeline:\n  proposal_threshold: 0.0\n  score_threshold: 0.0\n"
                                       "  min_support: 0.0\n  coarse: {ensemble: 2}\n"
                                       "  refine: {ensemble: 1, augmentations: 1}\n")
    rc = main(["segment", str(tmp_path / "scene.png"), str(tmp_path / "broken.png"), "--objects", str(tmp_path / "tpl"),
               "--weights", str(tmp_path / "tiny.safetensors"), "--config", str(tmp_path / "cfg.yaml"),
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1 and "skipping" in err and "broken.png" in err  # unreadable image reported, others done
    res = json.loads((tmp_path / "out" / "results.json").read_text())
    assert res["failed"] == [str(tmp_path / "broken.png")] and len(res["images"]) == 1
    rec = res["images"][0]
    assert rec["height"] == 90 and rec["width"] == 120 and "total" in rec["timings_ms"]
    for inst in rec["instances"]:
        mask = rle_decode(inst["segmentation"])
        assert mask.shape == (90, 120) and mask.sum() == inst["area"]
        png = np.asarray(Image.open(tmp_path / "out" / "masks" / f"scene_{inst['instance_id']:03d}_box.png"))
        assert np.array_equal(png > 0, mask)
    assert np.asarray(Image.open(tmp_path / "out" / "scene_overlay.png")).shape == (90, 120, 3)
    rc = main(["segment", str(tmp_path / "scene.png"), "--objects", str(tmp_path / "tpl"), "--weights",
               str(tmp_path / "tiny.safetensors"), "--out", str(tmp_path / "bop"), "--format", "bop", "--no-refine"])
    assert rc == 0
    bop = json.loads((tmp_path / "bop" / "results.json").read_text())
    assert isinstance(bop, list) and all(b["category_id"] == 1 for b in bop)
    # --feature-cache-dir keeps the templates' backbone features for the next run; results stay the same.
    for out in ("cached1", "cached2"):
        assert main(["segment", str(tmp_path / "scene.png"), "--objects", str(tmp_path / "tpl"), "--weights",
                     str(tmp_path / "tiny.safetensors"), "--out", str(tmp_path / out), "--no-refine",
                     "--feature-cache-dir", str(tmp_path / "features")]) == 0
    assert len(list((tmp_path / "features").glob("*.safetensors"))) == 1  # the box
    runs = [json.loads((tmp_path / o / "results.json").read_text())["images"][0]["instances"]
            for o in ("cached1", "cached2")]
    assert runs[0] == runs[1]
    (tmp_path / "taken").write_text("")
    assert main(["segment", str(tmp_path / "scene.png"), "--objects", str(tmp_path / "tpl"), "--weights",
                 str(tmp_path / "tiny.safetensors"), "--out", str(tmp_path / "o"),
                 "--feature-cache-dir", str(tmp_path / "taken")]) == 2
    assert "--feature-cache-dir: " in capsys.readouterr().err


def test_user_errors_are_one_line_with_status_2(tmp_path, capsys, monkeypatch):
    _setup(tmp_path)
    main(["templates", "render", str(tmp_path / "box.ply"), "--out", str(tmp_path / "tpl"),
          "--views", "12", "--size", "42"])
    capsys.readouterr()
    base = ["segment", str(tmp_path / "scene.png"), "--out", str(tmp_path / "o")]
    assert main(base + ["--objects", str(tmp_path / "nope"), "--weights", str(tmp_path / "tiny.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ocdit segment: error: --objects: ") and "nope does not exist" in err
    monkeypatch.setattr("ocdit_ros.model.default.WEIGHTS_DIR", tmp_path / "no_weights")  # an install without them
    assert main(base + ["--objects", str(tmp_path / "tpl")]) == 2
    assert "no default model" in capsys.readouterr().err
    cfg = tiny()
    cfg.diffuser.depth = 3
    torch.manual_seed(0)
    torch.save(OCDiT.from_config(cfg).state_dict(), tmp_path / "other.pt")
    assert main(base + ["--objects", str(tmp_path / "tpl"), "--weights", str(tmp_path / "other.pt"),
                        "--model-config", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "--weights: cannot load" in err and "unexpected keys" in err and "Traceback" not in err
    assert main(["templates", "render", str(tmp_path / "missing.obj"), "--out", str(tmp_path / "t2")]) == 1
    assert "does not exist" in capsys.readouterr().err
