"""OCDiT: backbone + mask VAE + diffuser, drop-in compatible with the official class.

`OCDiT(image_size, template_size, embed_dim, depth, num_heads)` builds the official
architecture (same state_dict keys and shapes, same outputs). Keyword-only options and
`OCDiT.from_config` give our extensions (capacity, backbone weights, tiny models, ...).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import FeatureExtractor
from .config import BackboneConfig, DiffuserConfig, OCDiTConfig, SamplerConfig, VAEConfig
from .diffuser import Condition, Diffuser
from .vae import BinaryMaskVAE


class OCDiT(nn.Module):
    def __init__(
        self,
        image_size: tuple[int, int],
        template_size: tuple[int, int],
        embed_dim: int = 1024,
        depth: int = 12,
        num_heads: int = 16,
        *,
        max_num_classes: int = 8,
        max_num_templates: int = 12,
        backbone_weights: str | None = None,
        backbone_trainable: bool = False,
        class_pe_training: str = "first",
        cross_attn_sigma: str = "official",
        config: OCDiTConfig | None = None,
    ):
        super().__init__()
        if config is None:
            config = OCDiTConfig(
                image_size=image_size,
                template_size=template_size,
                backbone=BackboneConfig(weights=backbone_weights, trainable=backbone_trainable),
                vae=VAEConfig(),
                diffuser=DiffuserConfig(
                    hidden_size=embed_dim, depth=depth, num_heads=num_heads,
                    max_num_classes=max_num_classes, max_num_templates=max_num_templates,
                    class_pe_training=class_pe_training, cross_attn_sigma=cross_attn_sigma,  # type: ignore[arg-type]
                ),
            )
        config.validate()
        self.config = config
        self.feature_extractor = FeatureExtractor(config.backbone)
        self.vae = BinaryMaskVAE(config.vae)
        self.diffuser = Diffuser(config.diffuser, config.grid, config.template_grid,
                                 config.backbone.feature_dim, config.vae.z_channels,
                                 descriptor_dim=config.backbone.feature_dim - config.backbone.embed_dim)
        # Official attribute (a plain dict); edit it to change the sampler.
        self.sampling_parameters: dict[str, Any] = config.sampler.as_official_dict()
        # How the templates it was trained with were rendered (RenderSettings fields, saved with the
        # weights); None for untrained models and files that do not record it.
        self.template_render: dict[str, Any] | None = None

    @classmethod
    def from_config(cls, config: OCDiTConfig) -> "OCDiT":
        return cls(config.image_size, config.template_size, config=config)

    @property
    def sampler_config(self) -> SamplerConfig:
        """The sampler settings in effect: `sampling_parameters` over the config's churn options."""
        return dataclasses.replace(self.config.sampler, **self.sampling_parameters)

    # -- features ------------------------------------------------------------------------
    @staticmethod
    def normalize(images: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB -> [-1, 1] (mean = std = 0.5, as the official model; not ImageNet stats)."""
        return (images - 0.5) / 0.5

    def extract_features(self, images: torch.Tensor, templates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """images (B, 3, H, W), templates (B, N, T, 3, h, w), both RGB in [0, 1]."""
        _check_inputs(images, templates)
        image_features = self.feature_extractor(self.normalize(images))
        template_features = self.feature_extractor(self.normalize(templates))
        return image_features, template_features

    def condition(self, images: torch.Tensor, templates: torch.Tensor) -> Condition:
        return self.diffuser.condition(*self.extract_features(images, templates))

    # -- training ------------------------------------------------------------------------
    def forward_loss(self, images: torch.Tensor, templates: torch.Tensor,
                     masks_gt: torch.Tensor) -> dict[str, torch.Tensor]:
        """masks_gt (B, N, Hm, Wm) with Hm, Wm = 16/14 of the image size (the latent grid)."""
        b, n = templates.shape[:2]
        expected = self.config.mask_size(tuple(images.shape[-2:]))
        if masks_gt.ndim != 4 or tuple(masks_gt.shape[:2]) != (b, n) or tuple(masks_gt.shape[-2:]) != expected:
            raise ValueError(
                f"masks_gt must be (B={b}, N={n}, {expected[0]}, {expected[1]}) for {tuple(images.shape[-2:])} "
                f"images (VAE size = image / {self.config.backbone.patch_size} * {self.config.vae.downsampling}); "
                f"got {tuple(masks_gt.shape)}"
            )
        image_features, template_features = self.extract_features(images, templates)
        latents = self.vae.encode_latents(masks_gt.flatten(0, 1).unsqueeze(1), sample_posterior=True)
        latents = latents.reshape(b, n, *latents.shape[1:])
        return self.diffuser.forward_loss(image_features, template_features, latents)

    # -- inference -----------------------------------------------------------------------
    def decode_masks(self, latents: torch.Tensor, chunk: int = 16) -> torch.Tensor:
        """(K, z, h, w) latents -> (K, 16h, 16w) probabilities, decoded in chunks (bounded memory)."""
        out = [self.vae.decode(z, apply_sigmoid=True)[:, 0] for z in latents.split(chunk)]
        return torch.cat(out)

    def sample_masks(self, cond: Condition, ensemble_size: int, generator: torch.Generator | None = None,
                     sampler: SamplerConfig | None = None, decode_chunk: int = 16) -> torch.Tensor:
        """Per-member probabilities (B, E, N, Hm, Wm) for a prepared condition."""
        latents = self.diffuser.sample(None, None, ensemble_size, sampler or self.sampler_config,
                                       generator=generator, cond=cond)
        probs = self.decode_masks(latents.flatten(0, 1), decode_chunk)
        b, n = cond.num_images, cond.num_objects
        return probs.reshape(b, ensemble_size, n, *probs.shape[-2:])

    @torch.no_grad()
    def generate_segmentations(self, images: torch.Tensor, templates: torch.Tensor, ensemble_size: int = 3,
                               *, output_size: str | tuple[int, int] | None = None,
                               generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean foreground probability over `ensemble_size` samples, (B, N, Hm, Wm).

        Like the official method the masks are at the VAE resolution (16/14 of the image) by
        default; `output_size="input"` (or an explicit (H, W)) resizes them bilinearly.
        """
        cond = self.condition(images, templates)
        probs = self.sample_masks(cond, ensemble_size, generator).mean(1)
        if output_size is None:
            return probs
        size = tuple(images.shape[-2:]) if output_size == "input" else tuple(output_size)
        return F.interpolate(probs, size=size, mode="bilinear", align_corners=False)


def _check_inputs(images: torch.Tensor, templates: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W) RGB in [0, 1], got {tuple(images.shape)}")
    if templates.ndim != 6 or templates.shape[3] != 3:
        raise ValueError(f"templates must be (B, N, T, 3, h, w) RGB in [0, 1], got {tuple(templates.shape)}")
    if templates.shape[0] != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but templates for {templates.shape[0]}")
    if templates.shape[1] == 0 or templates.shape[2] == 0:
        raise ValueError(f"need at least one object with one template, got templates {tuple(templates.shape)}")
