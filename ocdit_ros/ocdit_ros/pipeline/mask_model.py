"""The pipeline's view of a segmentation model, and cached template features.

`MaskModel` is the small interface the pipeline needs: backbone features for images and
templates, and per-member mask probabilities for a batch of views. `OCDiTMaskModel` adapts
`OCDiT`; tests plug in deterministic oracles to check the pipeline's geometry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F

from ..model import OCDiT
from ..model.edm import num_evaluations
from .config import PipelineConfig, StageConfig


@dataclass
class ObjectSpec:
    """An object to segment: id and rendered templates (T, 3, S, S), RGB in [0, 1]."""

    object_id: str
    templates: torch.Tensor
    fingerprint: str = ""  # content hash; keys the feature cache

    def __post_init__(self) -> None:
        t = self.templates
        if t.ndim != 4 or t.shape[1] != 3 or t.shape[0] == 0:
            raise ValueError(f"object {self.object_id!r}: templates must be (T>0, 3, S, S), got {tuple(t.shape)}")
        if not self.fingerprint:
            self.fingerprint = hashlib.sha256(t.detach().cpu().float().numpy().tobytes()).hexdigest()[:16]

    @classmethod
    def coerce(cls, obj) -> "ObjectSpec":
        """Accept an ObjectSpec or a template archive object (`.id`/`.object_id` + `to_tensor()`)."""
        if isinstance(obj, ObjectSpec):
            return obj
        oid = getattr(obj, "object_id", None) or getattr(obj, "id", None)
        if oid is None or not hasattr(obj, "to_tensor"):
            raise TypeError(f"cannot use {type(obj).__name__} as an object: need an id and to_tensor()")
        return cls(str(oid), obj.to_tensor())  # fingerprint: hash of the template pixels


class SpecCache:
    """ObjectSpecs of the objects a caller keeps passing (the node's library, frame after frame),
    so they are converted and hashed once. Keyed by object identity (held weakly): an object's
    templates are treated as fixed; pass a new object after changing them."""

    def __init__(self) -> None:
        self._specs: dict[int, tuple[weakref.ref, ObjectSpec]] = {}
        self.conversions = 0

    def get(self, obj) -> ObjectSpec:
        if isinstance(obj, ObjectSpec):
            return obj
        entry = self._specs.get(id(obj))
        if entry is not None and entry[0]() is obj:
            return entry[1]
        spec = ObjectSpec.coerce(obj)
        self.conversions += 1
        try:
            ref = weakref.ref(obj, lambda _, key=id(obj): self._specs.pop(key, None))
        except TypeError:  # not weak-referenceable: convert every time
            return spec
        self._specs[id(obj)] = (ref, spec)
        return spec


class MaskModel(Protocol):
    patch_size: int
    grid: tuple[int, int]
    # Optional: the full view's grid relative to `grid` (OCDiTConfig.full_view_scale; 1 if absent).
    full_view_scale: float
    object_capacity: int
    mask_factor: int  # mask pixels per patch

    def image_features(self, images: torch.Tensor) -> torch.Tensor: ...

    def template_features(self, obj: ObjectSpec) -> torch.Tensor: ...

    def sample(self, image_features: torch.Tensor, template_features: torch.Tensor, ensemble: int,
               stage: StageConfig, generator: torch.Generator) -> torch.Tensor: ...


class OCDiTMaskModel:
    """OCDiT behind the MaskModel interface, with an in-memory (and optional on-disk)
    template feature cache keyed by object fingerprint and backbone weights."""

    def __init__(self, model: OCDiT, device: str | torch.device = "cpu", dtype: str = "float32",
                 cache_dir: str | Path | None = None):
        self.model = model.to(device).eval()
        self.device = torch.device(device)
        self.dtype = dtype
        cfg = model.config
        self.patch_size = cfg.backbone.patch_size
        self.grid = cfg.grid
        self.full_view_scale = cfg.full_view_scale
        self.template_size = cfg.template_pixels
        self.object_capacity = cfg.diffuser.max_num_classes
        self.mask_factor = cfg.vae.downsampling
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self._memory: dict[str, torch.Tensor] = {}
        self._weights_hash: str | None = None
        self.cache_hits = 0
        self.cache_misses = 0
        self.sdpa = True
        self.memory_budget = 4096 * 2**20
        self._compiled: tuple[str, bool] = ("off", False)
        self.last_sample: dict[str, float] = {}  # the last sample call: stage times and counts

    def configure(self, cfg: PipelineConfig) -> None:
        """Apply a call's precision, caching, kernel and memory settings (cheap when unchanged)."""
        self.dtype = cfg.dtype
        self.sdpa = cfg.sdpa
        self.memory_budget = cfg.memory_budget_mb * 2**20
        self.model.diffuser.cache = cfg.cache
        if (cfg.compile, cfg.cuda_graphs) != self._compiled:
            self.model.diffuser.compile_sampler(cfg.compile, cfg.cuda_graphs)
            self._compiled = (cfg.compile, cfg.cuda_graphs)

    def call_bytes(self, n_objects: int, ensemble: int, grid: tuple[int, int] | None = None) -> int:
        """Rough activation memory of one (view, object chunk) unit in a denoiser call plus its
        share of the VAE decode, in bytes (fp32; half precision needs less). `grid`: the view's
        patches (default: the trained grid; a scaled full view has more)."""
        d = self.model.config.diffuser.hidden_size
        heads = self.model.config.diffuser.num_heads
        gh, gw = grid or self.grid
        patches = gh * gw
        tokens = ensemble * n_objects * patches
        total = tokens * d * 4 * 16  # residual, normalised, q/k/v, MLP hidden (4D), outputs
        if not self.sdpa:  # the math kernel holds every score matrix
            total += ensemble * heads * (n_objects * patches) ** 2 * 4
        return total + ensemble * n_objects * self.decode_bytes(grid)

    def decode_bytes(self, grid: tuple[int, int] | None = None) -> int:
        """Activation memory of decoding one mask: about 4 float32 maps of 32 channels at mask size."""
        hm, wm = (g * self.mask_factor for g in (grid or self.grid))
        return hm * wm * 32 * 4 * 4

    @property
    def weights_hash(self) -> str:
        if self._weights_hash is None:
            h = hashlib.sha256()
            h.update(self.model.config.backbone.descriptor.encode())  # parameter-free, so not in the state_dict
            for name, t in self.model.feature_extractor.state_dict().items():
                h.update(name.encode())
                h.update(t.detach().cpu().contiguous().numpy().tobytes())
            self._weights_hash = h.hexdigest()[:16]
        return self._weights_hash

    def _autocast(self):
        if self.dtype != "float32" and self.device.type in ("cuda", "cpu"):
            return torch.autocast(self.device.type, dtype=getattr(torch, self.dtype))
        return contextlib.nullcontext()

    def _kernels(self):
        if self.sdpa:
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.MATH])

    @torch.inference_mode()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.model.feature_extractor(self.model.normalize(images.to(self.device))).float()

    @torch.inference_mode()
    def template_features(self, obj: ObjectSpec) -> torch.Tensor:
        key = f"{obj.object_id}-{obj.fingerprint}-{self.weights_hash}-{self.template_size[0]}x{self.template_size[1]}"
        if self.dtype != "float32":
            key += f"-{self.dtype}"
        if key in self._memory:
            self.cache_hits += 1
            return self._memory[key]
        path = self.cache_dir / f"{key}.safetensors" if self.cache_dir else None
        feats = None
        if path is not None and path.is_file():
            from safetensors.torch import load_file

            feats = load_file(str(path))["features"].to(self.device)
            self.cache_hits += 1
        if feats is None:
            self.cache_misses += 1
            t = obj.templates.to(self.device, torch.float32)
            if tuple(t.shape[-2:]) != self.template_size:
                t = F.interpolate(t, size=self.template_size, mode="bilinear", antialias=True, align_corners=False)
            with self._autocast():
                feats = self.model.feature_extractor(self.model.normalize(t.clamp(0, 1))).float()
            if path is not None:
                from safetensors.torch import save_file

                path.parent.mkdir(parents=True, exist_ok=True)
                save_file({"features": feats.cpu().contiguous()}, str(path))
        self._memory[key] = feats
        return feats

    @torch.inference_mode()
    def sample(self, image_features: torch.Tensor, template_features: torch.Tensor, ensemble: int,
               stage: StageConfig, generator: torch.Generator) -> torch.Tensor:
        """(B, E, N, Hm, Wm) member probabilities: the denoiser under autocast, the VAE decode
        and the sigmoid in float32 (thresholds act on these)."""
        # The weights' sampler (its sigma range, churn window and noise scale) with the stage's
        # live-tunable steps, rho and churn on top.
        sampler = dataclasses.replace(self.model.sampler_config, num_steps=stage.num_steps, rho=stage.rho,
                                      s_churn=stage.s_churn)
        diffuser = self.model.diffuser
        t0 = time.perf_counter()
        with self._kernels():
            with self._autocast():
                cond = diffuser.condition(image_features, template_features)
                latents = diffuser.sample(None, None, ensemble, sampler, generator=generator, cond=cond)
            self._sync()
            t1 = time.perf_counter()
            chunk = max(1, self.memory_budget // self.decode_bytes(tuple(image_features.shape[-2:])))
            probs = self.model.decode_masks(latents.float().flatten(0, 1), chunk)
            self._sync()
        self.last_sample = {"denoise_ms": (t1 - t0) * 1e3, "decode_ms": (time.perf_counter() - t1) * 1e3,
                            "evaluations": num_evaluations(sampler.num_steps), "masks": probs.shape[0]}
        b, n = cond.num_images, cond.num_objects
        return probs.reshape(b, ensemble, n, *probs.shape[-2:])

    def _sync(self) -> None:
        if self.device.type == "cuda":  # honest stage timings
            torch.cuda.synchronize(self.device)
