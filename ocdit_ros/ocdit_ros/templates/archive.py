"""Template archives: `<id>.npz` (arrays, no pickles) + `<id>.json` (metadata), with a render cache.

An archive is re-rendered only when the mesh bytes (SHA-256) or the render settings change.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from .mesh import ObjectMesh, load_mesh
from .render import RenderSettings, TemplateViews, render_templates

FORMAT_VERSION = 1
_ARRAYS = ("rgb", "masks", "rotations", "translations", "K", "bboxes", "crops")


class ArchiveError(ValueError):
    """A template archive that cannot be used, with the reason."""


@dataclass
class ObjectTemplates:
    id: str
    name: str
    rgb: np.ndarray  # (T, S, S, 3) uint8
    masks: np.ndarray  # (T, S, S) bool
    meta: dict = field(default_factory=dict)
    poses: dict = field(default_factory=dict)  # rotations, translations, K, bboxes, crops

    @property
    def object_id(self) -> str:
        return self.id

    def to_tensor(self) -> torch.Tensor:
        """(T, 3, S, S) float32 RGB in [0, 1] (black background, as rendered)."""
        return torch.from_numpy(self.rgb).permute(0, 3, 1, 2).float() / 255.0


def safe_id(name: str) -> str:
    sid = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")
    if not sid:
        raise ArchiveError(f"cannot make an object id from {name!r}")
    return sid


def save_archive(folder: str | Path, object_id: str, views: TemplateViews, meta: dict) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    npz = folder / f"{object_id}.npz"
    np.savez_compressed(npz, rgb=views.rgb, masks=views.masks, rotations=views.rotations,
                        translations=views.translations, K=views.K, bboxes=views.bboxes, crops=views.crops)
    meta = dict(meta, id=object_id, format_version=FORMAT_VERSION, num_views=int(len(views.rgb)),
                template_size=int(views.rgb.shape[1]), ocdit_ros_version=__version__)
    (folder / f"{object_id}.json").write_text(json.dumps(meta, indent=1))
    return npz


def load_archive(npz_path: str | Path) -> ObjectTemplates:
    npz_path = Path(npz_path)
    meta_path = npz_path.with_suffix(".json")
    if not npz_path.is_file():
        raise ArchiveError(f"template archive {npz_path} does not exist")
    if not meta_path.is_file():
        raise ArchiveError(f"template archive {npz_path} has no metadata file {meta_path.name}; re-render it")
    try:
        meta = json.loads(meta_path.read_text())
        with np.load(npz_path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in _ARRAYS}
    except KeyError as exc:
        raise ArchiveError(f"template archive {npz_path} lacks array {exc}; re-render it") from None
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise ArchiveError(f"template archive {npz_path} is corrupt ({exc}); re-render it") from None
    rgb, masks = arrays["rgb"], arrays["masks"]
    if rgb.ndim != 4 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8 or masks.shape != rgb.shape[:3]:
        raise ArchiveError(f"template archive {npz_path} has malformed arrays rgb {rgb.shape}, masks {masks.shape}")
    oid = str(meta.get("id", npz_path.stem))
    return ObjectTemplates(oid, str(meta.get("name", oid)), rgb, masks.astype(bool), meta,
                           {k: arrays[k] for k in _ARRAYS[2:]})


def load_template_dir(folder: str | Path) -> list[ObjectTemplates]:
    """Every `*.npz` archive of a folder, sorted by id."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArchiveError(f"template folder {folder} does not exist")
    return [load_archive(p) for p in sorted(folder.glob("*.npz"))]


def render_or_load(mesh_path: str | Path, out_dir: str | Path, settings: RenderSettings | None = None,
                   object_id: str | None = None, units: str = "auto", mesh: ObjectMesh | None = None
                   ) -> tuple[ObjectTemplates, bool]:
    """Templates of a mesh, rendered unless a cached archive has the same mesh hash and settings.

    Returns (templates, cache_hit).
    """
    settings = (settings or RenderSettings()).validate()
    mesh_path = Path(mesh_path)
    from .mesh import file_sha256

    if not mesh_path.is_file():
        raise ArchiveError(f"mesh {mesh_path} does not exist")
    sha = file_sha256(mesh_path)
    oid = safe_id(object_id or mesh_path.stem)
    npz = Path(out_dir) / f"{oid}.npz"
    if npz.is_file():
        try:
            cached = load_archive(npz)
            if cached.meta.get("mesh_sha256") == sha and cached.meta.get("render_settings") == settings.to_dict() \
                    and cached.meta.get("units") == units:
                return cached, True
        except ArchiveError:
            pass  # corrupt cache: render again
    mesh = mesh or load_mesh(mesh_path, units=units, name=oid)
    if settings.renderer == "pybullet":
        from .render_pybullet import render_templates_pybullet

        views = render_templates_pybullet(mesh, settings, Path(out_dir) / ".pybullet_assets")
    else:
        views = render_templates(mesh, settings)
    meta = {"name": mesh.name, "mesh_path": str(mesh_path.resolve()), "mesh_sha256": sha, "units": units,
            "scale_to_m": mesh.scale_to_m, "diameter_m": mesh.diameter, "render_settings": settings.to_dict(),
            "renderer": {"raster": "ocdit_ros.templates.raster (NumPy z-buffer, Lambert)",
                         "pybullet": "pybullet TinyRenderer"}[settings.renderer], "bop_info": mesh.info}
    save_archive(out_dir, oid, views, meta)
    return load_archive(npz), False
