"""Typed training configuration: one dataclass, loaded from YAML, overridable from the command line."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

Stage = Literal["vae", "coarse", "refine", "backbone"]


@dataclass
class TrainConfig:
    stage: Stage = "coarse"
    model: str = "tiny"  # preset name or model YAML (ocdit_ros.model.load_config)
    init: str | None = None  # weights to start from: the VAE run for coarse/refine, or a checkpoint to fine-tune
    # False: the model is the one stored with `init` (all its weights load). True: the model is
    # `model` with the VAE settings stored with `init`; `init` gives every weight whose name and
    # shape it has, and modules it lacks keep their initialisation (to grow a trained model, e.g.
    # by the template prior, without starting over).
    init_partial: bool = False
    # A model file (e.g. `ocdit train backbone`'s) whose backbone replaces the one of `init`, kept
    # frozen: our stand-in for the paper's frozen DINOv2.
    backbone_init: str | None = None
    data: list[str] = field(default_factory=list)  # BOP split folders (e.g. DATA/train)
    templates: str = ""  # folder of template archives, one per obj_id (rendered if missing)
    out: str = "runs/train"
    # optimisation
    steps: int = 2000
    batch_size: int = 8
    lr: float = 3e-4
    min_lr_ratio: float = 0.05  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    # bookkeeping
    seed: int = 0
    checkpoint_every: int = 250
    export_on_checkpoint: bool = False  # also write RUN/model.safetensors (EMA) at every checkpoint
    log_every: int = 10
    num_workers: int = 1
    # A time budget (one call on a lent GPU): after about a tenth of it the run measures its speed
    # and shortens `steps` so the cosine schedule ends when the budget does; it stops, checkpoints
    # and exports at the budget in any case. Such a run is not bit-reproducible (its length
    # depends on the machine); continue it with `init` from its weights, not by resuming.
    max_minutes: float | None = None
    # samples
    objects_per_image: int = 4  # N queries per image (coarse); refine always uses 1
    templates_per_object: int = 8  # T views drawn from the archive per query
    visib_threshold: float = 0.1  # BOP: fainter instances are not targets
    crop_scale: tuple[float, float] = (0.45, 1.0)  # coarse: crop side / short image side
    proximity_scale: float = 0.25  # coarse: object weight exp(-distance / (scale * crop side))
    refine_box_scale: tuple[float, float] = (1.2, 1.9)  # refine crop side / instance box side
    refine_box_shift: float = 0.15  # refine: centre jitter, fraction of the box side
    false_positive_rate: float = 0.25  # refine: query an object that is not in the crop -> empty mask
    # refine: of those wrong-object queries, the share that asks for another object of the same
    # image (target: its pixels inside the crop, usually none) instead of an absent one, so the
    # model must follow the templates rather than segment whatever is in the middle
    present_negative_rate: float = 0.0
    colour_jitter: float = 0.2
    # coarse/refine: probability that an object gets a new colour (hue, saturation, brightness),
    # the same in the image and in its templates: new identities from known shapes
    recolour_prob: float = 0.0
    # diffusion noise levels: None = the model config's (the paper: log-uniform); "normal" = EDM's
    # log-normal around the model's P_mean/P_std, which spends fewer steps on trivial low noise
    sigma_distribution: str | None = None
    # backbone: InfoNCE temperature of patch-to-prototype cosine similarities
    temperature: float = 0.1
    # VAE
    kl_weight: float = 1e-4  # beta of the beta-VAE
    amp: Literal["auto", "off", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU

    def validate(self) -> "TrainConfig":
        if self.stage not in ("vae", "coarse", "refine", "backbone"):
            raise ValueError(f"stage={self.stage!r}: use vae, coarse, refine or backbone")
        missing = [] if self.data else ["data (BOP split folders, e.g. DATA/train; --data)"]
        if self.stage != "vae" and not self.templates:
            missing.append("templates (the training objects' template archives; --templates)")
        if missing:
            raise ValueError(f"training stage {self.stage} needs {' and '.join(missing)}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("steps and batch_size must be >= 1")
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature}: must be > 0")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ValueError(f"max_minutes={self.max_minutes}: a time budget must be > 0 minutes")
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        raw = yaml.safe_load(Path(path).read_text()) or {}
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; known: {sorted(known)}")
        raw = {k: tuple(v) if isinstance(v, list) and k not in ("data",) else v for k, v in raw.items()}
        return cls(**raw)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
