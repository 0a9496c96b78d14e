"""Render object templates: views on a sphere around the object, shaded RGB + mask, tight crops.

Follows the paper's recipe (A.1): viewpoints on an icosphere, camera distance from the object's
size so it stays in view, a directional light that shows the geometry, RGB and mask per view,
cropped to the mask box and resized to the template size (render at the model's: a multiple of
its patch, e.g. 14 or 8 px; the pipeline resizes other sizes to it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
from PIL import Image

from ..crop import crop_resize
from .mesh import MeshError, ObjectMesh
from .raster import rasterize

ICOSPHERE_COUNTS = {12: 0, 42: 1, 162: 2, 642: 3}


@dataclass(frozen=True)
class RenderSettings:
    views: int = 42  # 12/42/162/642 use icosphere vertices, other counts a Fibonacci sphere
    template_size: int = 126  # output side in px; best the model's template size (a multiple of its patch)
    render_size: int = 256  # side of the full render the crops come from
    margin: float = 0.08  # context around the mask box, relative to its size
    fov_deg: float = 40.0
    ambient: float = 0.35
    light_dir_cam: tuple[float, float, float] = (-0.35, -0.55, -0.75)  # towards the light, camera frame
    # "raster": our NumPy z-buffer (no dependencies); "pybullet": TinyRenderer, faster and the
    # renderer of our synthetic scenes (render_pybullet.py).
    renderer: str = "raster"

    @classmethod
    def training(cls, template_size: int, renderer: str = "pybullet") -> "RenderSettings":
        """How our models' training templates are rendered (tools/training_data.sh); render yours
        the same way: 42 views with pybullet's TinyRenderer (the scenes' renderer) at 3x the
        template size (at least 128 px) before the crop."""
        return cls(views=42, template_size=template_size, render_size=max(128, 3 * template_size), renderer=renderer)

    @classmethod
    def from_dict(cls, d: dict) -> "RenderSettings":
        """The settings `to_dict` wrote (an archive's `render_settings`, a weights file's record)."""
        kinds = {f.name: type(f.default) for f in fields(cls)}
        if not isinstance(d, dict):
            raise ValueError(f"render settings must be a mapping of {sorted(kinds)}, not {type(d).__name__}")
        unknown = sorted(set(d) - set(kinds))
        if unknown:
            raise ValueError(f"unknown render settings {unknown}; known: {sorted(kinds)}")
        return cls(**{name: _typed(name, value, kinds[name]) for name, value in d.items()}).validate()

    @classmethod
    def for_model(cls, model) -> "RenderSettings":
        """How templates for `model` (an OCDiT) are rendered: as its training templates were, when
        its weights record it (`model.template_render`), else the training rule at its template size."""
        record = getattr(model, "template_render", None)
        if record:
            try:
                return cls.from_dict(record)
            except ValueError as exc:
                raise ValueError(f"the weights' template render record is unusable ({exc}); re-export the "
                                 "weights, or render templates with explicit options") from None
        return cls.training(model.config.template_pixels[0])

    def runnable(self) -> tuple["RenderSettings", str | None]:
        """These settings, or the NumPy rasteriser's when pybullet (the `data` extra) is not installed,
        with a note saying so (the masks agree, the shading differs: the model sees other templates)."""
        if self.renderer != "pybullet" or _pybullet_installed():
            return self, None
        return replace(self, renderer="raster"), (
            "templates for this model are rendered with pybullet, which is not installed: rendering "
            "with the NumPy rasteriser instead (same views and masks, different shading); install "
            "pybullet (pip install 'ocdit_ros[data]') for templates like the model's training ones")

    def resolve_renderer(self, renderer: str | None = None) -> tuple["RenderSettings", str | None]:
        """The settings to render with on this machine, and a note when they were swapped: with
        `renderer` when one is asked for by name (never swapped: `installed()`), else `runnable()`."""
        if renderer is None:
            return self.runnable()
        return replace(self, renderer=renderer).validate().installed(), None

    def installed(self) -> "RenderSettings":
        """These settings if their renderer can run here, else a ValueError saying what to install
        (for a renderer asked for by name, which is never swapped)."""
        if self.renderer == "pybullet" and not _pybullet_installed():
            raise ValueError("the pybullet renderer needs pybullet, which is not installed: pip install "
                             "'ocdit_ros[data]' (or pybullet), or choose the raster renderer")
        return self

    def validate(self) -> "RenderSettings":
        if self.renderer not in ("raster", "pybullet"):
            raise ValueError(f"renderer={self.renderer!r}: use raster or pybullet")
        if self.views < 1 or self.views > 2000:
            raise ValueError(f"views={self.views}: must be in [1, 2000]")
        if self.template_size < 8:
            raise ValueError(f"template_size={self.template_size}: must be at least 8 px (the model's template "
                             "size, e.g. 126 for ViT-S/14 models, 48 for the default model)")
        if self.render_size < self.template_size // 2:
            raise ValueError("render_size is too small for the template size")
        return self

    def to_dict(self) -> dict:
        d = asdict(self)
        d["light_dir_cam"] = list(self.light_dir_cam)
        return d


def _pybullet_installed() -> bool:
    try:
        import pybullet  # noqa: F401
    except ImportError:
        return False
    return True


def _typed(name: str, value, kind):
    """`value` as a setting of type `kind` (from JSON: ints for floats are fine, bools are not)."""
    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if kind is tuple:
        if isinstance(value, (list, tuple)) and len(value) == 3 and all(number(v) for v in value):
            return tuple(float(v) for v in value)
    elif kind is int:
        if number(value) and float(value).is_integer():
            return int(value)
    elif kind is float:
        if number(value):
            return float(value)
    elif isinstance(value, kind):
        return value
    want = "3 numbers" if kind is tuple else kind.__name__
    raise ValueError(f"render setting {name}={value!r}: must be {want}")


@dataclass
class TemplateViews:
    rgb: np.ndarray  # (T, S, S, 3) uint8
    masks: np.ndarray  # (T, S, S) bool
    rotations: np.ndarray  # (T, 3, 3) object-to-camera (BOP cam_R_m2c)
    translations: np.ndarray  # (T, 3) metres (BOP cam_t_m2c / 1000)
    K: np.ndarray  # (3, 3) intrinsics of the full render
    bboxes: np.ndarray  # (T, 4) mask box (x0, y0, x1, y1) in the full render
    crops: np.ndarray  # (T, 4) crop box (x0, y0, x1, y1) in the full render


def view_directions(count: int) -> np.ndarray:
    """Unit vectors from the object towards the camera, evenly spread on the sphere."""
    if count in ICOSPHERE_COUNTS:
        import trimesh

        v = np.asarray(trimesh.creation.icosphere(subdivisions=ICOSPHERE_COUNTS[count]).vertices)
        return v / np.linalg.norm(v, axis=1, keepdims=True)
    i = np.arange(count) + 0.5
    phi = np.arccos(1 - 2 * i / count)
    theta = math.pi * (1 + 5**0.5) * i
    return np.stack([np.cos(theta) * np.sin(phi), np.sin(theta) * np.sin(phi), np.cos(phi)], axis=1)


def look_at(camera: np.ndarray, target: np.ndarray = np.zeros(3)) -> tuple[np.ndarray, np.ndarray]:
    """World-to-camera R, t for an OpenCV camera (x right, y down, z forward) at `camera`."""
    z = target - camera
    z = z / np.linalg.norm(z)
    up = np.array([0.0, 0.0, 1.0])
    if abs(np.dot(z, up)) > 0.999:  # looking straight up/down: any orthogonal "up" will do
        up = np.array([0.0, 1.0, 0.0])
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])
    return R, -R @ camera


def intrinsics(settings: RenderSettings) -> np.ndarray:
    s = settings.render_size
    f = s / (2 * math.tan(math.radians(settings.fov_deg) / 2))
    return np.array([[f, 0, s / 2], [0, f, s / 2], [0, 0, 1.0]])


def render_templates(mesh: ObjectMesh, settings: RenderSettings | None = None) -> TemplateViews:
    settings = (settings or RenderSettings()).validate()
    K = intrinsics(settings)
    radius = mesh.diameter / 2
    distance = radius / (math.tan(math.radians(settings.fov_deg) / 2) * 0.85)
    verts, faces, normals, colors, uv, tex_of_face, textures = _flatten(mesh)
    light = np.asarray(settings.light_dir_cam, dtype=np.float64)
    light /= np.linalg.norm(light)
    out = {k: [] for k in ("rgb", "masks", "R", "t", "bbox", "crop")}
    s = settings.render_size
    for direction in view_directions(settings.views):
        for attempt in range(4):
            R, t = look_at(direction * distance)
            frags = rasterize(verts @ R.T + t, faces, K, s, s)
            mask = frags.face >= 0
            if mask.any():
                break
            # A flat object (a sign, a sheet) seen exactly edge-on covers no pixel centre:
            # tilt the view a little and try again.
            direction = _tilt(direction, math.radians(5.0 * (attempt + 1)))
        else:
            raise MeshError(f"mesh {mesh.name}: a view rendered empty; is the mesh degenerate?")
        rgb = _shade(frags, mask, faces, normals @ R.T, colors, uv, tex_of_face, textures, light, settings.ambient)
        ys, xs = np.nonzero(mask)
        bbox = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        crop = _square_box(bbox, settings.margin)
        out["rgb"].append(crop_resize(rgb, crop, (settings.template_size,) * 2, Image.BILINEAR))
        m = crop_resize(mask.astype(np.uint8) * 255, crop, (settings.template_size,) * 2, Image.BILINEAR) > 127
        out["masks"].append(m)
        out["R"].append(R)
        out["t"].append(t)
        out["bbox"].append(bbox)
        out["crop"].append(crop)
    return TemplateViews(np.stack(out["rgb"]), np.stack(out["masks"]), np.stack(out["R"]), np.stack(out["t"]), K,
                         np.array(out["bbox"], dtype=np.float64), np.array(out["crop"], dtype=np.float64))


def _tilt(direction: np.ndarray, angle: float) -> np.ndarray:
    """`direction` turned by `angle` diagonally, towards both perpendicular axes (a ruler seen
    end-on needs a tilt that shows its length *and* its width)."""
    a1 = np.cross(direction, [0.0, 0.0, 1.0] if abs(direction[2]) < 0.9 else [1.0, 0.0, 0.0])
    a1 /= np.linalg.norm(a1)
    a2 = np.cross(direction, a1)
    return direction * math.cos(angle) + (a1 + a2) / math.sqrt(2) * math.sin(angle)


def _flatten(mesh: ObjectMesh):
    verts, faces, normals, colors, uvs, tex_of_face, textures = [], [], [], [], [], [], []
    offset = 0
    for part in mesh.parts:
        verts.append(part.vertices)
        faces.append(part.faces + offset)
        normals.append(part.normals)
        colors.append(part.colors)
        uvs.append(part.uv if part.uv is not None else np.zeros((len(part.vertices), 2)))
        tex = -1
        if part.texture is not None and part.uv is not None:
            tex = len(textures)
            textures.append(part.texture)
        tex_of_face.append(np.full(len(part.faces), tex))
        offset += len(part.vertices)
    return (np.concatenate(verts), np.concatenate(faces), np.concatenate(normals), np.concatenate(colors),
            np.concatenate(uvs), np.concatenate(tex_of_face), textures)


def _shade(frags, mask, faces, normals_cam, colors, uv, tex_of_face, textures, light, ambient) -> np.ndarray:
    """Lambert shading (two-sided) of the visible surface; texture or vertex colour as albedo."""
    face = frags.face[mask]
    bary = frags.bary[mask]
    vidx = faces[face]
    n = (normals_cam[vidx] * bary[..., None]).sum(1)
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    n[n[:, 2] > 0] *= -1  # two-sided: use the side facing the camera
    shade = ambient + (1 - ambient) * np.clip(n @ light, 0, 1)
    albedo = (colors[vidx] * bary[..., None]).sum(1)
    tex_id = tex_of_face[face]
    for k, tex in enumerate(textures):
        sel = tex_id == k
        if sel.any():
            st = (uv[vidx[sel]] * bary[sel][..., None]).sum(1)
            albedo[sel] = _sample(tex, st)
    rgb = np.zeros(mask.shape + (3,), dtype=np.float32)
    rgb[mask] = np.clip(albedo * shade[:, None], 0, 1)
    return (rgb * 255 + 0.5).astype(np.uint8)


def _sample(tex: np.ndarray, st: np.ndarray) -> np.ndarray:
    """Bilinear texture lookup with wrap-around; uv origin at the bottom-left (OBJ/GLTF via trimesh)."""
    h, w = tex.shape[:2]
    x = (st[:, 0] % 1.0) * w - 0.5
    y = (1.0 - st[:, 1] % 1.0) * h - 0.5
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    t = tex.astype(np.float32) / 255.0

    def at(yy, xx):
        return t[yy % h, xx % w]

    return ((1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x0 + 1))
            + fy * ((1 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1)))


def _square_box(bbox, margin: float) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = bbox
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
