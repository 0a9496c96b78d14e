"""BOP reader on tiny hand-written datasets: ids, paths, cameras, depth, gray images, targets, errors."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ocdit_ros.data.bop import BopFormatError, BopSplit, open_split

H, W = 64, 80


def _rect(x, y, w, h):
    m = np.zeros((H, W), bool)
    m[y:y + h, x:x + w] = True
    return m


def _ellipse(cx, cy, rx, ry):
    yy, xx = np.mgrid[:H, :W]
    return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1


# scene -> image -> [(obj_id, mask, visib_fract)]; obj 3 in scene 0 image 1 is too faint to be a target.
SCENES = {
    0: {0: [(1, _rect(5, 5, 20, 15), 1.0), (2, _rect(40, 10, 25, 30), 0.9)],
        1: [(1, _rect(30, 30, 22, 18), 1.0), (3, _rect(2, 40, 12, 10), 0.05)]},
    3: {0: [(2, _rect(10, 12, 30, 20), 0.7), (2, _ellipse(60, 45, 10, 12), 1.0)],
        2: [(1, _rect(20, 20, 16, 16), 0.5)]},
}


def write_dataset(root: Path, gray: bool = False, ext: str = ".png", split: str = "test") -> Path:
    """SCENES as a BOP split `root/split` (rgb or gray, depth in 0.1 mm units); returns the split folder."""
    out = root / split
    for sid, images in SCENES.items():
        scene = out / f"{sid:06d}"
        image_dir = "gray" if gray else "rgb"
        for sub in (image_dir, "depth", "mask_visib", "mask"):
            (scene / sub).mkdir(parents=True, exist_ok=True)
        gt, info, cam = {}, {}, {}
        for im_id, insts in images.items():
            img = np.full((H, W) if gray else (H, W, 3), 100 + im_id, np.uint8)
            Image.fromarray(img).save(scene / image_dir / f"{im_id:06d}{ext}")
            Image.fromarray(np.full((H, W), 5000 + sid, np.uint16)).save(scene / "depth" / f"{im_id:06d}.png")
            cam[str(im_id)] = {"cam_K": [90.0, 0, W / 2, 0, 91.0, H / 2, 0, 0, 1], "depth_scale": 0.1}
            gt[str(im_id)], info[str(im_id)] = [], []
            for k, (oid, mask, vf) in enumerate(insts):
                png = mask.astype(np.uint8) * 255
                Image.fromarray(png).save(scene / "mask_visib" / f"{im_id:06d}_{k:06d}.png")
                Image.fromarray(png).save(scene / "mask" / f"{im_id:06d}_{k:06d}.png")
                gt[str(im_id)].append({"obj_id": oid, "cam_R_m2c": np.eye(3).ravel().tolist(),
                                       "cam_t_m2c": [1.0 * k, 2.0, 400.0 + sid]})
                ys, xs = np.nonzero(mask)
                info[str(im_id)].append({"bbox_visib": [int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1,
                                                        int(np.ptp(ys)) + 1], "visib_fract": vf})
        for name, data in (("scene_gt.json", gt), ("scene_gt_info.json", info), ("scene_camera.json", cam)):
            (scene / name).write_text(json.dumps(data))
    return out


def test_round_trip_ids_paths_cameras_depth_and_masks(tmp_path):
    write_dataset(tmp_path)
    split = open_split(tmp_path)  # a dataset root with one split
    assert split.path == tmp_path / "test" and split.models_dir is None and split.targets_path is None
    assert [(im.scene_id, im.image_id) for im in split] == [(0, 0), (0, 1), (3, 0), (3, 2)]
    im = split.images[3]
    assert im.rgb_path == tmp_path / "test" / "000003" / "rgb" / "000002.png"
    assert im.K.tolist() == [[90.0, 0, W / 2], [0, 91.0, H / 2], [0, 0, 1]] and im.depth_scale == 0.1
    rgb = im.load_rgb()
    assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8 and (rgb == 102).all()
    depth = im.load_depth()
    assert depth.dtype == np.float32 and depth[0, 0] == pytest.approx(0.5003)  # 5003 * 0.1 mm = 0.5003 m
    a, b = split.images[2].instances
    assert (a.obj_id, a.gt_index, b.obj_id, b.gt_index) == (2, 0, 2, 1)
    assert b.t.tolist() == [1.0, 2.0, 403.0] and b.R.shape == (3, 3) and a.bbox_visib == (10, 12, 30, 20)
    assert b.mask_visib_path.name == "000000_000001.png" and b.mask_path.parent.name == "mask"
    assert np.array_equal(split.images[2].load_mask_visib(b), SCENES[3][0][1][1])
    assert split.images[1].instances[1].visib_fract == 0.05
    assert split.object_ids() == [1, 2, 3]  # no models/: the ids in the ground truth


def test_split_folder_root_and_split_name_open_the_same(tmp_path):
    write_dataset(tmp_path)
    write_dataset(tmp_path, split="train_pbr")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "models_info.json").write_text(json.dumps({"1": {}, "2": {}, "7": {}}))
    assert open_split(tmp_path).path.name == "test"  # two splits: test is preferred
    assert open_split(tmp_path, "train_pbr").path.name == "train_pbr"
    split = open_split(tmp_path / "train_pbr")
    assert split.path.name == "train_pbr" and len(split) == 4
    assert split.models_dir == tmp_path / "models" and split.object_ids() == [1, 2, 7]
    with pytest.raises(BopFormatError, match="obj_000007.ply is missing"):
        split.model_path(7)
    with pytest.raises(BopFormatError, match="no split folder 'val'"):
        open_split(tmp_path, "val")


def test_ambiguous_root_names_the_splits_found(tmp_path):
    write_dataset(tmp_path, split="train_pbr")
    write_dataset(tmp_path, split="train_real")
    with pytest.raises(BopFormatError, match=r"\['train_pbr', 'train_real'\].*--split"):
        open_split(tmp_path)


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_gray_images_load_as_three_channels(tmp_path, ext):
    split = open_split(write_dataset(tmp_path, gray=True, ext=ext))
    rgb = split.images[1].load_rgb()
    assert split.images[1].rgb_path.parent.name == "gray" and split.images[1].rgb_path.suffix == ext
    assert rgb.shape == (H, W, 3) and (rgb == 101).all()


def test_jpg_images(tmp_path):
    split = open_split(write_dataset(tmp_path, ext=".jpg"))
    assert split.images[0].rgb_path.suffix == ".jpg" and split.images[0].load_rgb().shape == (H, W, 3)


def test_targets_file_restricts_test_images(tmp_path):
    write_dataset(tmp_path)
    targets = [{"scene_id": 0, "im_id": 1, "obj_id": 1, "inst_count": 1},
               {"scene_id": 3, "im_id": 2, "obj_id": 1, "inst_count": 1}]
    (tmp_path / "test_targets_bop19.json").write_text(json.dumps(targets))
    split = open_split(tmp_path)
    assert split.targets_path == tmp_path / "test_targets_bop19.json"
    assert [(im.scene_id, im.image_id) for im in split] == [(0, 1), (3, 2)]
    assert len(open_split(tmp_path, targets=None)) == 4  # opted out
    (tmp_path / "test_targets_bop19.json").write_text(json.dumps([{"scene": 0}]))
    with pytest.raises(BopFormatError, match="not a BOP targets list"):
        open_split(tmp_path).images


def test_missing_files_are_named(tmp_path):
    split_dir = write_dataset(tmp_path)
    (split_dir / "000003" / "scene_gt.json").unlink()
    assert len(BopSplit(split_dir)) == 2  # scene 3 is no longer a scene
    (split_dir / "000000" / "scene_gt.json").unlink()
    with pytest.raises(BopFormatError, match=r"no BOP scenes \(folders with scene_gt.json\); sub-folders: 000000"):
        BopSplit(split_dir)

    split_dir = write_dataset(tmp_path / "b")
    (split_dir / "000003" / "scene_camera.json").unlink()
    with pytest.raises(BopFormatError, match="000003: scene_camera.json is missing"):
        open_split(split_dir).images
    split_dir = write_dataset(tmp_path / "c")
    (split_dir / "000000" / "rgb" / "000001.png").unlink()
    with pytest.raises(BopFormatError, match="image 000001 listed in scene_gt.json is missing"):
        open_split(split_dir).images
    split_dir = write_dataset(tmp_path / "d")
    (split_dir / "000000" / "mask_visib" / "000000_000001.png").unlink()
    im = open_split(split_dir).images[0]
    with pytest.raises(BopFormatError, match="000000_000001.png is missing"):
        im.load_mask_visib(im.instances[1])
    (split_dir / "000000" / "scene_gt.json").write_text("{oops")
    with pytest.raises(BopFormatError, match="scene_gt.json: not valid JSON"):
        open_split(split_dir).images
    with pytest.raises(BopFormatError, match="pass --split"):
        open_split(split_dir / "000003")  # a scene folder, not a split
    with pytest.raises(BopFormatError, match="is not a folder"):
        open_split(tmp_path / "nowhere")


def test_scene_without_gt_info_or_depth(tmp_path):
    split_dir = write_dataset(tmp_path)
    (split_dir / "000000" / "scene_gt_info.json").unlink()
    for f in (split_dir / "000000" / "depth").iterdir():
        f.unlink()
    im = open_split(split_dir).images[1]
    assert im.load_depth() is None
    assert [i.visib_fract for i in im.instances] == [1.0, 1.0] and im.instances[0].bbox_visib == (-1, -1, -1, -1)
