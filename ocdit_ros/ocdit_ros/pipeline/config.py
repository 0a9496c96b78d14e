"""Every inference knob in one typed config; it can change between calls without reloading."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class StageConfig:
    ensemble: int = 4  # noise seeds per view (E)
    augmentations: int = 1  # spatial views incl. the plain one (A)
    num_steps: int = 9
    rho: float = 9.0
    s_churn: float = 0.0

    def validate(self, name: str) -> None:
        if not 1 <= self.ensemble <= 64:
            raise ValueError(f"{name}.ensemble={self.ensemble}: must be in [1, 64]")
        if not 1 <= self.augmentations <= 16:
            raise ValueError(f"{name}.augmentations={self.augmentations}: must be in [1, 16]")
        if not 1 <= self.num_steps <= 200:
            raise ValueError(f"{name}.num_steps={self.num_steps}: must be in [1, 200]")
        if not 0.5 <= self.rho <= 50:
            raise ValueError(f"{name}.rho={self.rho}: must be in [0.5, 50]")
        if self.s_churn < 0:
            raise ValueError(f"{name}.s_churn={self.s_churn}: must be >= 0")


@dataclass
class PipelineConfig:
    coarse: StageConfig = field(default_factory=lambda: StageConfig(ensemble=4, augmentations=1))
    refine: StageConfig = field(default_factory=lambda: StageConfig(ensemble=2, augmentations=3))
    refine_enabled: bool = True
    # One extra coarse view tightly around the first pass's proposals (the paper's guided TTA).
    guided_augmentation: bool = False
    augmentation_zoom: float = 0.7  # side of the zoomed crops relative to the full view
    # Scale of the coarse canvas relative to the model's trained grid (>1 interpolates encodings).
    coarse_grid_scale: float = 1.0
    mask_threshold: float = 0.5
    min_mask_area: int = 16  # input pixels; smaller member masks count as "object absent"
    cluster_iou: float = 0.5  # member masks with IoU above this are the same instance
    min_support: float = 0.3  # fraction of members that must agree on an instance
    proposal_threshold: float = 0.2  # coarse confidence needed to be refined / reported
    score_threshold: float = 0.5  # final score needed to be reported
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
        for name in ("mask_threshold", "cluster_iou", "min_support", "proposal_threshold", "score_threshold"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name}={v}: must be in [0, 1]")
        if not 0.2 <= self.augmentation_zoom < 1.0:
            raise ValueError(f"augmentation_zoom={self.augmentation_zoom}: must be in [0.2, 1)")
        if not 0.25 <= self.coarse_grid_scale <= 4.0:
            raise ValueError(f"coarse_grid_scale={self.coarse_grid_scale}: must be in [0.25, 4]")
        if self.max_instances < 1:
            raise ValueError(f"max_instances={self.max_instances}: must be >= 1")
        if self.work_size < 32:
            raise ValueError(f"work_size={self.work_size}: must be >= 32")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype={self.dtype!r}: choose one of {', '.join(DTYPES)}")
        if self.dtype == "float16" and not self.device.startswith("cuda"):
            raise ValueError("dtype=float16 needs a CUDA device: use bfloat16 on the CPU")
        if self.memory_budget_mb < 64:
            raise ValueError(f"memory_budget_mb={self.memory_budget_mb}: must be >= 64")
        if not self.compile or not isinstance(self.compile, str):
            raise ValueError(f"compile={self.compile!r}: use off, default, max-autotune or a torch.compile backend name")
        if self.cuda_graphs and (self.compile == "off" or not self.device.startswith("cuda")):
            raise ValueError("cuda_graphs needs compile (e.g. compile=default) and a CUDA device")
        if self.min_mask_area < 0 or self.max_objects_per_pass < 0:
            raise ValueError("min_mask_area and max_objects_per_pass must be >= 0")
        if self.refine_margin < 0 or not 0 <= self.refine_jitter <= 0.5:
            raise ValueError("refine_margin must be >= 0 and refine_jitter in [0, 0.5]")
        return self

    def replace(self, **changes: Any) -> "PipelineConfig":
        """A validated copy with `changes`; dotted names reach into stages ("coarse.ensemble")."""
        data = self.to_dict()
        for key, value in changes.items():
            target = data
            *parents, leaf = key.split(".")
            for p in parents:
                target = target[p]
            if leaf not in target:
                raise ValueError(f"unknown pipeline setting {key!r}")
            target[leaf] = value
        return PipelineConfig.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

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
                data[stage] = StageConfig(**data[stage])
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
