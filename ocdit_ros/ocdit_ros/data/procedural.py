"""Procedural training objects: many identities that are cheap to make (issue 11, "thousands of objects").

The furniture library has 160 training objects; a model that sees only those learns to recognise
them rather than to compare templates with the image. Procedural objects add identities that
differ in shape and appearance:

- `blob`: one of pybullet_data's 1,000 `random_urdfs` meshes (bullet3, zlib licence), when the
  pybullet_data package is installed;
- `primitive`: a box, cylinder, capsule, cone or sphere with random per-axis scale;
- `union`: two or three primitives, rotated and offset, in one mesh (a visual union; the
  generator's collision shape is the convex hull anyway).

Every object gets generated UVs (box projection along each vertex's dominant normal axis) and a
random procedural texture (the scene generator's ground textures: noise, checker, stripes, flat),
a max extent of 5-25 cm, and is written like the furniture models (textured BOP PLY in mm,
centred). All are `train` objects with ids from `FIRST_ID` on, so val/test pools - and so val/test
scenes - are identical with or without them. Object k depends only on (seed, k).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .objects import attribution_text, models_info, write_bop_ply
from ..naming import obj_name

FIRST_ID = 10001  # far above the furniture ids (about 220): both can grow without colliding
KINDS = ("blob", "primitive", "union")
SIZE_CM = (5.0, 25.0)
_PRIMITIVES = ("box", "cylinder", "capsule", "cone", "sphere")


def _blob_dir() -> Path | None:
    try:
        import pybullet_data
    except ImportError:
        return None
    d = Path(pybullet_data.getDataPath()) / "random_urdfs"
    return d if d.is_dir() else None


def _primitive(rng: np.random.Generator, kind: str):
    import trimesh

    if kind == "box":
        m = trimesh.creation.box(extents=rng.uniform(0.3, 1.0, 3))
    elif kind == "cylinder":
        m = trimesh.creation.cylinder(radius=rng.uniform(0.15, 0.5), height=rng.uniform(0.3, 1.0), sections=24)
    elif kind == "capsule":
        m = trimesh.creation.capsule(radius=rng.uniform(0.15, 0.4), height=rng.uniform(0.2, 0.8), count=[16, 16])
    elif kind == "cone":
        m = trimesh.creation.cone(radius=rng.uniform(0.2, 0.5), height=rng.uniform(0.3, 1.0), sections=24)
    else:
        m = trimesh.creation.icosphere(subdivisions=2, radius=0.5)
        m.apply_scale(rng.uniform(0.5, 1.0, 3))
    return m


def _shape(rng: np.random.Generator, kind: str, blobs: Path | None):
    import trimesh

    if kind == "blob":
        k = int(rng.integers(1000))
        return trimesh.load(blobs / f"{k:03d}" / f"{k:03d}.obj", force="mesh", process=False), f"blob {k:03d}"
    if kind == "primitive":
        name = str(rng.choice(_PRIMITIVES))
        return _primitive(rng, name), name
    parts, names = [], []
    for i in range(int(rng.integers(2, 4))):
        name = str(rng.choice(_PRIMITIVES))
        p = _primitive(rng, name)
        p.apply_transform(trimesh.transformations.random_rotation_matrix(rng.random(3)))
        if i:
            p.apply_translation(rng.uniform(-0.35, 0.35, 3))
        parts.append(p)
        names.append(name)
    return trimesh.util.concatenate(parts), "union of " + ", ".join(names)


def box_uv(vertices: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """UVs in [0, 1]: each vertex projected along its normal's dominant axis, scaled by the extent."""
    lo, hi = vertices.min(0), vertices.max(0)
    unit = (vertices - lo) / np.maximum(hi - lo, 1e-9).max()
    axis = np.abs(normals).argmax(1)
    keep = np.array([[1, 2], [0, 2], [0, 1]])[axis]  # the two axes orthogonal to the dominant one
    return np.take_along_axis(unit, keep, axis=1).clip(0.0, 1.0)


def procedural_mesh(seed: int, index: int, blobs: Path | None = None):
    """Object `index` of the set made with `seed`: a textured trimesh in mm, centred; and its name."""
    import trimesh
    from PIL import Image

    from .scenes import ground_texture

    rng = np.random.default_rng([seed, index])
    kinds = KINDS if blobs is not None else KINDS[1:]
    kind = str(rng.choice(kinds))
    mesh, name = _shape(rng, kind, blobs)
    mesh.apply_scale(rng.uniform(0.6, 1.4, 3))  # per-axis: more distinct silhouettes
    v = np.asarray(mesh.vertices, dtype=np.float64)
    lo, hi = v.min(0), v.max(0)
    size_mm = rng.uniform(*SIZE_CM) * 10.0
    mesh.vertices = (v - (lo + hi) / 2) * (size_mm / (hi - lo).max())
    texture = ground_texture(rng, size=128)
    uv = box_uv(np.asarray(mesh.vertices), np.asarray(mesh.vertex_normals))
    mesh.visual = trimesh.visual.TextureVisuals(
        uv=uv, material=trimesh.visual.material.SimpleMaterial(image=Image.fromarray(texture)))
    return mesh, f"procedural {index:04d}: {name}", kind


def add_procedural(library: str | Path, count: int, seed: int = 0, progress=None) -> dict:
    """Write `count` procedural train objects into a library (ids FIRST_ID..), replacing earlier ones.

    A library that does not exist yet is created with the procedural objects only."""
    if count < 0:
        raise ValueError("count must be >= 0")
    library = Path(library)
    models = library / "models"
    models.mkdir(parents=True, exist_ok=True)
    info_path, objects_path = models / "models_info.json", library / "objects.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    payload = json.loads(objects_path.read_text()) if objects_path.is_file() else {"version": 1, "objects": {}}
    for oid in [k for k in payload["objects"] if int(k) >= FIRST_ID]:
        payload["objects"].pop(oid)
        info.pop(oid, None)
        for f in models.glob(f"{obj_name(oid)}.*"):
            f.unlink()
    blobs = _blob_dir()
    indices = range(count)
    for i in (progress(indices) if progress else indices):
        oid = FIRST_ID + i
        mesh, name, kind = procedural_mesh(seed, i, blobs)
        write_bop_ply(mesh, models / f"{obj_name(oid)}.ply")
        info[str(oid)] = models_info(np.asarray(mesh.vertices))
        payload["objects"][str(oid)] = {
            "name": name, "group": "procedural", "split": "train", "category": f"procedural {kind}",
            "size_cm": [round(info[str(oid)][f"size_{a}"] / 10.0, 3) for a in "xyz"],
            "creator": "ocdit_ros (generated)",
            "licence": "zlib (bullet3 pybullet_data random_urdfs)" if kind == "blob" else "generated",
            "source": f"procedural/{kind} seed {seed}"}
    payload["procedural"] = {"count": count, "seed": seed, "first_id": FIRST_ID}
    info_path.write_text(json.dumps(info, indent=1))
    objects_path.write_text(json.dumps(payload, indent=1))
    (library / "ATTRIBUTION.md").write_text(attribution_text(payload["objects"]))
    return payload
