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
from typing import Iterator

import numpy as np
from PIL import Image

from ..naming import obj_name

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
    rgb_path: Path  # rgb/ or gray/ image (png, jpg or tif)
    K: np.ndarray  # (3, 3) intrinsics, pixels
    depth_scale: float  # depth PNG value * depth_scale = millimetres (BOP convention)
    depth_path: Path | None
    instances: tuple[BopInstance, ...]

    def load_rgb(self) -> np.ndarray:
        """(H, W, 3) uint8; grey images are repeated to three channels."""
        with Image.open(_existing(self.rgb_path)) as im:
            if im.mode in ("I;16", "I;16B", "I", "F"):  # 16-bit grey (some T-LESS/ITODD): scale to 8 bit
                a = np.asarray(im, dtype=np.float32)
                a = a * (255.0 / max(float(a.max()), 1.0))
                return np.repeat(a.astype(np.uint8)[..., None], 3, axis=-1)
            return np.asarray(im.convert("RGB"))

    def load_depth(self) -> np.ndarray | None:
        """Depth in metres (float32; 0 = no measurement), or None when the dataset has no depth."""
        if self.depth_path is None or not self.depth_path.is_file():
            return None
        with Image.open(self.depth_path) as im:
            # BOP: raw * depth_scale is millimetres.
            return np.asarray(im, dtype=np.float32) * np.float32(self.depth_scale / 1000.0)

    @staticmethod
    def load_mask(inst: BopInstance, visible: bool = True) -> np.ndarray:
        """(H, W) bool: the visible part (mask_visib/) or, with visible=False, the full silhouette (mask/)."""
        with Image.open(_existing(inst.mask_visib_path if visible else inst.mask_path)) as im:
            return np.asarray(im) > 0

    def load_mask_visib(self, inst: BopInstance) -> np.ndarray:
        return self.load_mask(inst, visible=True)


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise BopFormatError(f"{path} is missing")
    return path


TARGETS_FILE = "test_targets_bop19.json"


class BopSplit:
    """One split: `images` in (scene, image) order and the dataset's `models_dir`.

    `targets`: a BOP targets file (list of {scene_id, im_id, obj_id, inst_count}) that restricts
    `images` to the listed images, as the BOP challenge does. Default ("auto"): the dataset root's
    test_targets_bop19.json for splits named test*, none otherwise. None: every image.
    """

    def __init__(self, path: str | Path, targets: str | Path | None = "auto"):
        self.path = Path(path)
        if not self.path.is_dir():
            raise BopFormatError(f"{self.path} is not a folder")
        subdirs = sorted(p for p in self.path.iterdir() if p.is_dir())
        self.scene_dirs = [p for p in subdirs if (p / "scene_gt.json").is_file()]
        if not self.scene_dirs:
            names = ", ".join(p.name for p in subdirs[:5]) or "none"
            raise BopFormatError(f"{self.path}: no BOP scenes (folders with scene_gt.json); sub-folders: {names}")
        self.root = self.path.parent
        self.models_dir = self.root / "models" if (self.root / "models" / "models_info.json").is_file() else None
        if targets == "auto":
            auto = self.root / TARGETS_FILE
            targets = auto if self.path.name.startswith("test") and auto.is_file() else None
        self.targets_path = Path(targets) if targets is not None else None

    @cached_property
    def images(self) -> list[BopImage]:
        out = []
        for scene in self.scene_dirs:
            out.extend(_read_scene(scene))
        if self.targets_path is not None:
            keep = self._target_images()
            out = [im for im in out if (im.scene_id, im.image_id) in keep]
        return out

    def _target_images(self) -> set[tuple[int, int]]:
        try:
            entries = json.loads(_existing(self.targets_path).read_text())
            return {(int(e["scene_id"]), int(e["im_id"])) for e in entries}
        except (json.JSONDecodeError, TypeError, KeyError, ValueError) as exc:
            raise BopFormatError(f"{self.targets_path}: not a BOP targets list "
                                 f"([{{scene_id, im_id, obj_id, inst_count}}, ...]): {exc}") from None

    def object_ids(self) -> list[int]:
        """The dataset's objects: models_info.json keys, else the ids in the ground truth."""
        if self.models_dir is not None:
            return sorted(int(k) for k in json.loads((self.models_dir / "models_info.json").read_text()))
        return sorted({i.obj_id for im in self.images for i in im.instances})

    def model_path(self, obj_id: int) -> Path:
        if self.models_dir is None:
            raise BopFormatError(f"{self.root}: no models/ folder with models_info.json")
        return _existing(self.models_dir / f"{obj_name(obj_id)}.ply")

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[BopImage]:
        return iter(self.images)


def open_split(path: str | Path, split: str | None = None, targets: str | Path | None = "auto") -> BopSplit:
    """A split folder, or a dataset root plus `split` (default: the only split, else `test`, else `val`)."""
    path = Path(path)
    if not path.is_dir():
        raise BopFormatError(f"{path} is not a folder")
    if split:
        if not (path / split).is_dir():
            raise BopFormatError(f"{path}: no split folder {split!r}")
        return BopSplit(path / split, targets)
    if any((p / "scene_gt.json").is_file() for p in path.iterdir() if p.is_dir()):
        return BopSplit(path, targets)
    splits = sorted(p.name for p in path.iterdir() if p.is_dir() and p.name != "models"
                    and any((s / "scene_gt.json").is_file() for s in p.iterdir() if s.is_dir()))
    if len(splits) == 1:
        return BopSplit(path / splits[0], targets)
    for preferred in ("test", "val"):
        if preferred in splits:
            return BopSplit(path / preferred, targets)
    raise BopFormatError(f"{path}: found split folders {splits or 'none'} (a split holds scene folders with "
                         f"scene_gt.json); pass --split NAME or a split folder")


def _read_scene(scene: Path) -> list[BopImage]:
    def load(name: str, required: bool = True) -> dict:
        f = scene / name
        if not f.is_file():
            if required:
                raise BopFormatError(f"{scene}: {name} is missing")
            return {}
        try:
            return json.loads(f.read_text())
        except json.JSONDecodeError as exc:
            raise BopFormatError(f"{f}: not valid JSON ({exc})") from None

    gt, cams = load("scene_gt.json"), load("scene_camera.json")
    info = load("scene_gt_info.json", required=False)  # optional: without it every instance is fully visible
    image_dir = next((scene / d for d in IMAGE_DIRS if (scene / d).is_dir()), None)
    if image_dir is None:
        raise BopFormatError(f"{scene}: no rgb/ or gray/ folder")
    scene_id = int(scene.name) if scene.name.isdigit() else 0
    images = []
    for key in sorted(gt, key=int):
        im_id = int(key)
        candidates = (image_dir / f"{im_id:06d}{ext}" for ext in IMAGE_EXTS)
        rgb = next((f for f in candidates if f.is_file()), None)
        if rgb is None:
            raise BopFormatError(f"{image_dir}: image {im_id:06d} listed in scene_gt.json is missing")
        cam = cams.get(key)
        if not isinstance(cam, dict) or "cam_K" not in cam:
            raise BopFormatError(f"{scene}/scene_camera.json: no cam_K for image {im_id}")
        infos = info.get(key, [{}] * len(gt[key]))
        if len(infos) != len(gt[key]):
            raise BopFormatError(f"{scene}/scene_gt_info.json: image {im_id} has {len(infos)} entries, "
                                 f"scene_gt.json {len(gt[key])}")
        try:
            insts = tuple(_instance(scene, im_id, k, g, i) for k, (g, i) in enumerate(zip(gt[key], infos)))
        except (KeyError, TypeError, ValueError) as exc:
            raise BopFormatError(f"{scene}/scene_gt.json: image {im_id}: bad entry ({exc!r})") from None
        depth = scene / "depth" / f"{im_id:06d}.png"
        images.append(BopImage(scene_id, im_id, rgb, np.asarray(cam["cam_K"], dtype=np.float64).reshape(3, 3),
                               float(cam.get("depth_scale", 1.0)), depth if depth.is_file() else None, insts))
    return images


def _instance(scene: Path, im_id: int, k: int, g: dict, i: dict) -> BopInstance:
    return BopInstance(
        obj_id=int(g["obj_id"]), gt_index=k,
        R=np.asarray(g.get("cam_R_m2c", np.eye(3).ravel()), dtype=np.float64).reshape(3, 3),
        t=np.asarray(g.get("cam_t_m2c", [0, 0, 0]), dtype=np.float64).reshape(3),
        bbox_visib=tuple(int(v) for v in i.get("bbox_visib", [-1, -1, -1, -1])),
        visib_fract=float(i.get("visib_fract", 1.0)),
        mask_visib_path=scene / "mask_visib" / f"{im_id:06d}_{k:06d}.png",
        mask_path=scene / "mask" / f"{im_id:06d}_{k:06d}.png")
