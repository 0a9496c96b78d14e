"""Object meshes for template rendering: OBJ (+MTL, textures), PLY, GLB/GLTF, BOP model folders.

A mesh is flattened into `MeshPart`s (one per material) in metres, centred on its bounding-box
centre, with per-vertex colours or UV coordinates plus a texture. Units: BOP models are in
millimetres; `units="auto"` takes millimetres when the mesh is larger than 5 m across.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..naming import obj_name

SUPPORTED = (".obj", ".ply", ".glb", ".gltf", ".stl", ".off")


@dataclass
class MeshPart:
    vertices: np.ndarray  # (V, 3) float64, metres
    faces: np.ndarray  # (F, 3) int64
    normals: np.ndarray  # (V, 3) unit vertex normals
    colors: np.ndarray  # (V, 3) float32 in [0, 1] (material colour where textured)
    uv: np.ndarray | None = None  # (V, 2) texture coordinates, origin bottom-left
    texture: np.ndarray | None = None  # (H, W, 3) uint8


@dataclass
class ObjectMesh:
    name: str
    parts: list[MeshPart]
    sha256: str
    source: str
    scale_to_m: float
    info: dict = field(default_factory=dict)

    @property
    def vertices(self) -> np.ndarray:
        return np.concatenate([p.vertices for p in self.parts])

    @property
    def diameter(self) -> float:
        """Largest distance between two vertices (BOP's definition), via the convex hull."""
        v = self.vertices
        if len(v) > 1500:
            # The farthest pair lies on the hull; extremes along many directions cover it closely.
            dirs = np.random.default_rng(0).normal(size=(256, 3))
            proj = v @ dirs.T
            v = v[np.unique(np.concatenate([proj.argmax(0), proj.argmin(0)]))]
        d = np.sqrt(((v[:, None, :] - v[None, :, :]) ** 2).sum(-1))
        return float(d.max())


class MeshError(ValueError):
    """A mesh that cannot be used, with the reason and the fix in the message."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_mesh(path: str | Path, units: str = "auto", name: str | None = None) -> ObjectMesh:
    """Load a mesh file; `units` is "m", "mm", "cm" or "auto"."""
    import trimesh

    path = Path(path)
    if not path.is_file():
        raise MeshError(f"mesh {path} does not exist")
    if path.suffix.lower() not in SUPPORTED:
        raise MeshError(f"mesh {path}: unsupported format {path.suffix!r}; use one of {', '.join(SUPPORTED)}")
    try:
        scene = trimesh.load(str(path), force="scene", process=False)
    except Exception as exc:
        raise MeshError(f"mesh {path} could not be read: {exc}") from None
    geometries = [g for g in scene.dump() if isinstance(g, trimesh.Trimesh) and len(g.faces)]
    if not geometries:
        raise MeshError(f"mesh {path} has no triangles")
    parts = [_part(g) for g in geometries]
    all_v = np.concatenate([p.vertices for p in parts])
    extent = float((all_v.max(0) - all_v.min(0)).max())
    if extent <= 0 or not np.isfinite(extent):
        raise MeshError(f"mesh {path} is degenerate (extent {extent})")
    scale = {"m": 1.0, "cm": 0.01, "mm": 0.001}.get(units)
    if units == "auto":
        scale = 0.001 if extent > 5.0 else 1.0
    if scale is None:
        raise MeshError(f"units={units!r}: use m, cm, mm or auto")
    centre = (all_v.max(0) + all_v.min(0)) / 2
    for p in parts:
        p.vertices = (p.vertices - centre) * scale
    return ObjectMesh(name or path.stem, parts, file_sha256(path), str(path), scale)


def load_bop_models(folder: str | Path) -> list[ObjectMesh]:
    """A BOP `models/` folder: obj_XXXXXX.ply + models_info.json (millimetres)."""
    folder = Path(folder)
    info_path = folder / "models_info.json"
    if not info_path.is_file():
        raise MeshError(f"{folder} is not a BOP models folder: models_info.json is missing")
    info = json.loads(info_path.read_text())
    meshes = []
    for obj_id in sorted(info, key=lambda k: int(k)):
        ply = folder / f"{obj_name(obj_id)}.ply"
        if not ply.is_file():
            raise MeshError(f"{ply} listed in models_info.json is missing")
        mesh = load_mesh(ply, units="mm", name=obj_name(obj_id))
        mesh.info = info[obj_id]
        meshes.append(mesh)
    return meshes


def _part(g) -> MeshPart:
    import trimesh

    v = np.asarray(g.vertices, dtype=np.float64)
    f = np.asarray(g.faces, dtype=np.int64)
    visual = g.visual
    uv, texture = None, None
    colors = np.full((len(v), 3), 0.7, dtype=np.float32)  # neutral grey when nothing is given
    if isinstance(visual, trimesh.visual.texture.TextureVisuals):
        mat = visual.material
        colors[:] = _material_colour(mat)
        image = _material_image(mat)
        if image is not None and visual.uv is not None and len(visual.uv) == len(v):
            uv = np.asarray(visual.uv, dtype=np.float64)
            texture = np.asarray(image.convert("RGB"), dtype=np.uint8)
    elif visual.kind == "face":
        # Face colours: give every face its own vertices so colours stay per face.
        fc = np.asarray(visual.face_colors)[:, :3].astype(np.float32) / 255.0
        v = v[f].reshape(-1, 3)
        f = np.arange(len(v)).reshape(-1, 3)
        colors = np.repeat(fc, 3, axis=0)
    elif visual.kind == "vertex":
        colors = np.asarray(visual.vertex_colors)[:, :3].astype(np.float32) / 255.0
    mesh = trimesh.Trimesh(v, f, process=False)
    normals = np.asarray(mesh.vertex_normals, dtype=np.float64)
    return MeshPart(v, f, normals, colors, uv, texture)


def _material_colour(mat) -> np.ndarray:
    for attr in ("baseColorFactor", "diffuse", "main_color"):
        c = getattr(mat, attr, None)
        if c is not None:
            c = np.asarray(c, dtype=np.float32)[:3]
            return c / 255.0 if c.max() > 1.0 else c
    return np.array([0.7, 0.7, 0.7], dtype=np.float32)


def _material_image(mat):
    for attr in ("image", "baseColorTexture"):
        img = getattr(mat, attr, None)
        if img is not None:
            return img
    return None
