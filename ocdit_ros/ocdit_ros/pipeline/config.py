"""Every inference knob in one typed config; it can change between calls without reloading."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DTYPES = ("float32", "bfloat16", "float16")

# Closed ranges of the numeric settings: validate() enforces them and the ROS node declares them as
# its parameter ranges (one definition). Integer bounds mean the setting must be an integer.
STAGE_RANGES: dict[str, tuple] = {
    "ensemble": (1, 64), "augmentations": (1, 16), "num_steps": (1, 200), "rho": (0.5, 50.0), "s_churn": (0.0, 100.0),
}
RANGES: dict[str, tuple] = {
    "augmentation_zoom": (0.2, 0.95), "coarse_grid_scale": (0.25, 4.0), "mask_threshold": (0.0, 1.0),
    "min_mask_area": (0, 1_000_000), "cluster_iou": (0.0, 1.0), "min_support": (0.0, 1.0),
    "proposal_threshold": (0.0, 1.0), "score_threshold": (0.0, 1.0), "max_instances": (1, 1000),
    "refine_margin": (0.0, 2.0), "refine_jitter": (0.0, 0.5), "max_objects_per_pass": (0, 256),
    "work_size": (32, 4096), "seed": (0, 2**31 - 1), "memory_budget_mb": (64, 1_000_000),
}
BOOLS = ("refine_enabled", "guided_augmentation", "relabel", "cache", "sdpa", "cuda_graphs")


def _check_ranges(obj, ranges: dict[str, tuple], prefix: str) -> None:
    for name, (lo, hi) in ranges.items():
        v = getattr(obj, name)
        want_int = isinstance(lo, int)
        if isinstance(v, bool) or not isinstance(v, int if want_int else (int, float)):
            kind = "an integer" if want_int else "a number"
            raise ValueError(f"{prefix}{name}={v!r}: must be {kind} in [{lo}, {hi}]")
        if not lo <= v <= hi:
            raise ValueError(f"{prefix}{name}={v}: must be in [{lo}, {hi}]")


@dataclass
class StageConfig:
    ensemble: int = 1  # noise seeds per view (E); PipelineConfig sets each stage's default
    augmentations: int = 1  # spatial views incl. the plain one (A)
    num_steps: int = 9
    rho: float = 9.0
    s_churn: float = 0.0

    def validate(self, name: str) -> None:
        _check_ranges(self, STAGE_RANGES, f"{name}.")


@dataclass
class PipelineConfig:
    # One coarse member: with the shipped model, 4 members that disagree leave clusters below
    # min_support (val, first 20 images: AP 0.138 with 1 member, 0.089 with 4; docs/training.md).
    coarse: StageConfig = field(default_factory=lambda: StageConfig(ensemble=1, augmentations=1))
    refine: StageConfig = field(default_factory=lambda: StageConfig(ensemble=2, augmentations=3))
    refine_enabled: bool = True
    # One extra coarse view tightly around the first pass's proposals (the paper's guided TTA).
    guided_augmentation: bool = False
    augmentation_zoom: float = 0.7  # side of the zoomed crops relative to the full view
    # Scale of the coarse canvas relative to the model's full-view grid (its trained grid times its
    # config's full_view_scale; >1 interpolates encodings).
    coarse_grid_scale: float = 1.0
    mask_threshold: float = 0.5
    min_mask_area: int = 16  # input pixels; smaller member masks count as "object absent"
    cluster_iou: float = 0.5  # member masks with IoU above this are the same instance
    min_support: float = 0.3  # fraction of members that must agree on an instance
    proposal_threshold: float = 0.2  # coarse confidence needed to be refined / reported
    score_threshold: float = 0.5  # refined score needed to be reported (coarse-only: proposal_threshold)
    max_instances: int = 32
    refine_margin: float = 0.15  # context around a proposal's box, relative to its size
    refine_jitter: float = 0.1
    relabel: bool = False  # refine each proposal against every object and keep the best
    max_objects_per_pass: int = 0  # 0: the model's object capacity
    work_size: int = 320  # longest side of the grid instances are aggregated on
    seed: int = 0
    device: str = "cpu"
    # Autocast dtype of the backbone and the denoiser (CPU: bfloat16 only); the sampler state, the
    # VAE decode and the mask probabilities stay float32.
    dtype: str = "float32"
    # Activation memory one denoiser call or VAE decode chunk may use; views, object chunks and
    # masks per call are sized to it (estimate in OCDiTMaskModel.call_bytes).
    memory_budget_mb: int = 4096
    cache: bool = True  # reuse conditioning across sampler evaluations (False: the reference path)
    sdpa: bool = True  # fused attention kernels (False: the math kernel, for reference)
    compile: str = "off"  # torch.compile the denoiser: off, default, max-autotune (or a backend, e.g. aot_eager)
    cuda_graphs: bool = False  # with compile on CUDA: capture the fixed-shape denoiser (reduce-overhead)

    def validate(self) -> "PipelineConfig":
        self.coarse.validate("coarse")
        self.refine.validate("refine")
        _check_ranges(self, RANGES, "")
        for name in BOOLS:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}={getattr(self, name)!r}: must be true or false")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}: choose one of {', '.join(DTYPES)}")
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"device={self.device!r}: must be a torch device name such as cpu or cuda:0")
        if self.dtype == "float16" and not self.device.startswith("cuda"):
            raise ValueError("dtype=float16 needs a CUDA device: use bfloat16 on the CPU")
        if not self.compile or not isinstance(self.compile, str):
            raise ValueError(f"compile={self.compile!r}: use off, default, max-autotune "
                             "or a torch.compile backend name")
        if self.cuda_graphs and (self.compile == "off" or not self.device.startswith("cuda")):
            raise ValueError("cuda_graphs needs compile (e.g. compile=default) and a CUDA device")
        return self

    def replace(self, **changes: Any) -> "PipelineConfig":
        """A validated copy with `changes`; dotted names reach into stages ("coarse.ensemble")."""
        data = self.to_dict()
        for key, value in changes.items():
            target = data
            *parents, leaf = key.split(".")
            for p in parents:
                if not isinstance(target.get(p), dict):
                    raise ValueError(f"unknown pipeline setting {key!r}")
                target = target[p]
            if leaf not in target:
                raise ValueError(f"unknown pipeline setting {key!r}")
            target[leaf] = value
        return PipelineConfig.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_flat_dict(self) -> dict[str, Any]:
        """Settings with dotted stage names ("coarse.ensemble"), as `replace` and the ROS node take them."""
        out = {}
        for key, value in self.to_dict().items():
            if isinstance(value, dict):
                out.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PipelineConfig":
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown pipeline settings {sorted(unknown)}")
        for stage in ("coarse", "refine"):
            if stage in data and isinstance(data[stage], dict):
                stage_known = {f.name for f in dataclasses.fields(StageConfig)}
                bad = set(data[stage]) - stage_known
                if bad:
                    raise ValueError(f"unknown {stage} settings {sorted(bad)}")
                # A partial stage keeps this config's defaults for that stage, not StageConfig's bare ones.
                data[stage] = dataclasses.replace(getattr(cls(), stage), **data[stage])
        return cls(**data).validate()

    @classmethod
    def from_yaml(cls, path: str | Path) -> "PipelineConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"pipeline config {path} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"pipeline config {path} must be a YAML mapping")
        return cls.from_dict(data.get("pipeline", data))
