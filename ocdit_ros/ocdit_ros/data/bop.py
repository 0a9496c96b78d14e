"""Read BOP-format datasets: ours (`ocdit data scenes`) and the real ones (YCB-V, LM-O, T-LESS, ...).

Layout (github.com/thodan/bop_toolkit, docs/bop_datasets_format.md): a dataset root with
`models/` and split folders; a split holds scene folders `000000/` with `rgb/` (or `gray/`),
`depth/`, `mask/`, `mask_visib/`, `scene_camera.json`, `scene_gt.json`, `scene_gt_info.json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_DIRS = ("rgb", "gray")
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


class BopFormatError(ValueError):
    """The folder is not (a split of) a BOP dataset; the message says what is missing where."""


@dataclass(frozen=True)
class BopInstance:
    obj_id: int
    gt_index: int  # position in scene_gt.json, the suffix of the mask files
    R: np.ndarray  # (3, 3) model to camera
    t: np.ndarray  # (3,) millimetres
    bbox_visib: tuple[int, int, int, int]  # x, y, w, h; -1s when invisible
    visib_fract: float
    mask_visib_path: Path
    mask_path: Path


@dataclass(frozen=True)
class BopImage:
    scene_id: int
    image_id: int
    rgb_path: Path
    K: np.ndarray
    depth_scale: float
    depth_path: Path | None
    instances: tuple[BopInstance, ...]

    def load_rgb(self) -> np.ndarray:
        with Image.open(self.rgb_path) as im:
            return np.asarray(im.convert("RGB"))

    def load_depth(self) -> np.ndarray | None:
        """Depth in millimetres (float32), or None when the dataset has no depth."""
        if self.depth_path is None or not self.depth_path.is_file():
            return None
        with Image.open(self.depth_path) as im:
            return np.asarray(im, dtype=np.float32) * self.depth_scale

    @staticmethod
    def load_mask(inst: BopInstance, visible: bool = True) -> np.ndarray:
        with Image.open(inst.mask_visib_path if visible else inst.mask_path) as im:
            return np.asarray(im) > 0


class BopSplit:
    """One split: `images` in (scene, image) order and the dataset's `models_dir`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.scene_dirs = sorted(p for p in self.path.iterdir() if p.is_dir() and (p / "scene_gt.json").is_file()) \
            if self.path.is_dir() else []
        if not self.scene_dirs:
            raise BopFormatError(f"{self.path}: no BOP scenes (folders with scene_gt.json)")
        self.root = self.path.parent
        self.models_dir = self.root / "models" if (self.root / "models" / "models_info.json").is_file() else None

    @cached_property
    def images(self) -> list[BopImage]:
        out = []
        for scene in self.scene_dirs:
            out.extend(_read_scene(scene))
        return out

    def object_ids(self) -> list[int]:
        if self.models_dir is not None:
            return sorted(int(k) for k in json.loads((self.models_dir / "models_info.json").read_text()))
        return sorted({i.obj_id for im in self.images for i in im.instances})

    def __len__(self) -> int:
        return len(self.images)


def open_split(path: str | Path, split: str | None = None) -> BopSplit:
    """A split folder, or a dataset root plus `split` (default: the only split, else `test`, else `val`)."""
    path = Path(path)
    if not path.is_dir():
        raise BopFormatError(f"{path} is not a folder")
    if split:
        if not (path / split).is_dir():
            raise BopFormatError(f"{path}: no split folder {split!r}")
        return BopSplit(path / split)
    if any((p / "scene_gt.json").is_file() for p in path.iterdir() if p.is_dir()):
        return BopSplit(path)
    splits = sorted(p.name for p in path.iterdir() if p.is_dir() and p.name != "models"
                    and any((s / "scene_gt.json").is_file() for s in p.iterdir() if s.is_dir()))
    if len(splits) == 1:
        return BopSplit(path / splits[0])
    for preferred in ("test", "val"):
        if preferred in splits:
            return BopSplit(path / preferred)
    raise BopFormatError(f"{path}: found split folders {splits or 'none'}; pass --split NAME or a split folder")


def _read_scene(scene: Path) -> list[BopImage]:
    def load(name: str) -> dict:
        f = scene / name
        if not f.is_file():
            raise BopFormatError(f"{scene}: {name} is missing")
        try:
            return json.loads(f.read_text())
        except json.JSONDecodeError as exc:
            raise BopFormatError(f"{f}: not valid JSON ({exc})") from None

    gt, cams = load("scene_gt.json"), load("scene_camera.json")
    info = json.loads((scene / "scene_gt_info.json").read_text()) if (scene / "scene_gt_info.json").is_file() else {}
    image_dir = next((scene / d for d in IMAGE_DIRS if (scene / d).is_dir()), None)
    if image_dir is None:
        raise BopFormatError(f"{scene}: no rgb/ or gray/ folder")
    images = []
    for key in sorted(gt, key=int):
        im_id = int(key)
        rgb = next((image_dir / f"{im_id:06d}{ext}" for ext in IMAGE_EXTS if (image_dir / f"{im_id:06d}{ext}").is_file()),
                   None)
        if rgb is None:
            raise BopFormatError(f"{image_dir}: image {im_id:06d} listed in scene_gt.json is missing")
        cam = cams.get(key)
        if cam is None:
            raise BopFormatError(f"{scene}/scene_camera.json: no entry for image {im_id}")
        infos = info.get(key, [{}] * len(gt[key]))
        insts = []
        for k, (g, i) in enumerate(zip(gt[key], infos)):
            insts.append(BopInstance(
                obj_id=int(g["obj_id"]), gt_index=k,
                R=np.asarray(g.get("cam_R_m2c", np.eye(3).ravel()), dtype=np.float64).reshape(3, 3),
                t=np.asarray(g.get("cam_t_m2c", [0, 0, 0]), dtype=np.float64),
                bbox_visib=tuple(int(v) for v in i.get("bbox_visib", [-1, -1, -1, -1])),
                visib_fract=float(i.get("visib_fract", 1.0)),
                mask_visib_path=scene / "mask_visib" / f"{im_id:06d}_{k:06d}.png",
                mask_path=scene / "mask" / f"{im_id:06d}_{k:06d}.png"))
        depth = scene / "depth" / f"{im_id:06d}.png"
        images.append(BopImage(int(scene.name) if scene.name.isdigit() else 0, im_id, rgb,
                               np.asarray(cam["cam_K"], dtype=np.float64).reshape(3, 3),
                               float(cam.get("depth_scale", 1.0)), depth if depth.is_file() else None, tuple(insts)))
    return images
