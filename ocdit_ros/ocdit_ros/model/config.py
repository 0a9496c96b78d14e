"""Typed configuration of the OC-DiT model.

One dataclass per component; `OCDiTConfig` bundles them with the image and template sizes.
Presets: `official_coarse` / `official_refine` (the architecture of the official code, the
only numbers the released code states) and `tiny` (seconds per full sample on 2 CPU cores,
for tests and CI). YAML round-trips through `to_dict` / `from_dict`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

ClassPETraining = Literal["first", "random_interval"]
CrossAttnSigma = Literal["official", "per_sample"]
SigmaDistribution = Literal["uniform", "normal", "normal_trunc"]


@dataclass
class BackboneConfig:
    """DINOv2-style ViT. Defaults are ViT-S/14 as loaded from the DINOv2 hub (`dinov2_vits14`)."""

    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    patch_size: int = 14
    mlp_ratio: float = 4.0
    # The position-embedding grid the ViT was trained at (518 px = 37x37 patches for DINOv2).
    pos_embed_size: int = 518
    layerscale_init: float = 1.0
    # Local checkpoint (hub .pth, timm .pth/.safetensors), or a name timm / torch.hub fetch
    # (see model/backbone_hub.py: "dinov2_vits14", "vit_small_patch14_dinov2.lvd142m", ...).
    weights: str | None = None
    # Frozen like the paper unless training from scratch (no pretrained weights here).
    trainable: bool = False
    # A fixed per-patch descriptor concatenated to the ViT features ("none": the paper's
    # features only; "colour_hist": model/descriptor.py).
    descriptor: str = "none"

    @property
    def feature_dim(self) -> int:
        """Channels of the features the diffuser sees: ViT tokens plus the fixed descriptor."""
        from .descriptor import descriptor_dim

        return self.embed_dim + descriptor_dim(self.descriptor)


@dataclass
class VAEConfig:
    """Convolutional mask VAE; 4 stride-2 stages, so latents are 1/16 of the mask size."""

    z_channels: int = 32
    down_channels: tuple[int, ...] = (32, 64, 128, 256, 256)
    up_channels: tuple[int, ...] = (256, 256, 128, 64, 32)
    num_blocks: int = 2
    num_groups: int = 16
    # Latents are multiplied by final_std / raw_std so that sigma_data = 0.5 fits them.
    raw_std: float = 1.0
    final_std: float = 0.5
    trainable: bool = False
    # The official VAE also attends at twice the latent resolution (before the last downsampling
    # and after the first upsampling); with a 16x16 latent that is 1024 tokens and most of the
    # VAE's cost. True keeps only the latent-resolution attention (our small models).
    latent_attention_only: bool = False

    @property
    def downsampling(self) -> int:
        return 2 ** (len(self.down_channels) - 1)


@dataclass
class DiffuserConfig:
    hidden_size: int = 1024
    depth: int = 12
    num_heads: int = 16
    mlp_ratio: float = 4.0
    # Positional-encoding capacity (objects, templates per object).
    max_num_classes: int = 8
    max_num_templates: int = 12
    # With fewer objects than capacity: "first" = deterministic first N (official eval path),
    # "random_interval" = random contiguous window while training (the paper's best option).
    class_pe_training: ClassPETraining = "first"
    # The official block modulates cross-attention row (b, n) with sigma[(b*N + n) % B];
    # "official" reproduces this (checkpoint-faithful), "per_sample" uses sigma[b].
    cross_attn_sigma: CrossAttnSigma = "official"
    sigma_distribution: SigmaDistribution = "uniform"
    P_mean: float = -0.4
    P_std: float = 1.2
    sigma_data: float = 0.5
    # Our extension: add a template-match prior computed from the backbone's colour descriptor
    # to each query's tokens (model/template_prior.py). Needs backbone.descriptor="colour_hist".
    template_prior: bool = False


@dataclass
class SamplerConfig:
    """EDM (Karras et al. 2022) Heun sampler; OC-DiT's defaults are 9 steps with rho = 9."""

    num_steps: int = 9
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 9.0
    # Stochastic churn (EDM Alg. 2). 0 gives the deterministic sampler of the official code.
    s_churn: float = 0.0
    s_min: float = 0.0
    s_max: float = math.inf
    s_noise: float = 1.0

    def as_official_dict(self) -> dict[str, float]:
        return {
            "num_steps": self.num_steps,
            "sigma_min": self.sigma_min,
            "sigma_max": self.sigma_max,
            "rho": self.rho,
        }


@dataclass
class OCDiTConfig:
    image_size: tuple[int, int] = (480, 640)
    template_size: tuple[int, int] = (128, 128)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    diffuser: DiffuserConfig = field(default_factory=DiffuserConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    # The pipeline's full view of a camera frame uses grid * full_view_scale patches (before
    # the pipeline's own coarse_grid_scale). A model trained on crops finds objects best at the
    # scale its crops showed them: small16 sees a 320x240 frame's objects at twice the 16x16 size.
    full_view_scale: float = 1.0

    def __post_init__(self) -> None:
        self.image_size = _pair(self.image_size, "image_size")
        self.template_size = _pair(self.template_size, "template_size")
        self.validate()

    def validate(self) -> None:
        p = self.backbone.patch_size
        for name, size in (("image_size", self.image_size), ("template_size", self.template_size)):
            if min(size) < p:
                raise ValueError(f"{name}={size} is smaller than one backbone patch ({p} px)")
        d = self.diffuser
        if d.hidden_size % d.num_heads:
            raise ValueError(
                f"diffuser.hidden_size={d.hidden_size} must be divisible by num_heads={d.num_heads}"
            )
        b = self.backbone
        if b.embed_dim % b.num_heads:
            raise ValueError(
                f"backbone.embed_dim={b.embed_dim} must be divisible by num_heads={b.num_heads}"
            )
        if d.class_pe_training not in ("first", "random_interval"):
            raise ValueError(f"diffuser.class_pe_training={d.class_pe_training!r}: use 'first' or 'random_interval'")
        if d.cross_attn_sigma not in ("official", "per_sample"):
            raise ValueError(f"diffuser.cross_attn_sigma={d.cross_attn_sigma!r}: use 'official' or 'per_sample'")
        if d.sigma_distribution not in ("uniform", "normal", "normal_trunc"):
            raise ValueError(f"diffuser.sigma_distribution={d.sigma_distribution!r}: "
                             "use uniform, normal or normal_trunc")
        b.feature_dim  # raises on an unknown descriptor name
        if not 0.25 <= self.full_view_scale <= 4:
            raise ValueError(f"full_view_scale={self.full_view_scale} must be in [0.25, 4]")
        if d.template_prior and b.descriptor != "colour_hist":
            raise ValueError(f"diffuser.template_prior needs backbone.descriptor='colour_hist' (it compares "
                             f"colour histograms), got {b.descriptor!r}; set one or turn the other off")
        if len(self.vae.down_channels) != len(self.vae.up_channels):
            raise ValueError("vae.down_channels and vae.up_channels must have the same length")

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid the query positional encodings were built for."""
        p = self.backbone.patch_size
        return self.image_size[0] // p, self.image_size[1] // p

    @property
    def template_grid(self) -> tuple[int, int]:
        p = self.backbone.patch_size
        return self.template_size[0] // p, self.template_size[1] // p

    @property
    def template_pixels(self) -> tuple[int, int]:
        """The template size the backbone sees: template_size in whole patches (126 for the
        official 128 with ViT-S/14), the size to render templates at."""
        p = self.backbone.patch_size
        return self.template_grid[0] * p, self.template_grid[1] * p

    def mask_size(self, image_hw: tuple[int, int]) -> tuple[int, int]:
        """Mask resolution the VAE works at for an image of `image_hw` pixels."""
        p, f = self.backbone.patch_size, self.vae.downsampling
        return image_hw[0] // p * f, image_hw[1] // p * f

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["image_size"] = list(self.image_size)
        d["template_size"] = list(self.template_size)
        d["vae"]["down_channels"] = list(self.vae.down_channels)
        d["vae"]["up_channels"] = list(self.vae.up_channels)
        if math.isinf(self.sampler.s_max):
            d["sampler"]["s_max"] = "inf"
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "OCDiTConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown model config keys {sorted(unknown)}; expected a subset of {sorted(known)}")
        parts = {
            "backbone": BackboneConfig,
            "vae": VAEConfig,
            "diffuser": DiffuserConfig,
            "sampler": SamplerConfig,
        }
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in parts:
                kwargs[key] = _build(parts[key], value or {}, key)
            else:
                kwargs[key] = value
        return cls(**kwargs)

    def to_yaml(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_yaml(cls, path: str | Path) -> "OCDiTConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"model config {path} does not exist")
        data = yaml.safe_load(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"model config {path} must be a YAML mapping, got {type(data).__name__}")
        return cls.from_dict(data)


def _pair(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be (height, width) in pixels, got {value!r}") from None
    return (h, w)


def _build(klass: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name for f in dataclasses.fields(klass)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)} in '{where}'; expected a subset of {sorted(known)}")
    values = dict(values)
    for key in ("down_channels", "up_channels"):
        if key in values:
            values[key] = tuple(values[key])
    if values.get("s_max") == "inf":
        values["s_max"] = math.inf
    return klass(**values)


# -- presets -------------------------------------------------------------------------------
def official_coarse() -> OCDiTConfig:
    """The official class's defaults: 480x640 images, 128x128 templates, D=1024, 12 blocks."""
    return OCDiTConfig(image_size=(480, 640), template_size=(128, 128))


def official_refine() -> OCDiTConfig:
    """Same architecture on a square crop, one object per query set.

    The paper's refine resolution is not stated in the released code; 224x224 crops keep the
    architecture identical and are our choice.
    """
    return OCDiTConfig(image_size=(224, 224), template_size=(128, 128))


def tiny() -> OCDiTConfig:
    """A model that samples in seconds on 2 CPU cores (tests, CI, CPU training)."""
    return OCDiTConfig(
        image_size=(112, 112),
        template_size=(42, 42),
        backbone=BackboneConfig(embed_dim=48, depth=2, num_heads=2, pos_embed_size=112, trainable=True),
        vae=VAEConfig(
            z_channels=4,
            down_channels=(8, 8, 16, 16, 16),
            up_channels=(16, 16, 16, 8, 8),
            num_blocks=1,
            num_groups=4,
        ),
        diffuser=DiffuserConfig(
            hidden_size=64,
            depth=2,
            num_heads=4,
            max_num_classes=8,
            max_num_templates=12,
            class_pe_training="random_interval",
            cross_attn_sigma="per_sample",
        ),
        sampler=SamplerConfig(num_steps=9, rho=9.0),
    )


def small() -> OCDiTConfig:
    """The first default model's shape (v1, replaced): 1.2 M parameters, trainable on 2 CPU cores
    in about an hour, on an 8x8 patch grid. The backbone is a 4-block ViT trained from scratch
    with the rest (no pretrained DINOv2 is reachable here). The shipped model is `small16`.
    """
    return OCDiTConfig(
        image_size=(112, 112),
        template_size=(42, 42),
        backbone=BackboneConfig(embed_dim=64, depth=3, num_heads=2, pos_embed_size=112, trainable=True),
        vae=VAEConfig(
            z_channels=4,
            down_channels=(16, 16, 32, 32, 32),
            up_channels=(32, 32, 32, 16, 16),
            num_blocks=1,
            num_groups=8,
        ),
        diffuser=DiffuserConfig(
            hidden_size=96,
            depth=3,
            num_heads=4,
            max_num_classes=8,
            max_num_templates=12,
            class_pe_training="random_interval",
            cross_attn_sigma="per_sample",
        ),
        sampler=SamplerConfig(num_steps=9, rho=9.0),
    )


def small16() -> OCDiTConfig:
    """`small` redesigned for unseen objects (issue 11): a 16x16 feature grid on 128 px inputs
    (8 px patches; objects of a 320x240 frame cover several patches in the coarse view), 48 px
    templates (6x6 patches), a 4x16x16 mask latent from a 3-stage VAE (128 px masks), and
    a fixed colour descriptor beside the from-scratch ViT's features (model/descriptor.py),
    from which a template-match prior is added to every query (model/template_prior.py).
    """
    base = small()
    return OCDiTConfig(
        image_size=(128, 128),
        template_size=(48, 48),
        backbone=BackboneConfig(embed_dim=64, depth=3, num_heads=2, patch_size=8, pos_embed_size=128,
                                trainable=True, descriptor="colour_hist"),
        vae=VAEConfig(
            z_channels=4,
            # Few channels at full mask resolution: binary masks need little, and the frozen
            # encoder runs on every training target (it was half the step time at 16 channels).
            down_channels=(8, 16, 32, 32),
            up_channels=(32, 32, 16, 8),
            num_blocks=1,
            num_groups=8,
            latent_attention_only=True,
        ),
        # The same 3-block, 96-d transformer as `small`, with the template-match prior.
        diffuser=dataclasses.replace(base.diffuser, template_prior=True),
        sampler=base.sampler,
        # Whole frames at twice the trained grid: training crops show objects larger than a
        # 320x240 frame squeezed onto 16x12 patches (val AP 0.057 at 2x, 0.038 at 1.5x, 4 members).
        full_view_scale=2.0,
    )


PRESETS = {"official_coarse": official_coarse, "official_refine": official_refine, "tiny": tiny, "small": small,
           "small16": small16}


def load_config(name_or_path: str | Path) -> OCDiTConfig:
    """A preset name (`tiny`, `official_coarse`, `official_refine`) or a YAML file."""
    if str(name_or_path) in PRESETS:
        return PRESETS[str(name_or_path)]()
    path = Path(name_or_path)
    if not path.exists():
        raise FileNotFoundError(
            f"model config {name_or_path!r} is neither a preset ({', '.join(PRESETS)}) nor an existing YAML file"
        )
    return OCDiTConfig.from_yaml(path)
