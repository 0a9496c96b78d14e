"""Hand-made BOP training data (coloured rectangles, no renderer) shared by the training tests."""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ocdit_ros.naming import obj_name


def write_scene(root: Path, rng: np.random.Generator, objects=(1, 2, 3), h=60, w=80, images=3, scene_id=0) -> Path:
    """A hand-made BOP scene: coloured rectangles as instances (no renderer needed)."""
    scene = root / "train" / f"{scene_id:06d}"
    for sub in ("rgb", "mask_visib"):
        (scene / sub).mkdir(parents=True, exist_ok=True)
    gt, info = {}, {}
    colours = {1: (220, 40, 40), 2: (40, 220, 40), 3: (40, 40, 220)}
    for im in range(images):
        rgb = np.full((h, w, 3), 90, np.uint8)
        gt[str(im)], info[str(im)] = [], []
        for k, oid in enumerate(objects):
            x0, y0 = int(rng.integers(0, w - 25)), int(rng.integers(0, h - 20))
            bw, bh = int(rng.integers(12, 25)), int(rng.integers(10, 20))
            mask = np.zeros((h, w), bool)
            mask[y0:y0 + bh, x0:x0 + bw] = True
            rgb[mask] = colours[oid]
            Image.fromarray(mask.astype(np.uint8) * 255).save(scene / "mask_visib" / f"{im:06d}_{k:06d}.png")
            gt[str(im)].append({"obj_id": oid, "cam_R_m2c": np.eye(3).ravel().tolist(), "cam_t_m2c": [0, 0, 500]})
            info[str(im)].append({"bbox_visib": [x0, y0, bw, bh], "visib_fract": 1.0,
                                  "px_count_visib": int(mask.sum())})
        Image.fromarray(rgb).save(scene / "rgb" / f"{im:06d}.png")
    (scene / "scene_gt.json").write_text(json.dumps(gt))
    (scene / "scene_gt_info.json").write_text(json.dumps(info))
    cam = {"cam_K": [100.0, 0, w / 2, 0, 100.0, h / 2, 0, 0, 1], "depth_scale": 1.0}
    (scene / "scene_camera.json").write_text(json.dumps({str(i): cam for i in range(images)}))
    return root / "train"


def write_templates(folder: Path, objects=(1, 2, 3, 4), size: int = 42, render_settings: dict | None = None) -> None:
    from ocdit_ros.templates.archive import save_archive
    from ocdit_ros.templates.render import TemplateViews

    colours = {1: (220, 40, 40), 2: (40, 220, 40), 3: (40, 40, 220), 4: (200, 200, 40)}
    for oid in objects:
        rgb = np.zeros((6, size, size, 3), np.uint8)
        rgb[:, size // 5:size - size // 5, size // 5:size - size // 5] = colours[oid]
        views = TemplateViews(rgb, rgb[..., 0] > 0, np.tile(np.eye(3), (6, 1, 1)), np.zeros((6, 3)), np.eye(3),
                              np.zeros((6, 4)), np.zeros((6, 4)))
        meta = {"name": str(oid)} | ({"render_settings": render_settings} if render_settings else {})
        save_archive(folder, obj_name(oid), views, meta)
