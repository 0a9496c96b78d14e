"""A training set packed for another machine: `ocdit data pack` (the lent GPU gets at most 64 MiB).

The pack is a plain tar.gz: `scenes<k>/` is the k-th BOP split folder given, with only the files
training examples read (`rgb/`, `mask_visib/`, `scene_gt.json`, `scene_gt_info.json`,
`scene_camera.json`); `templates/` holds the archives of the objects those scenes show and no
others (val and test objects never travel as negatives). `tar -xzf PACK -C DIR` unpacks it
anywhere, without this package, pybullet or trimesh. Members are sorted with fixed owners and
times, so the same data always packs to the same bytes.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

from ..naming import obj_name

SCENE_FILES = ("scene_gt.json", "scene_gt_info.json", "scene_camera.json")
SCENE_FOLDERS = ("rgb", "mask_visib")  # depth and amodal masks stay behind: training reads neither


def pack_training_data(splits: list[str | Path], templates: str | Path, out: str | Path) -> dict:
    """Write the pack; returns counts and its size. Raises FileNotFoundError naming what is missing."""
    splits, templates, out = [Path(s) for s in splits], Path(templates), Path(out)
    obj_ids: set[int] = set()
    scene_dirs = []
    for k, split in enumerate(splits):
        scenes = sorted(p for p in split.iterdir() if (p / "scene_gt.json").is_file()) if split.is_dir() else []
        if not scenes:
            raise FileNotFoundError(f"{split}: no scene folders with scene_gt.json (a BOP split folder, "
                                    f"e.g. DATA/train from 'ocdit data scenes')")
        for scene in scenes:
            gt = json.loads((scene / "scene_gt.json").read_text())
            obj_ids.update(int(g["obj_id"]) for per_image in gt.values() for g in per_image)
            scene_dirs.append((f"scenes{k}/{scene.name}", scene))
    archives = [templates / f"{obj_name(oid)}{ext}" for oid in sorted(obj_ids) for ext in (".npz", ".json")]
    missing = [p.name for p in archives if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{templates}: no template archive for "
                                f"{missing[:4]}{' ...' if len(missing) > 4 else ''}; "
                                f"render them with 'ocdit templates render'")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    images = 0
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        for arc, scene in scene_dirs:
            for name in SCENE_FILES:
                if (scene / name).is_file():
                    _add(tar, scene / name, f"{arc}/{name}")
            for folder in SCENE_FOLDERS:
                files = sorted((scene / folder).iterdir()) if (scene / folder).is_dir() else []
                images += len(files) if folder == "rgb" else 0
                for f in files:
                    _add(tar, f, f"{arc}/{folder}/{f.name}")
        for f in archives:
            _add(tar, f, f"templates/{f.name}")
    tmp.replace(out)  # a killed pack never leaves a half-written file under the final name
    return {"pack": str(out), "bytes": out.stat().st_size, "scenes": len(scene_dirs), "images": images,
            "objects": len(obj_ids), "split_folders": [f"scenes{k}" for k in range(len(splits))]}


def _add(tar: tarfile.TarFile, path: Path, arcname: str) -> None:
    data = path.read_bytes()
    info = tarfile.TarInfo(arcname)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))
