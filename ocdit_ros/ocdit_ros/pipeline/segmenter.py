"""Two-stage OC-DiT segmentation: coarse proposals on the full image, refinement per proposal.

    seg = Segmenter(coarse_model, refine_model, PipelineConfig())
    result = seg.segment(image, objects)        # image: (H, W, 3) uint8 RGB
    for inst in result.instances: inst.object_id, inst.score, inst.mask, inst.bbox

1. Coarse: the image (and A-1 zoomed crops) are resampled to the model grid; the backbone runs
   once per view; all objects are sampled E times per view (objects beyond the model's
   capacity are processed in chunks). Members are mapped back to the image and clustered per
   object into instance proposals (aggregate.py).
2. Refine: each proposal above `proposal_threshold` is cropped around its modal box (A_r
   jittered crops, E_r seeds each, all proposals batched), conditioned on its object only,
   mapped back and averaged. score = mean probability of the predicted foreground; proposals
   below `score_threshold` are rejected as false positives.
3. Overlaps are resolved per pixel in favour of the highest score x probability; masks are
   returned at the input resolution.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..model import OCDiT
from .aggregate import Member, Proposal, cluster_members, ious, member_mean, resolve_overlaps
from .config import PipelineConfig, StageConfig
from .mask_model import MaskModel, OCDiTMaskModel, ObjectSpec, SpecCache
from .views import View, augmentation_views, full_view, jittered_views, region_view

MAX_SIDE = 8192
VIEWS_PER_CALL = 16  # views per backbone call (and per sampler call for models without an estimate)


@dataclass
class Instance:
    object_id: str
    instance_id: int  # 1-based, unique within one result
    score: float
    mask: np.ndarray  # (H, W) bool at the input resolution
    bbox: tuple[int, int, int, int]  # modal box (x0, y0, x1, y1), x1/y1 exclusive
    agreement: float  # mean IoU of the ensemble members with the final mask
    uncertainty: np.ndarray  # (H, W) float32 per-pixel variance across members
    stage: str  # "coarse" or "refined"
    coarse_confidence: float


@dataclass
class Batch:
    """One sampler call: its stage, (view, object chunk) units, members and objects per unit, and
    network evaluations (each over units x members rows of `objects` objects)."""

    stage: str
    units: int
    members: int
    objects: int
    evaluations: int


@dataclass
class SegmentationResult:
    instances: list[Instance]
    image_size: tuple[int, int]
    stage: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    num_proposals: int = 0
    coarse_instances: list[Instance] | None = None  # the coarse stage's answer, when asked for (keep_coarse)
    batches: list[Batch] = field(default_factory=list)  # one per denoiser call


STAGES = ("coarse", "refine")


def check_last_stage(last_stage: str) -> str:
    """`last_stage` if it names a stage, else a ValueError listing them."""
    if last_stage not in STAGES:
        raise ValueError(f"last_stage={last_stage!r}: use one of {', '.join(STAGES)}")
    return last_stage


class Segmenter:
    def __init__(self, coarse: OCDiT | MaskModel, refine: OCDiT | MaskModel | None = None,
                 config: PipelineConfig | None = None, cache_dir: str | None = None):
        self.config = (config or PipelineConfig()).validate()
        self.coarse = self._wrap(coarse, cache_dir)
        # One model can do both stages (the paper found dedicated refine weights better).
        self.refine = self._wrap(refine, cache_dir) if refine is not None else self.coarse
        self.specs = SpecCache()  # objects converted and hashed once, not on every frame

    def _wrap(self, model, cache_dir):
        if isinstance(model, OCDiT):
            return OCDiTMaskModel(model, self.config.device, self.config.dtype, cache_dir)
        return model

    def template_settings(self):
        """How templates of new objects are rendered for this segmenter: as its coarse model's
        training templates (recorded in its weights), else by the training rule at its template size."""
        from ..templates.render import RenderSettings

        if isinstance(getattr(self.coarse, "model", None), OCDiT):
            return RenderSettings.for_model(self.coarse.model)
        return RenderSettings.training(self.coarse.template_size[0])

    # ------------------------------------------------------------------------------------
    def segment(self, image, objects: Sequence, config: PipelineConfig | None = None,
                last_stage: str = "refine", keep_coarse: bool = False) -> SegmentationResult:
        """Segment `objects` in `image`. `last_stage="coarse"` stops after the coarse stage;
        `keep_coarse` also returns the coarse instances (coarse vs refined in one run).

        Names: "coarse" and "refine" are the stages (config sections, models, timings);
        a result's `stage` says what its instances are: "coarse" proposals or "refined" ones."""
        check_last_stage(last_stage)
        cfg = (config or self.config).validate()
        specs = [self.specs.get(o) for o in objects]
        if not specs:
            raise ValueError("no objects to segment: pass at least one object's templates")
        ids = [s.object_id for s in specs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"object ids must be unique, got {ids}")
        img = to_image_tensor(image)
        h, w = img.shape[-2:]
        ws = min(1.0, cfg.work_size / max(h, w))
        call = _Call(cfg, specs, img, torch.Generator().manual_seed(cfg.seed),
                     (max(1, round(h * ws)), max(1, round(w * ws))), ws)
        for model in {id(self.coarse): self.coarse, id(self.refine): self.refine}.values():
            if hasattr(model, "configure"):
                model.configure(cfg)  # precision, caching, kernels: per-call settings

        t0 = time.perf_counter()
        scale = cfg.coarse_grid_scale * getattr(self.coarse, "full_view_scale", 1.0)
        grid = tuple(max(1, round(g * scale)) for g in self.coarse.grid)
        base = full_view(h, w, grid, self.coarse.patch_size)
        views = augmentation_views(base, cfg.coarse.augmentations, cfg.augmentation_zoom)
        members = self._run_views(self.coarse, views, [specs] * len(views), cfg.coarse, call)
        proposals = self._cluster(members, call)
        if cfg.guided_augmentation and proposals:
            box = _union_box([p.mask(cfg.mask_threshold) for p in proposals], ws, margin=0.1)
            guided = region_view(box, (base.canvas_h, base.canvas_w))
            extra = self._run_views(self.coarse, [guided], [specs], cfg.coarse, call)
            members = [m + e for m, e in zip(members, extra)]
            proposals = self._cluster(members, call)
        call.timings["coarse_total"] = (time.perf_counter() - t0) * 1e3
        proposals = [p for p in proposals if p.confidence >= cfg.proposal_threshold][: cfg.max_instances]

        do_refine = last_stage == "refine" and cfg.refine_enabled and proposals
        t1 = time.perf_counter()
        if do_refine:
            scored = self._refine(proposals, call)
            final = [(p, s, obj) for p, s, obj in scored if s >= cfg.score_threshold]
        else:
            final = [(p, p.confidence, p.object_index) for p in proposals]
        call.timings["refine_total"] = (time.perf_counter() - t1) * 1e3 if do_refine else 0.0

        t2 = time.perf_counter()
        instances = self._instances(final, call, "refined" if do_refine else "coarse")
        call.timings["postprocess"] = (time.perf_counter() - t2) * 1e3
        call.timings["total"] = (time.perf_counter() - t0) * 1e3
        coarse = None
        if keep_coarse:
            coarse = instances if not do_refine else self._instances(
                [(p, p.confidence, p.object_index) for p in proposals], call, "coarse")
        return SegmentationResult(instances, (h, w), "refined" if do_refine else "coarse", call.timings,
                                  len(proposals), coarse, call.batches)

    # ------------------------------------------------------------------------------------
    def _run_views(self, model: MaskModel, views: list[View], objects: list[list[ObjectSpec]],
                   stage: StageConfig, call: "_Call") -> list[list[Member]]:
        """Sample every view with its objects; members grouped by object position.

        Work units are (view, object chunk); units with the same chunk size go through the
        denoiser together, as many per call as the memory budget allows (the backbone runs
        once per view)."""
        n_obj = len(objects[0])
        members: list[list[Member]] = [[] for _ in range(n_obj)]
        cap = call.cfg.max_objects_per_pass or model.object_capacity  # the per-call setting
        timings = call.timings
        t = time.perf_counter()
        feats = torch.cat([model.image_features(torch.stack([v.render(call.img) for v in views[i:i + VIEWS_PER_CALL]]))
                           for i in range(0, len(views), VIEWS_PER_CALL)])
        _add(timings, "features", t)
        by_size: dict[int, list[tuple[int, int]]] = {}
        for v in range(len(views)):
            for o0 in range(0, n_obj, cap):
                by_size.setdefault(min(cap, n_obj - o0), []).append((v, o0))
        for size in sorted(by_size, reverse=True):
            units = by_size[size]
            per_call = _units_per_call(model, size, stage.ensemble, call.cfg, tuple(feats.shape[-2:]))
            for u0 in range(0, len(units), per_call):
                batch = units[u0:u0 + per_call]
                t = time.perf_counter()
                tf = _stack_templates(model, [objects[v][o0:o0 + size] for v, o0 in batch])
                _add(timings, "template_features", t)
                t = time.perf_counter()
                idx = torch.tensor([v for v, _ in batch], device=feats.device)
                probs = model.sample(feats[idx], tf, stage.ensemble, stage, call.gen)  # (U, E, n, hm, wm)
                _add(timings, "sampling", t)
                name = "refine" if stage is call.cfg.refine else "coarse"
                done = getattr(model, "last_sample", None) or {}
                for key in ("denoise_ms", "decode_ms"):
                    if key in done:
                        timings[f"{name}_{key[:-3]}"] = timings.get(f"{name}_{key[:-3]}", 0.0) + done[key]
                call.batches.append(Batch(name, len(batch), stage.ensemble, size, int(done.get("evaluations", 0))))
                t = time.perf_counter()
                for u, (v, o0) in enumerate(batch):
                    back, valid = views[v].to_input(probs[u].cpu(), call.work_hw, call.ws)
                    for e in range(back.shape[0]):
                        for k in range(back.shape[1]):
                            members[o0 + k].append(Member(back[e, k] * valid, valid))
                _add(timings, "mapping", t)
        return members

    def _cluster(self, members: list[list[Member]], call: "_Call") -> list[Proposal]:
        t0 = time.perf_counter()
        cfg = call.cfg
        min_area = math.ceil(cfg.min_mask_area * call.ws * call.ws)  # input pixels -> work-grid pixels
        props = []
        for i, ms in enumerate(members):
            props += cluster_members(ms, i, cfg.mask_threshold, cfg.cluster_iou, min_area, cfg.min_support)
        props.sort(key=lambda p: -p.confidence)
        _add(call.timings, "aggregation", t0)
        return props

    def _refine(self, proposals: list[Proposal], call: "_Call"):
        model, cfg, specs = self.refine, call.cfg, call.specs
        canvas = (model.grid[0] * model.patch_size, model.grid[1] * model.patch_size)
        candidates = list(range(len(specs))) if cfg.relabel else None
        views, objs, owners = [], [], []
        for pi, p in enumerate(proposals):
            box = _union_box([p.mask(cfg.mask_threshold)], call.ws, margin=0.0)
            crops = jittered_views(box, canvas, cfg.refine.augmentations, cfg.refine_margin, cfg.refine_jitter,
                                   call.gen)
            for k in (candidates if candidates is not None else [p.object_index]):
                for v in crops:
                    views.append(v)
                    objs.append([specs[k]])
                    owners.append((pi, k))
        members = self._run_views(model, views, objs, cfg.refine, call)[0]
        per_view = cfg.refine.ensemble
        grouped: dict[tuple[int, int], list[Member]] = {}
        for i, owner in enumerate(owners):
            grouped.setdefault(owner, []).extend(members[i * per_view:(i + 1) * per_view])
        t0 = time.perf_counter()
        results = []
        for pi, p in enumerate(proposals):
            best = None
            for k in (candidates if candidates is not None else [p.object_index]):
                ms = grouped[(pi, k)]
                mean, var = member_mean(ms)
                fg = mean > cfg.mask_threshold
                score = float(mean[fg].mean()) if fg.any() else 0.0
                agreement = ious(torch.stack([m.prob for m in ms]) > cfg.mask_threshold, fg).mean().item()
                refined = Proposal(k, mean, var, p.support, p.confidence, agreement, len(ms))
                if best is None or score > best[1]:
                    best = (refined, score, k)
            results.append(best)
        _add(call.timings, "aggregation", t0)
        return results

    def _instances(self, final, call: "_Call", stage: str) -> list[Instance]:
        if not final:
            return []
        cfg, hw = call.cfg, tuple(call.img.shape[-2:])
        final = sorted(final, key=lambda f: -f[1])[: cfg.max_instances]
        probs = [F.interpolate(p.prob[None, None], size=hw, mode="bilinear", align_corners=False)[0, 0]
                 for p, _, _ in final]
        masks = resolve_overlaps(probs, [s for _, s, _ in final], cfg.mask_threshold)
        out = []
        for (p, score, k), mask in zip(final, masks):
            if mask.sum().item() < max(cfg.min_mask_area, 1):
                continue
            var = F.interpolate(p.variance[None, None], size=hw, mode="bilinear", align_corners=False)[0, 0]
            m = mask.numpy()
            out.append(Instance(call.specs[k].object_id, len(out) + 1, float(score), m, mask_bbox(m),
                                float(p.agreement), var.numpy().astype(np.float32), stage, float(p.confidence)))
        return out


@dataclass
class _Call:
    """Everything one `segment` call works with: its config, objects, image and random stream."""

    cfg: PipelineConfig
    specs: list[ObjectSpec]
    img: torch.Tensor  # (3, H, W) in [0, 1]
    gen: torch.Generator
    work_hw: tuple[int, int]  # the grid instances are aggregated on
    ws: float  # work grid / input pixels
    timings: dict[str, float] = field(default_factory=dict)
    batches: list["Batch"] = field(default_factory=list)


# -- helpers --------------------------------------------------------------------------------
def to_image_tensor(image) -> torch.Tensor:
    """(H, W, 3) uint8/float RGB numpy, or (3, H, W) float tensor -> (3, H, W) float32 in [0, 1]."""
    if isinstance(image, torch.Tensor):
        t = image.detach().cpu()
        if t.ndim != 3 or t.shape[0] != 3:
            raise ValueError(f"image tensor must be (3, H, W) RGB, got {tuple(t.shape)}")
        t = t.float()
    else:
        a = np.asarray(image)
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)  # mono -> RGB
        if a.ndim != 3 or a.shape[2] not in (3, 4):
            raise ValueError(f"image must be (H, W, 3) RGB, got shape {a.shape}")
        a = a[..., :3]
        if not a.flags.writeable:  # torch wants writable memory (e.g. arrays from PIL)
            a = a.copy()
        if a.dtype == np.uint8:
            t = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float() / 255.0
        elif a.dtype == np.uint16:
            t = torch.from_numpy(a.astype(np.float32)).permute(2, 0, 1) / 65535.0
        elif np.issubdtype(a.dtype, np.floating):
            t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).permute(2, 0, 1)
        else:
            raise ValueError(f"image dtype {a.dtype} not supported: use uint8, uint16 or float in [0, 1]")
    h, w = t.shape[-2:]
    if h < 2 or w < 2 or max(h, w) > MAX_SIDE:
        raise ValueError(f"image size {h}x{w} is outside the supported range 2..{MAX_SIDE} px")
    if not torch.isfinite(t).all():
        raise ValueError("image contains NaN or infinite values")
    return t.clamp(0, 1)


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return (0, 0, 0, 0)
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)


def _stack_templates(model: MaskModel, objs: list[list[ObjectSpec]]) -> torch.Tensor:
    """(V, n, T, C, h, w); objects with fewer views repeat theirs cyclically up to the most."""
    feats = [[model.template_features(o) for o in row] for row in objs]
    t_max = max(f.shape[0] for row in feats for f in row)
    rows = []
    for row in feats:
        rows.append(torch.stack([f[torch.arange(t_max) % f.shape[0]] for f in row]))
    return torch.stack(rows)


def _units_per_call(model: MaskModel, n_objects: int, ensemble: int, cfg: PipelineConfig,
                    grid: tuple[int, int]) -> int:
    """(view, object chunk) units per denoiser call within the memory budget, for views of `grid` patches."""
    estimate = getattr(model, "call_bytes", None)
    if estimate is None:
        return VIEWS_PER_CALL
    return max(1, int(cfg.memory_budget_mb * 2**20 // max(1, estimate(n_objects, ensemble, grid))))


def _union_box(masks: list[torch.Tensor], ws: float, margin: float) -> tuple[float, float, float, float]:
    """Input-pixel box around work-grid masks, grown by `margin` of its size."""
    union = torch.stack(masks).any(0)
    ys, xs = torch.nonzero(union, as_tuple=True)
    x0, x1 = xs.min().item() / ws, (xs.max().item() + 1) / ws
    y0, y1 = ys.min().item() / ws, (ys.max().item() + 1) / ws
    mx, my = (x1 - x0) * margin, (y1 - y0) * margin
    return (x0 - mx, y0 - my, x1 + mx, y1 + my)


def _add(timings: dict[str, float], key: str, t0: float) -> None:
    timings[key] = timings.get(key, 0.0) + (time.perf_counter() - t0) * 1e3


__all__ = ["Batch", "Instance", "SegmentationResult", "Segmenter", "mask_bbox", "to_image_tensor"]
