"""Training examples from BOP scenes: masks (VAE), multi-object crops (coarse), object crops (refine),
crops with per-patch object labels (backbone pretraining by template matching).

Every example is a pure function of (seed, global index): its own NumPy generator draws the image,
crop, objects, template views, augmentations and also the diffusion noise. So a resumed run sees
exactly the batches it would have seen, worker count does not matter, and DDP ranks that split a
batch compute the same gradient as one process on the whole batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..crop import crop_resize
from ..model.config import OCDiTConfig
from ..naming import obj_id_of
from .config import TrainConfig


@dataclass(frozen=True)
class GtInstance:
    obj_id: int
    mask_path: str
    bbox: tuple[int, int, int, int]  # visible box x, y, w, h


@dataclass(frozen=True)
class GtImage:
    rgb_path: str
    instances: tuple[GtInstance, ...]  # visible enough to be targets


def index_split(split_dir: str | Path, visib_threshold: float = 0.1) -> list[GtImage]:
    """All images of a BOP split folder with their target instances (visib_fract >= threshold)."""
    from ..data.bop import BopFormatError, BopSplit

    try:
        split = BopSplit(split_dir)
        images = split.images
    except BopFormatError as exc:
        raise FileNotFoundError(f"{exc}; generate training scenes with 'ocdit data scenes'") from None
    return [GtImage(str(im.rgb_path), tuple(GtInstance(i.obj_id, str(i.mask_visib_path), i.bbox_visib)
                                            for i in im.instances if i.visib_fract >= visib_threshold))
            for im in images]


def patch_labels(masks: list[np.ndarray], owners: list[int], patch: int) -> torch.Tensor:
    """(h, w) long: the owner of the mask covering more than half a patch, else -1 (masks: (H, W) bool)."""
    h, w = masks[0].shape if masks else (patch, patch)
    labels = torch.full((h // patch, w // patch), -1, dtype=torch.long)
    for m, o in zip(masks, owners):
        cover = torch.nn.functional.avg_pool2d(torch.from_numpy(m).float()[None, None], patch)[0, 0]
        labels[cover > 0.5] = o
    return labels


# The pipeline pads views with grey (views.View.render, fill 0.5): training crops that leave the
# image are padded the same way.
_IMAGE_FILL = 128


def random_recolour(rng: np.random.Generator) -> np.ndarray:
    """A 3x3 colour matrix: hue rotation about the grey axis, saturation and brightness change.

    Greys (the templates' black background too) stay grey, so only an object's own colours move.
    Applied alike to an object's image pixels and its templates, it makes a new object identity
    out of a known shape: the model must compare templates with the image, not remember colours.
    """
    theta = rng.uniform(-math.pi, math.pi)
    k = np.full(3, 1 / math.sqrt(3))
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    rot = math.cos(theta) * np.eye(3) + math.sin(theta) * cross + (1 - math.cos(theta)) * np.outer(k, k)
    sat = rng.uniform(0.6, 1.4)
    matrix = sat * rot + (1 - sat) * np.full((3, 3), 1 / 3)
    return matrix * rng.uniform(0.75, 1.25)


def apply_colour(pixels: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """uint8 (..., 3) pixels through a 3x3 colour matrix."""
    return np.clip(pixels.astype(np.float32) @ matrix.T.astype(np.float32), 0, 255).astype(np.uint8)


def colour_jitter(img: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Brightness, contrast, saturation, per-channel gain and sensor noise (uint8 in, uint8 out)."""
    x = img.astype(np.float32) / 255
    x = x * rng.uniform(1 - strength, 1 + strength) + rng.uniform(-strength, strength) * 0.3
    mean = x.mean()
    x = (x - mean) * rng.uniform(1 - strength, 1 + strength) + mean
    grey = x.mean(-1, keepdims=True)
    x = grey + (x - grey) * rng.uniform(1 - strength, 1 + strength)
    x = x * rng.uniform(1 - strength / 2, 1 + strength / 2, 3)
    x = x + rng.normal(0, rng.uniform(0, 0.03), x.shape)
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


class ExampleSource:
    """Draws the training examples of one stage; `example(index)` returns a dict of tensors.
    ('sample' is kept for diffusion sampling: `Diffuser.sample`, `MaskModel.sample`.)"""

    def __init__(self, cfg: TrainConfig, model_cfg: OCDiTConfig, templates: dict | None = None):
        self.cfg = cfg
        self.model_cfg = model_cfg
        self.images = [im for d in cfg.data for im in index_split(d, cfg.visib_threshold)]
        self.with_objects = [i for i, im in enumerate(self.images) if im.instances]
        if not self.with_objects:
            raise ValueError(f"no visible instances in {cfg.data}")
        self.image_size = tuple(model_cfg.image_size)
        self.mask_size = model_cfg.mask_size(self.image_size)
        down = model_cfg.vae.downsampling
        self.latent_size = (self.mask_size[0] // down, self.mask_size[1] // down)
        self.templates = templates or {}  # obj_id -> (V, S, S, 3) uint8
        present = sorted({i.obj_id for im in self.images for i in im.instances})
        missing = [o for o in present if o not in self.templates] if cfg.stage != "vae" else []
        if missing:
            raise ValueError(f"no templates for obj_id(s) {missing[:10]} in {cfg.templates}")
        self.object_pool = np.array(sorted(self.templates)) if self.templates else np.array(present)

    def __len__(self) -> int:
        return len(self.images)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.cfg.seed, index])

    def example(self, index: int) -> dict[str, torch.Tensor]:
        rng = self.rng(index)
        z = self.model_cfg.vae.z_channels
        if self.cfg.stage == "backbone":
            return self._matching(rng)
        if self.cfg.stage == "vae":
            out = self._vae(rng)
            out["posterior_eps"] = torch.from_numpy(rng.standard_normal((z, *self.latent_size)).astype(np.float32))
            return out
        out = self._coarse(rng) if self.cfg.stage == "coarse" else self._refine(rng)
        n = out["masks"].shape[0]
        # Diffusion randomness, drawn here so it belongs to the example (see module docstring).
        out["posterior_eps"] = torch.from_numpy(rng.standard_normal((n, z, *self.latent_size)).astype(np.float32))
        out["noise"] = torch.from_numpy(rng.standard_normal((n, z, *self.latent_size)).astype(np.float32))
        out["sigma_u"] = torch.tensor(rng.random(), dtype=torch.float32)
        return out

    # -- helpers -------------------------------------------------------------------------
    def _load(self, im: GtImage) -> np.ndarray:
        with Image.open(im.rgb_path) as f:
            return np.array(f.convert("RGB"))  # writable: recolouring edits it in place

    def _mask(self, inst: GtInstance) -> np.ndarray:
        with Image.open(inst.mask_path) as f:
            return np.asarray(f.convert("L"))

    def _templates(self, obj_ids: list[int], rng: np.random.Generator,
                   colours: dict[int, np.ndarray] | None = None) -> torch.Tensor:
        t = self.cfg.templates_per_object
        views = []
        for oid in obj_ids:
            tpl = self.templates[oid]
            pick = rng.choice(len(tpl), size=t, replace=len(tpl) < t)
            chosen = tpl[pick]
            if colours and oid in colours:
                chosen = apply_colour(chosen, colours[oid])
            views.append(chosen)
        arr = np.stack(views)  # (N, T, S, S, 3)
        return torch.from_numpy(arr).permute(0, 1, 4, 2, 3).float() / 255

    def _crop_image(self, rgb: np.ndarray, box, rng: np.random.Generator) -> torch.Tensor:
        """The model's input crop of `box` (grey outside the image), colour-jittered."""
        return self._image_tensor(crop_resize(rgb, box, self.image_size, Image.BILINEAR, _IMAGE_FILL), rng)

    def _image_tensor(self, img: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        img = colour_jitter(img, rng, self.cfg.colour_jitter)
        return torch.from_numpy(img).permute(2, 0, 1).float() / 255

    def _crop_masks(self, full_masks: list[np.ndarray], box, size: tuple[int, int] | None = None) -> list[np.ndarray]:
        """The masks inside `box` at `size` (default: the mask grid) as bool."""
        return [crop_resize(m, box, size or self.mask_size, Image.BILINEAR) > 127 for m in full_masks]

    def _draw_colour(self, rng: np.random.Generator) -> np.ndarray | None:
        """A new colour for one object with probability cfg.recolour_prob (no draw when it is 0)."""
        p = self.cfg.recolour_prob
        return random_recolour(rng) if p > 0 and rng.random() < p else None

    def _recolour(self, rgb: np.ndarray, im: GtImage, full_masks: list[np.ndarray],
                  rng: np.random.Generator) -> dict[int, np.ndarray]:
        """Recolour each object of the image (probability cfg.recolour_prob, one matrix per object
        id, shared by its instances) in place; returns obj_id -> matrix for its templates."""
        matrices: dict[int, np.ndarray] = {}
        for oid in sorted({i.obj_id for i in im.instances}):
            if (m := self._draw_colour(rng)) is not None:
                matrices[oid] = m
        for inst, m in zip(im.instances, full_masks):
            if inst.obj_id in matrices:
                sel = m > 127
                rgb[sel] = apply_colour(rgb[sel], matrices[inst.obj_id])
        return matrices

    # -- stages --------------------------------------------------------------------------
    def random_scene_crop(self, rng: np.random.Generator):
        """An image with objects, recoloured, and a random square crop box (crop_scale of its short
        side); returns (image, rgb, full masks, obj_id -> colour matrix, box)."""
        im = self.images[self.with_objects[rng.integers(len(self.with_objects))]]
        rgb = self._load(im)
        full_masks = [self._mask(i) for i in im.instances]
        colours = self._recolour(rgb, im, full_masks, rng)
        h, w = rgb.shape[:2]
        side = rng.uniform(*self.cfg.crop_scale) * min(h, w)
        # A side beyond the image (crop_scale > 1) pads it, as the pipeline's full view does.
        x0, y0 = _offset(w, side, rng), _offset(h, side, rng)
        return im, rgb, full_masks, colours, (x0, y0, x0 + side, y0 + side)

    def _coarse(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        im, rgb, full_masks, colours, box = self.random_scene_crop(rng)
        masks = self._crop_masks(full_masks, box)
        kept = [(inst, m) for inst, m in zip(im.instances, masks) if m.sum() >= 4]
        n = cfg.objects_per_image
        queries: list[tuple[int, np.ndarray]] = []
        if kept:
            # A random foreground point; each object's weight falls with the distance from it to
            # that object's nearest instance, which also becomes the object's target mask.
            _, anchor = kept[rng.integers(len(kept))]
            ys, xs = np.nonzero(anchor)
            k = rng.integers(len(ys))
            py, px = ys[k], xs[k]
            nearest: dict[int, tuple[float, np.ndarray]] = {}
            for inst, m in kept:
                my, mx = np.nonzero(m)
                d = float(np.min((my - py) ** 2 + (mx - px) ** 2)) ** 0.5
                if inst.obj_id not in nearest or d < nearest[inst.obj_id][0]:
                    nearest[inst.obj_id] = (d, m)
            ids = list(nearest)
            weights = np.array([math.exp(-nearest[o][0] / (cfg.proximity_scale * self.mask_size[0])) for o in ids])
            gumbel = np.log(weights + 1e-12) - np.log(-np.log(rng.random(len(ids))))
            for j in np.argsort(-gumbel)[:n]:
                queries.append((ids[j], nearest[ids[j]][1]))
        present = {i.obj_id for i in im.instances}
        absent = [o for o in self.object_pool.tolist() if o not in present]
        missing = n - len(queries)
        if missing and not absent:
            raise ValueError(f"objects_per_image={n}, but every template object is in the image; "
                             f"add templates of more objects or lower objects_per_image")
        # Few absent objects (a small object set): the same one may fill several slots.
        for o in rng.choice(absent, size=missing, replace=len(absent) < missing) if missing else []:
            queries.append((int(o), np.zeros(self.mask_size, dtype=bool)))
            if (m := self._draw_colour(rng)) is not None:
                colours.setdefault(int(o), m)
        order = rng.permutation(n)
        queries = [queries[i] for i in order]
        image = self._crop_image(rgb, box, rng)
        return {"images": image, "templates": self._templates([q[0] for q in queries], rng, colours),
                "masks": torch.from_numpy(np.stack([q[1] for q in queries])).float()}

    def _matching(self, rng: np.random.Generator) -> dict:
        """A coarse-stage crop with per-patch labels indexing `obj_ids` (the objects of its image) and
        templates (N, T, 3, S, S) of those objects, recoloured like their pixels."""
        im, rgb, full, colours, box = self.random_scene_crop(rng)
        masks = self._crop_masks(full, box, self.image_size)  # labels are per patch: at image size
        obj_ids = sorted({i.obj_id for i in im.instances})
        owners = [obj_ids.index(i.obj_id) for i in im.instances]
        labels = patch_labels(masks, owners, self.model_cfg.backbone.patch_size)
        return {"image": self._crop_image(rgb, box, rng), "labels": labels, "obj_ids": obj_ids,
                "templates": self._templates(obj_ids, rng, colours)}

    def _instance_box(self, inst: GtInstance, rng: np.random.Generator, scale, shift) -> tuple:
        x, y, bw, bh = inst.bbox
        side = max(bw, bh, 4) * rng.uniform(*scale)
        cx = x + bw / 2 + rng.uniform(-shift, shift) * max(bw, bh)
        cy = y + bh / 2 + rng.uniform(-shift, shift) * max(bw, bh)
        return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)

    def _refine(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        im = self.images[self.with_objects[rng.integers(len(self.with_objects))]]
        k = int(rng.integers(len(im.instances)))
        inst = im.instances[k]
        rgb = self._load(im)
        full_masks = [self._mask(i) for i in im.instances]
        colours = self._recolour(rgb, im, full_masks, rng)
        box = self._instance_box(inst, rng, cfg.refine_box_scale, cfg.refine_box_shift)
        mask = crop_resize(full_masks[k], box, self.mask_size, Image.BILINEAR) > 127
        obj = inst.obj_id
        if rng.random() < cfg.false_positive_rate:
            # A proposal of the wrong object: the refine model must answer with that object's
            # pixels in the crop, "nothing here" for an absent one.
            present = {i.obj_id for i in im.instances}
            others = sorted(present - {obj})
            if others and cfg.present_negative_rate > 0 and rng.random() < cfg.present_negative_rate:
                obj = int(rng.choice(others))
                union = np.max([m for i, m in zip(im.instances, full_masks) if i.obj_id == obj], axis=0)
                mask = crop_resize(union, box, self.mask_size, Image.BILINEAR) > 127
            else:
                absent = [o for o in self.object_pool.tolist() if o not in present]
                if not absent:
                    raise ValueError(f"false_positive_rate={cfg.false_positive_rate}, but every template object is in "
                                     f"an image; add templates of more objects or set false_positive_rate: 0")
                obj, mask = int(rng.choice(absent)), np.zeros(self.mask_size, dtype=bool)
                if (m := self._draw_colour(rng)) is not None:
                    colours[obj] = m
        image = self._crop_image(rgb, box, rng)
        return {"images": image, "templates": self._templates([obj], rng, colours),
                "masks": torch.from_numpy(mask[None]).float()}

    def _vae(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        im = self.images[self.with_objects[rng.integers(len(self.with_objects))]]
        inst = im.instances[int(rng.integers(len(im.instances)))]
        scale = (1.05, 3.0) if rng.random() < 0.7 else (3.0, 8.0)  # object crops and whole-scene views
        box = self._instance_box(inst, rng, scale, 0.3)
        mask = Image.fromarray(self._mask(inst))
        mask = _augment_mask(mask, box, self.mask_size, rng)
        return {"masks": torch.from_numpy(mask[None]).float()}


def _offset(length: int, side: float, rng: np.random.Generator) -> float:
    """Crop start along one axis: inside the image, or (side > length) anywhere that still covers it."""
    return rng.uniform(0, length - side) if side <= length else rng.uniform(length - side, 0)


def _augment_mask(mask: Image.Image, box, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Crop + flips + random perspective (which includes affine) of a binary mask."""
    x0, y0, x1, y1 = box
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)
    corners += rng.normal(0, 0.08 * (x1 - x0), corners.shape)  # perspective / shear / scale
    angle = rng.uniform(-math.pi, math.pi)
    c = corners.mean(0)
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    corners = (corners - c) @ rot.T + c
    if rng.random() < 0.5:
        corners = corners[[1, 0, 3, 2]]
    if rng.random() < 0.5:
        corners = corners[[3, 2, 1, 0]]
    out_pts = np.array([[0, 0], [size[1], 0], [size[1], size[0]], [0, size[0]]], dtype=np.float64)
    coeffs = _perspective_coeffs(out_pts, corners)
    warped = mask.transform((size[1], size[0]), Image.PERSPECTIVE, coeffs, resample=Image.BILINEAR)
    return np.asarray(warped) > 127


def _perspective_coeffs(dst: np.ndarray, src: np.ndarray) -> tuple[float, ...]:
    """PIL's 8 coefficients mapping output pixel (dst) to input pixel (src)."""
    a = []
    for (x, y), (u, v) in zip(dst, src):
        a.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        a.append([0, 0, 0, x, y, 1, -v * x, -v * y])
    return tuple(np.linalg.solve(np.array(a), src.reshape(-1)).tolist())


def template_render_record(folder: str | Path) -> dict | None:
    """The render settings all archives of a template folder share (saved with the weights trained on
    them); None when they record none. Templates rendered two ways are refused: the record would lie."""
    import json

    seen: dict[str, str] = {}
    for meta in sorted(Path(folder).glob("obj_*.json")):
        settings = json.loads(meta.read_text()).get("render_settings")
        if settings is not None:
            seen.setdefault(json.dumps(settings, sort_keys=True), meta.stem)
    if len(seen) > 1:
        raise ValueError(f"the templates in {folder} were rendered with different settings (e.g. "
                         f"{', '.join(list(seen.values())[:2])}); render them all with one 'ocdit templates render'")
    return json.loads(next(iter(seen))) if seen else None


def load_template_bank(folder: str | Path, obj_ids: list[int] | None = None) -> dict[int, np.ndarray]:
    """obj_id -> (V, S, S, 3) uint8 template views from a folder of archives (obj_XXXXXX.npz)."""
    from ..templates.archive import load_archive

    bank = {}
    for npz in sorted(Path(folder).glob("obj_*.npz")):
        oid = obj_id_of(npz.stem)
        if oid is not None and (obj_ids is None or oid in obj_ids):
            bank[oid] = load_archive(npz).rgb
    return bank
