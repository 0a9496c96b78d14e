"""Templates rendered with pybullet's TinyRenderer (CPU, no GL, no display).

The synthetic scenes are rendered with TinyRenderer, so templates from the same renderer and the
same baked asset look like the objects in the training images; it is also several times faster
than our NumPy rasteriser (42 views of a 5k-face object at 128 px: 1.8 s against 5.7 s, asset
conversion included, on a loaded 2-core machine). Same views, camera distance, crops and
output as `render.render_templates`; selected with `RenderSettings(renderer="pybullet")`.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..crop import crop_resize
from .mesh import MeshError, ObjectMesh, file_sha256
from .render import (RenderSettings, TemplateViews, _square_box, _tilt, intrinsics, look_at,
                     view_directions)


def gl_matrices(R: np.ndarray, t: np.ndarray, K: np.ndarray, width: int, height: int,
                near: float = 0.05, far: float = 5.0) -> tuple[list[float], list[float]]:
    """pybullet view and projection matrices (column-major) for an OpenCV pose and intrinsics."""
    view = np.eye(4)
    view[:3, :3], view[:3, 3] = R, t
    view = np.diag([1.0, -1.0, -1.0, 1.0]) @ view  # OpenCV camera -> OpenGL camera
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    proj = np.array([
        [2 * fx / width, 0, 1 - 2 * cx / width, 0],
        [0, 2 * fy / height, 2 * cy / height - 1, 0],
        [0, 0, -(far + near) / (far - near), -2 * far * near / (far - near)],
        [0, 0, -1, 0]])
    return view.T.reshape(-1).tolist(), proj.T.reshape(-1).tolist()


@contextlib.contextmanager
def quiet_stdout():
    """pybullet's C code prints start-up and texture chatter to fd 1; keep it off the user's terminal."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    try:
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


@dataclass(frozen=True)
class PybulletAsset:
    """A mesh as pybullet wants it, in metres: what the template renderer and the scene generator load."""
    visual: Path  # textured OBJ (+ MTL, PNG)
    collision: Path  # convex hull OBJ
    vertices: np.ndarray  # (V, 3), for silhouettes
    faces: np.ndarray
    colour: tuple[float, ...] | None  # RGBA for meshes without a texture (pybullet ignores vertex colours)


def pybullet_asset(mesh_path: str | Path, scale_to_m: float, cache_dir: str | Path, centre: bool,
                   sha256: str | None = None) -> PybulletAsset:
    """Convert once, cached by file content: scale to metres, optionally centre on the bounding box
    (as `load_mesh` does; scenes keep the model origin, which the BOP poses refer to)."""
    import trimesh

    mesh_path = Path(mesh_path)
    sha = sha256 or file_sha256(mesh_path)
    folder = Path(cache_dir) / f"{mesh_path.stem}_{sha[:12]}_{scale_to_m:g}{'_centred' if centre else ''}"
    meta = folder / "mesh.npz"
    if not meta.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        mesh = trimesh.load(str(mesh_path), force="mesh", process=False)
        v = np.asarray(mesh.vertices, dtype=np.float64)
        mesh.vertices = ((v - (v.max(0) + v.min(0)) / 2) if centre else v) * scale_to_m
        colour = None
        if not isinstance(mesh.visual, trimesh.visual.TextureVisuals) or mesh.visual.uv is None:
            colour = (np.asarray(mesh.visual.main_color[:3], dtype=np.float64) / 255).tolist() + [1.0]
            mesh.visual = trimesh.visual.ColorVisuals(mesh)
        mesh.export(str(folder / "visual.obj"))
        mesh.convex_hull.export(str(folder / "collision.obj"))
        np.savez(meta, vertices=np.asarray(mesh.vertices), faces=np.asarray(mesh.faces),
                 colour=np.asarray(colour or [-1.0] * 4))
    with np.load(meta, allow_pickle=False) as z:
        colour = tuple(z["colour"].tolist())
        return PybulletAsset(folder / "visual.obj", folder / "collision.obj", z["vertices"], z["faces"],
                             None if colour[0] < 0 else colour)


def render_templates_pybullet(mesh: ObjectMesh, settings: RenderSettings, cache_dir: str | Path) -> TemplateViews:
    """Templates of a loaded mesh (its file, scale and diameter) rendered by TinyRenderer."""
    import pybullet as pb

    asset = pybullet_asset(mesh.source, mesh.scale_to_m, cache_dir, centre=True, sha256=mesh.sha256)
    visual, diameter, colour = asset.visual, mesh.diameter, asset.colour
    K = intrinsics(settings)
    s = settings.render_size
    distance = diameter / 2 / (math.tan(math.radians(settings.fov_deg) / 2) * 0.85)
    light = np.asarray(settings.light_dir_cam, dtype=np.float64)
    light /= np.linalg.norm(light)
    out = {k: [] for k in ("rgb", "masks", "R", "t", "bbox", "crop")}
    with quiet_stdout():
        client = pb.connect(pb.DIRECT)
    try:
        kw = {"rgbaColor": list(colour)} if colour else {}
        with quiet_stdout():
            shape = pb.createVisualShape(pb.GEOM_MESH, fileName=str(visual), physicsClientId=client, **kw)
        body = pb.createMultiBody(0, -1, shape, physicsClientId=client)
        for direction in view_directions(settings.views):
            for attempt in range(4):
                R, t = look_at(direction * distance)
                view, proj = gl_matrices(R, t, K, s, s, near=distance * 0.05, far=distance * 4)
                _, _, rgba, _, seg = pb.getCameraImage(
                    s, s, view, proj, renderer=pb.ER_TINY_RENDERER, lightDirection=(R.T @ light * 10).tolist(),
                    lightAmbientCoeff=settings.ambient, lightDiffuseCoeff=0.75, lightSpecularCoeff=0.05, shadow=0,
                    flags=pb.ER_SEGMENTATION_MASK_OBJECT_AND_LINKINDEX, physicsClientId=client)
                mask = (np.asarray(seg).reshape(s, s) & ((1 << 24) - 1)) == body
                if mask.any():
                    break
                direction = _tilt(direction, math.radians(5.0 * (attempt + 1)))  # flat object seen edge-on
            else:
                raise MeshError(f"mesh {mesh.name}: a view rendered empty; is the mesh degenerate?")
            rgb = np.asarray(rgba, dtype=np.uint8).reshape(s, s, 4)[..., :3].copy()
            rgb[~mask] = 0  # black background, as the NumPy renderer
            ys, xs = np.nonzero(mask)
            bbox = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
            crop = _square_box(bbox, settings.margin)
            out["rgb"].append(crop_resize(rgb, crop, (settings.template_size,) * 2, Image.BILINEAR))
            out["masks"].append(crop_resize(mask.astype(np.uint8) * 255, crop, (settings.template_size,) * 2,
                                             Image.BILINEAR) > 127)
            out["R"].append(R)
            out["t"].append(t)
            out["bbox"].append(bbox)
            out["crop"].append(crop)
    finally:
        pb.disconnect(client)
    return TemplateViews(np.stack(out["rgb"]), np.stack(out["masks"]), np.stack(out["R"]), np.stack(out["t"]), K,
                         np.array(out["bbox"], dtype=np.float64), np.array(out["crop"], dtype=np.float64))
