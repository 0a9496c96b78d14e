"""Object library: small household objects from Debian's `sweethome3d-furniture`, as BOP `models/`.

Sweet Home 3D ships its catalogue as `.sh3f` zip files: a Java properties file (name, category,
size in cm, licence, creator, model path) and Y-up OBJ+MTL models, many with several materials.
We keep objects of at most 40 cm (no doors, windows or characters), apply the catalogue rotation
and per-axis size (as Sweet Home 3D does), turn them Z-up and centred, bake every part into one
mesh with one texture atlas (colour-only parts get a solid swatch, so renderers that ignore MTL
colours still see them), and write BOP models in millimetres: `obj_XXXXXX.ply` with a
`TextureFile` comment next to its PNG, plus `models_info.json`. Licence and creator stay with
every object (`objects.json`, `ATTRIBUTION.md`): CC-BY 3.0 requires attribution.

The train/val/test split is by name group (near-duplicates such as plug or cup variants share a
group and never cross splits) and is fixed in the versioned `splits/sh3d_v1.json` in the package.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..naming import obj_name

DEFAULT_FURNITURE_DIR = Path("/usr/share/sweethome3d/furniture")


def default_library_dir() -> Path:
    """Where `ocdit data scenes` and the demo look for the library: $OCDIT_CACHE/objects, else
    ~/.cache/ocdit/objects."""
    return Path(os.environ.get("OCDIT_CACHE", Path.home() / ".cache" / "ocdit")) / "objects"


def default_templates_dir() -> Path:
    """Where the node's ~/add_object renders meshes when templates_dir is unset: $OCDIT_CACHE/templates
    (~/.cache/ocdit/templates)."""
    return default_library_dir().parent / "templates"


SPLIT_FILE = Path(__file__).resolve().parent / "splits" / "sh3d_v1.json"
MAX_SIZE_CM = 40.0
MAX_FACES = 60000  # our CPU renderers stay fast; only a handful of catalogue models are larger
EXCLUDED_CATEGORIES = {"Characters", "Doors and windows", "Staircases"}
SPLIT_TARGETS = {"test": 40, "val": 20}  # objects; the rest is train (160/20/40, docs/data.md)
MAX_HELDOUT_GROUP = 6
# Words that name a variant, not the kind of object; dropped before taking the group noun.
VARIANT_WORDS = {
    "type", "rounded", "round", "square", "wall", "small", "big", "large", "little", "tall", "short", "double",
    "single", "white", "black", "red", "blue", "green", "yellow", "grey", "gray", "brown", "pink", "orange",
    "old", "new", "modern", "classic", "open", "closed", "empty", "full", "with", "and", "of", "the", "a", "on",
    "left", "right", "corner", "mini", "high", "low", "long", "wide", "narrow", "set",
}


class ObjectLibraryError(RuntimeError):
    """The furniture catalogue is missing or unusable; the message says what to do."""


@dataclass(frozen=True)
class CatalogueEntry:
    catalog_id: str  # e.g. "Blend Swap CC-0#cup"
    name: str
    category: str
    width_cm: float
    depth_cm: float
    height_cm: float
    model: str  # path inside the .sh3f zip
    creator: str
    licence: str
    source: str  # the .sh3f file stem
    door_or_window: bool
    rotation: tuple[float, ...] | None  # 3x3 row-major, model frame to Sweet Home 3D frame

    @property
    def max_size_cm(self) -> float:
        return max(self.width_cm, self.depth_cm, self.height_cm)


def name_group(name: str) -> str:
    """The head noun of a catalogue name: 'Rounded type-2 plug' -> 'plug', 'Coffee cup' -> 'cup'."""
    head = re.split(r"\bwith\b", name.lower())[0]  # "Intercom with screen" is an intercom
    words = [w for w in re.split(r"[^a-z]+", head) if w and w not in VARIANT_WORDS and len(w) > 1]
    return words[-1] if words else name.lower().strip()


def _group_order(group: str) -> str:
    return hashlib.sha1(group.encode()).hexdigest()


def assign_splits(groups: dict[str, int]) -> dict[str, str]:
    """Split name groups (group -> object count) into test/val/train by object count.

    Groups are taken in sha1 order (deterministic, unrelated to category or source) and fill
    test, then val, to their target object counts; big families of variants (> MAX_HELDOUT_GROUP
    objects, e.g. 21 plugs) stay in train, where they help most and would swamp a test set.
    """
    result, filled = {}, {"test": 0, "val": 0}
    for group in sorted(groups, key=_group_order):
        split = "train"
        if groups[group] <= MAX_HELDOUT_GROUP:
            for name in ("test", "val"):
                if filled[name] < SPLIT_TARGETS[name]:
                    split = name
                    filled[name] += groups[group]
                    break
        result[group] = split
    return result


def _read_properties(data: bytes) -> dict[str, str]:
    """Java .properties: latin-1 with \\uXXXX escapes and `key=value` lines."""
    text = data.decode("latin-1")
    props = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "!")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        props[key.strip()] = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), value.strip())
    return props


def read_catalogue(furniture_dir: str | Path = DEFAULT_FURNITURE_DIR) -> list[CatalogueEntry]:
    """Every entry of every .sh3f file in `furniture_dir`."""
    furniture_dir = Path(furniture_dir)
    files = sorted(furniture_dir.glob("*.sh3f"))
    if not files:
        raise ObjectLibraryError(
            f"no Sweet Home 3D furniture (*.sh3f) in {furniture_dir}; install it with "
            f"'sudo apt-get install --no-install-recommends sweethome3d-furniture' (make does this) "
            f"or pass --furniture DIR")
    entries = []
    for path in files:
        with zipfile.ZipFile(path) as zf:
            props = _read_properties(zf.read("PluginFurnitureCatalog.properties"))
        licence = props.get("license", "")
        indices = sorted(int(k.split("#")[1]) for k in props if k.startswith("id#"))
        for i in indices:
            get = lambda key, default="": props.get(f"{key}#{i}", default)  # noqa: E731
            rot = get("modelRotation")
            entries.append(CatalogueEntry(
                catalog_id=get("id"), name=get("name"), category=get("category"),
                width_cm=float(get("width", "0")), depth_cm=float(get("depth", "0")),
                height_cm=float(get("height", "0")), model=get("model").lstrip("/"), creator=get("creator"),
                licence=licence, source=path.stem, door_or_window=get("doorOrWindow") == "true",
                rotation=tuple(float(x) for x in rot.split()) if rot else None))
    return entries


def select_small_objects(entries: list[CatalogueEntry], max_size_cm: float = MAX_SIZE_CM) -> list[CatalogueEntry]:
    keep = [e for e in entries if e.max_size_cm <= max_size_cm and e.max_size_cm > 0 and not e.door_or_window
            and e.category not in EXCLUDED_CATEGORIES]
    return sorted(keep, key=lambda e: e.catalog_id)


def load_split(path: Path = SPLIT_FILE) -> dict:
    return json.loads(Path(path).read_text())


def build_split(entries: list[CatalogueEntry]) -> dict:
    """The split file's content for these entries (how `splits/sh3d_v1.json` was made)."""
    groups: dict[str, int] = {}
    for e in entries:
        groups[name_group(e.name)] = groups.get(name_group(e.name), 0) + 1
    splits = assign_splits(groups)
    objects = {e.catalog_id: {"name": e.name, "group": name_group(e.name), "split": splits[name_group(e.name)]}
               for e in entries}
    return {"version": 1, "source": "Debian sweethome3d-furniture 1.8-1",
            "rule": f"objects <= {MAX_SIZE_CM} cm, no doors/windows/characters; name groups in sha1 order fill "
                    f"test then val to {SPLIT_TARGETS} objects (groups > {MAX_HELDOUT_GROUP} stay train)",
            "objects": objects}


# --- conversion -------------------------------------------------------------------------------

def _solid_texture_part(geometry, colour):
    """A colour-only part as a textured one (a 4x4 swatch), so concatenation packs one atlas."""
    import trimesh
    from PIL import Image

    rgba = tuple(int(c) for c in np.asarray(colour, dtype=np.float64).round().astype(int)[:4])
    if len(rgba) == 3:
        rgba += (255,)
    part = geometry.copy()
    part.visual = trimesh.visual.TextureVisuals(
        uv=np.full((len(part.vertices), 2), 0.5),
        material=trimesh.visual.material.SimpleMaterial(image=Image.new("RGBA", (4, 4), rgba)))
    return part


def _part_colour(visual) -> np.ndarray:
    material = getattr(visual, "material", None)
    if material is not None:
        for attr in ("main_color", "diffuse", "baseColorFactor"):
            value = getattr(material, attr, None)
            if value is not None:
                value = np.asarray(value, dtype=np.float64)
                return value * 255 if value.max() <= 1.0 else value
    if getattr(visual, "kind", None) in ("vertex", "face"):
        return np.asarray(visual.main_color, dtype=np.float64)
    return np.array([180.0, 180.0, 180.0, 255.0])


def bake_mesh(scene):
    """All parts of a trimesh scene as one mesh with one texture atlas (RGB, no alpha)."""
    import trimesh

    parts = []
    for g in scene.dump():
        if not isinstance(g, trimesh.Trimesh) or not len(g.faces):
            continue
        v = g.visual
        has_texture = (isinstance(v, trimesh.visual.TextureVisuals) and v.uv is not None
                       and len(v.uv) == len(g.vertices) and getattr(v.material, "image", None) is not None)
        if has_texture:
            part = g.copy()
            # Textures with an alpha channel or palettes: plain RGB keeps PNG export and renderers simple.
            part.visual.material.image = v.material.image.convert("RGB")
            parts.append(part)
        else:
            parts.append(_solid_texture_part(g, _part_colour(v)))
    if not parts:
        raise ObjectLibraryError("model has no triangles")
    mesh = parts[0] if len(parts) == 1 else trimesh.util.concatenate(parts)
    image = mesh.visual.material.image
    if image is not None and image.mode != "RGB":
        mesh.visual.material.image = image.convert("RGB")
    return mesh


def place_mesh(mesh, entry: CatalogueEntry):
    """Catalogue rotation, per-axis size, Y-up -> Z-up, centred; vertices in millimetres."""
    v = np.asarray(mesh.vertices, dtype=np.float64)
    if entry.rotation is not None:
        v = v @ np.asarray(entry.rotation).reshape(3, 3).T
    lo, hi = v.min(0), v.max(0)
    extent = np.maximum(hi - lo, 1e-9)
    size_mm = np.array([entry.width_cm, entry.height_cm, entry.depth_cm]) * 10.0  # Sweet Home 3D: x, y(up), z
    v = (v - (lo + hi) / 2) * (size_mm / extent)
    v = np.stack([v[:, 0], -v[:, 2], v[:, 1]], axis=1)  # Y-up to Z-up, keeping a right-handed frame
    mesh.vertices = v
    return mesh


def models_info(vertices_mm: np.ndarray) -> dict:
    from scipy.spatial import ConvexHull, distance

    lo, hi = vertices_mm.min(0), vertices_mm.max(0)
    hull = vertices_mm[ConvexHull(vertices_mm).vertices] if len(vertices_mm) > 4 else vertices_mm
    diameter = float(distance.pdist(hull).max()) if len(hull) > 1 else 0.0
    return {"diameter": round(diameter, 4), "min_x": float(lo[0]), "min_y": float(lo[1]), "min_z": float(lo[2]),
            "size_x": float(hi[0] - lo[0]), "size_y": float(hi[1] - lo[1]), "size_z": float(hi[2] - lo[2])}


def write_bop_ply(mesh, path: Path) -> None:
    """A BOP-style textured PLY: vertex texture coordinates plus `comment TextureFile <png>`."""
    image = mesh.visual.material.image
    png = path.with_suffix(".png")
    image.save(png)
    data = mesh.export(file_type="ply")
    cut = data.index(b"element vertex")
    path.write_bytes(data[:cut] + f"comment TextureFile {png.name}\n".encode() + data[cut:])


def convert_entry(entry: CatalogueEntry, zf: zipfile.ZipFile, out_models: Path, obj_id: int) -> dict:
    """Extract one catalogue model, bake and place it, write obj_XXXXXX.ply/.png; returns models_info."""
    import trimesh

    folder = entry.model.rsplit("/", 1)[0] + "/"
    with tempfile.TemporaryDirectory() as tmp:
        for name in zf.namelist():
            if name.startswith(folder) and not name.endswith("/"):
                target = Path(tmp) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(name))
        scene = trimesh.load(str(Path(tmp) / entry.model), force="scene", process=False)
        mesh = bake_mesh(scene)
    if len(mesh.faces) > MAX_FACES:
        raise ObjectLibraryError(f"{len(mesh.faces)} faces (limit {MAX_FACES})")
    place_mesh(mesh, entry)
    write_bop_ply(mesh, out_models / f"{obj_name(obj_id)}.ply")
    return models_info(np.asarray(mesh.vertices))


def build_library(out: str | Path, furniture_dir: str | Path = DEFAULT_FURNITURE_DIR, split_file: Path = SPLIT_FILE,
                  limit: int | None = None, progress=None) -> dict:
    """Write `out/models/` (BOP), `out/objects.json` and `out/ATTRIBUTION.md`; returns objects.json.

    Deterministic: the same catalogue and split file give the same ids and files. Objects the
    split file does not know (a newer catalogue) go to train, so held-out splits never change.
    """
    out = Path(out)
    models = out / "models"
    models.mkdir(parents=True, exist_ok=True)
    entries = select_small_objects(read_catalogue(furniture_dir))
    if limit is not None:
        entries = entries[:limit]
    split = load_split(split_file)["objects"] if Path(split_file).is_file() else {}
    zips = {p.stem: zipfile.ZipFile(p) for p in sorted(Path(furniture_dir).glob("*.sh3f"))}
    info, objects, skipped = {}, {}, {}
    obj_id = 0
    try:
        for entry in (progress(entries) if progress else entries):
            try:
                candidate = obj_id + 1
                info_entry = convert_entry(entry, zips[entry.source], models, candidate)
            except Exception as exc:  # one bad model must not stop the library; it is reported
                skipped[entry.catalog_id] = str(exc).splitlines()[0][:200]
                continue
            obj_id = candidate
            group = split.get(entry.catalog_id, {}).get("group", name_group(entry.name))
            info[str(obj_id)] = info_entry
            objects[str(obj_id)] = {
                "name": entry.name, "catalog_id": entry.catalog_id, "group": group,
                "split": split.get(entry.catalog_id, {}).get("split", "train"),
                "category": entry.category, "size_cm": [entry.width_cm, entry.depth_cm, entry.height_cm],
                "creator": entry.creator, "licence": entry.licence, "source": f"sweethome3d-furniture/{entry.source}"}
    finally:
        for z in zips.values():
            z.close()
    (models / "models_info.json").write_text(json.dumps(info, indent=1))
    payload = {"version": 1, "split_file": Path(split_file).name, "objects": objects, "skipped": skipped}
    (out / "objects.json").write_text(json.dumps(payload, indent=1))
    (out / "ATTRIBUTION.md").write_text(attribution_text(objects))
    return payload


def attribution_text(objects: dict) -> str:
    lines = ["# Attribution", "", "3D models from Debian's `sweethome3d-furniture` (Sweet Home 3D catalogues by",
             "Emmanuel Puybaret / eTeks), converted (baked, rescaled, re-oriented) by ocdit_ros; procedural objects",
             "(data/procedural.py, ids from 10001) generated by ocdit_ros, some from bullet3's pybullet_data.", "",
             "| obj_id | name | creator | licence | catalogue |", "|---|---|---|---|---|"]
    for oid, o in objects.items():
        lines.append(f"| {oid} | {o['name']} | {o.get('creator', '')} | {o.get('licence', '')} "
                     f"| {o.get('source', '')} |")
    return "\n".join(lines) + "\n"


def split_ids(objects_json: dict, split: str) -> list[int]:
    return sorted(int(k) for k, o in objects_json["objects"].items() if o["split"] == split)

