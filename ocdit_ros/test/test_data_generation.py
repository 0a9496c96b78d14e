"""Object library and scene generator: real catalogue, real physics, real renderer, checked as BOP."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ocdit_ros.data import objects as lib

trimesh = pytest.importorskip("trimesh")
pybullet = pytest.importorskip("pybullet")
from ocdit_ros.data.scenes import SceneConfig, generate_split  # noqa: E402

HAVE_CATALOGUE = any(lib.DEFAULT_FURNITURE_DIR.glob("*.sh3f"))
needs_catalogue = pytest.mark.skipif(not HAVE_CATALOGUE,
                                     reason="sweethome3d-furniture not installed (make installs it)")


def test_name_groups_collect_variants():
    assert lib.name_group("Rounded type-2 plug") == "plug"
    assert lib.name_group("Square double switch") == lib.name_group("Wall switch") == "switch"
    assert lib.name_group("Intercom with screen") == lib.name_group("Intercom") == "intercom"
    assert lib.name_group("Coffee cup") == "cup"


def test_split_file_keeps_groups_in_one_split():
    split = lib.load_split()
    assert split["version"] == 1
    by_group: dict[str, set] = {}
    for entry in split["objects"].values():
        by_group.setdefault(entry["group"], set()).add(entry["split"])
    crossing = {g: s for g, s in by_group.items() if len(s) > 1}
    assert not crossing
    counts = {s: sum(e["split"] == s for e in split["objects"].values()) for s in ("train", "val", "test")}
    assert counts["test"] >= 35 and counts["val"] >= 15 and counts["train"] >= 150


def test_assign_splits_is_deterministic_and_keeps_big_families_in_train():
    groups = {f"g{i}": 1 for i in range(100)} | {"plug": 21}
    a, b = lib.assign_splits(groups), lib.assign_splits(dict(reversed(list(groups.items()))))
    assert a == b
    assert a["plug"] == "train"
    assert sum(s == "test" for s in a.values()) == lib.SPLIT_TARGETS["test"]


@needs_catalogue
def test_build_library_writes_textured_bop_models(tmp_path):
    payload = lib.build_library(tmp_path, limit=4)
    info = json.loads((tmp_path / "models" / "models_info.json").read_text())
    assert set(info) == set(payload["objects"]) and len(info) >= 3
    for oid, entry in payload["objects"].items():
        assert entry["licence"] and entry["creator"] and entry["split"] in ("train", "val", "test")
        ply = tmp_path / "models" / f"obj_{int(oid):06d}.ply"
        assert b"comment TextureFile" in ply.read_bytes()[:400]
        mesh = trimesh.load(ply, process=False)
        assert mesh.visual.material.image is not None  # the baked atlas comes back
        extents = np.asarray(mesh.vertices).max(0) - np.asarray(mesh.vertices).min(0)
        size_mm = sorted(np.array(entry["size_cm"]) * 10)
        np.testing.assert_allclose(sorted(extents), size_mm, rtol=1e-3)  # catalogue size, in mm
        assert info[oid]["diameter"] <= np.linalg.norm(extents) + 1e-6
        assert abs(info[oid]["min_z"] + info[oid]["size_z"] / 2) < 1e-3  # centred
    assert payload["objects"]["1"]["creator"] in (tmp_path / "ATTRIBUTION.md").read_text()


def _box_models(folder: Path) -> None:
    """A plain BOP models/ folder (untextured PLY in mm), as a user's own dataset would have."""
    folder.mkdir(parents=True)
    info = {}
    for oid, extents in [(1, (60, 40, 30)), (2, (30, 30, 80)), (5, (50, 50, 50))]:
        mesh = trimesh.creation.box(extents=extents)
        mesh.visual.face_colors = [40 * oid, 200, 90, 255]
        mesh.export(folder / f"obj_{oid:06d}.ply")
        info[str(oid)] = {"diameter": float(np.linalg.norm(extents)), "min_x": -extents[0] / 2,
                          "min_y": -extents[1] / 2, "min_z": -extents[2] / 2, "size_x": extents[0],
                          "size_y": extents[1], "size_z": extents[2]}
    (folder / "models_info.json").write_text(json.dumps(info))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    root = tmp_path_factory.mktemp("bop")
    _box_models(root / "src" / "models")
    cfg = SceneConfig(width=96, height=72, views=2, objects=(3, 4), distractors=(1, 1), camera_distance=(0.4, 0.5))
    summary = generate_split(root / "src", root / "out", "test", 2, seed=3, cfg=cfg)
    return root, cfg, summary


def test_scenes_are_valid_bop(scenes):
    root, cfg, summary = scenes
    assert summary["scenes_generated"] == 2 and summary["seconds_per_scene"] > 0
    models = json.loads((root / "out" / "models" / "models_info.json").read_text())
    for scene in sorted((root / "out" / "test").glob("0*")):
        cams = json.loads((scene / "scene_camera.json").read_text())
        gts = json.loads((scene / "scene_gt.json").read_text())
        infos = json.loads((scene / "scene_gt_info.json").read_text())
        assert set(cams) == set(gts) == set(infos) == {"0", "1"}
        for im_id, gt in gts.items():
            assert len(gt) == len(infos[im_id]) >= 3
            rgb = np.asarray(Image.open(scene / "rgb" / f"{int(im_id):06d}.jpg"))
            assert rgb.shape == (cfg.height, cfg.width, 3)
            K = np.array(cams[im_id]["cam_K"]).reshape(3, 3)
            for k, (g, info) in enumerate(zip(gt, infos[im_id])):
                assert str(g["obj_id"]) in models
                R = np.array(g["cam_R_m2c"]).reshape(3, 3)
                np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-6)
                visib = np.asarray(Image.open(scene / "mask_visib" / f"{int(im_id):06d}_{k:06d}.png")) > 0
                full = np.asarray(Image.open(scene / "mask" / f"{int(im_id):06d}_{k:06d}.png")) > 0
                assert info["px_count_visib"] == visib.sum()
                if info["px_count_all"]:
                    assert info["visib_fract"] == pytest.approx(visib.sum() / info["px_count_all"], abs=1e-5)
                assert not (visib & ~full).any()  # the amodal mask contains the visible one
                if info["visib_fract"] > 0.97 and visib.sum() > 100:
                    # Unoccluded: our silhouette of the posed model matches pybullet's render.
                    assert (visib & full).sum() / (visib | full).sum() > 0.85
                if visib.sum() > 20:
                    # The object's centre projects near its visible pixels: pose, K and masks agree.
                    t = np.array(g["cam_t_m2c"])
                    u, v = K[0, 0] * t[0] / t[2] + K[0, 2], K[1, 1] * t[1] / t[2] + K[1, 2]
                    x, y, w, h = info["bbox_obj"]
                    assert x - 3 <= u <= x + w + 3 and y - 3 <= v <= y + h + 3


def test_depth_matches_the_annotated_poses(scenes):
    """Depth PNG (depth_scale) at visible pixels equals the depth of the posed model surface."""
    from ocdit_ros.templates.raster import rasterize

    root, cfg, _ = scenes
    scene = root / "out" / "test" / "000000"
    cams = json.loads((scene / "scene_camera.json").read_text())
    gts = json.loads((scene / "scene_gt.json").read_text())
    checked = 0
    for k, g in enumerate(gts["0"]):
        visib = np.asarray(Image.open(scene / "mask_visib" / f"000000_{k:06d}.png")) > 0
        if visib.sum() < 30:
            continue
        mesh = trimesh.load(root / "out" / "models" / f"obj_{g['obj_id']:06d}.ply", process=False)
        R, t = np.array(g["cam_R_m2c"]).reshape(3, 3), np.array(g["cam_t_m2c"])
        K = np.array(cams["0"]["cam_K"]).reshape(3, 3)
        K[0, 2] += 0.5  # TinyRenderer puts pixel centres half a pixel off our rasteriser (scenes.full_mask)
        frags = rasterize(np.asarray(mesh.vertices) @ R.T + t, np.asarray(mesh.faces), K, cfg.height, cfg.width)
        depth = np.asarray(Image.open(scene / "depth" / "000000.png")).astype(np.float64) * cams["0"]["depth_scale"]
        both = visib & np.isfinite(frags.depth)
        assert both.sum() > 0.8 * visib.sum()
        assert np.median(np.abs(depth[both] - frags.depth[both])) < 3.0  # millimetres
        checked += 1
    assert checked >= 1


def test_generation_is_deterministic_and_resumable(scenes, tmp_path):
    root, cfg, _ = scenes
    again = generate_split(root / "src", tmp_path, "test", 1, seed=3, cfg=cfg)
    assert again["scenes_generated"] == 1
    a = (root / "out" / "test" / "000000" / "rgb" / "000001.jpg").read_bytes()
    assert (tmp_path / "test" / "000000" / "rgb" / "000001.jpg").read_bytes() == a
    assert (root / "out" / "test" / "000000" / "scene_gt.json").read_text() == \
        (tmp_path / "test" / "000000" / "scene_gt.json").read_text()
    (tmp_path / "test" / "000000" / "scene_gt_info.json").unlink()  # an interrupted scene
    resumed = generate_split(root / "src", tmp_path, "test", 2, seed=3, cfg=cfg)
    assert resumed["scenes_generated"] == 2  # the broken one again plus the new one
    skipped = generate_split(root / "src", tmp_path, "test", 2, seed=3, cfg=cfg)
    assert skipped["scenes_generated"] == 0


def test_cli_errors_are_one_line(tmp_path, capsys):
    from ocdit_ros.cli import main

    code = main(["data", "scenes", "--split", "val", "--num-scenes", "1", "--out", str(tmp_path),
                 "--objects", str(tmp_path / "nope")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "does not exist" in err and "ocdit data objects" in err and "\n" not in err


# --- procedural objects (data/procedural.py) ---------------------------------------------------

def test_procedural_objects_are_deterministic_textured_and_sized():
    from ocdit_ros.data.procedural import SIZE_CM, procedural_mesh

    a, name_a, _ = procedural_mesh(7, 3)
    b, name_b, _ = procedural_mesh(7, 3)
    c, _, _ = procedural_mesh(7, 4)
    assert name_a == name_b
    np.testing.assert_array_equal(a.vertices, b.vertices)
    np.testing.assert_array_equal(np.asarray(a.visual.material.image), np.asarray(b.visual.material.image))
    assert a.vertices.shape != c.vertices.shape or not np.allclose(a.vertices, c.vertices)
    kinds = set()
    for i in range(12):
        m, _, kind = procedural_mesh(0, i)
        kinds.add(kind)
        v = np.asarray(m.vertices)
        lo, hi = v.min(0), v.max(0)
        assert SIZE_CM[0] * 10 - 1e-6 <= (hi - lo).max() <= SIZE_CM[1] * 10 + 1e-6  # mm
        np.testing.assert_allclose((lo + hi) / 2, 0, atol=1e-6)  # centred, like the furniture models
        uv = np.asarray(m.visual.uv)
        assert uv.shape == (len(v), 2) and uv.min() >= 0 and uv.max() <= 1
        assert len(np.unique(uv.round(3), axis=0)) > 4  # a real mapping, not one texel for all
    assert len(kinds) >= 2


def test_procedural_objects_join_train_only_and_keep_val_scenes(tmp_path):
    """Val/test pools and so val/test scenes are identical with or without procedural objects."""
    from ocdit_ros.data.procedural import FIRST_ID, add_procedural
    from ocdit_ros.data.scenes import split_pool

    lib_dir = tmp_path / "lib"
    _box_models(lib_dir / "models")
    (lib_dir / "objects.json").write_text(json.dumps({"version": 1, "objects": {
        "1": {"name": "a", "split": "val"}, "2": {"name": "b", "split": "val"}, "5": {"name": "c", "split": "train"}}}))
    cfg = SceneConfig(width=96, height=72, views=1, objects=(3, 4), distractors=(0, 0), camera_distance=(0.4, 0.5))
    generate_split(lib_dir, tmp_path / "before", "val", 1, seed=2, cfg=cfg)
    add_procedural(lib_dir, 5, seed=1)
    assert split_pool(lib_dir, "val") == [1, 2]
    assert split_pool(lib_dir, "train") == [5] + list(range(FIRST_ID, FIRST_ID + 5))
    generate_split(lib_dir, tmp_path / "after", "val", 1, seed=2, cfg=cfg)
    for name in ("rgb/000000.jpg", "scene_gt.json"):
        assert (tmp_path / "before" / "val" / "000000" / name).read_bytes() == \
            (tmp_path / "after" / "val" / "000000" / name).read_bytes()
    ply = lib_dir / "models" / f"obj_{FIRST_ID + 4:06d}.ply"
    assert trimesh.load(ply, process=False).visual.material.image is not None  # textured, like the furniture
    generate_split(lib_dir, tmp_path / "train", "train", 1, seed=2, cfg=cfg)
    gt = json.loads((tmp_path / "train" / "train" / "000000" / "scene_gt.json").read_text())
    drawn = {g["obj_id"] for g in gt["0"]}
    assert any(o >= FIRST_ID for o in drawn)  # the generator drops them into train scenes
    again = add_procedural(lib_dir, 2, seed=1)  # fewer: the rest go, the furniture stays
    assert sorted(map(int, again["objects"])) == [1, 2, 5, FIRST_ID, FIRST_ID + 1]
    assert not (lib_dir / "models" / f"obj_{FIRST_ID + 4:06d}.ply").exists()
    assert set(json.loads((lib_dir / "models" / "models_info.json").read_text())) == {"1", "2", "5", "10001", "10002"}
