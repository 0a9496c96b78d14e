"""The OC-DiT denoiser F and its EDM wrapper D (official names and signatures).

Conditioning that does not change during sampling is computed once in `condition()`:
the image-feature half of the query embedding and every block's template keys/values.
`forward` / `forward_noise` keep the official signatures and simply build it per call.
While sampling, one noise level is shared by every row of an evaluation, so the adaLN
modulation is computed once and folded into the LayerNorm affine (blocks.forward_shared).
`Diffuser.cache = False` is the reference path: conditioning rebuilt from the features at
every evaluation and per-row modulation, like the official code (same masks within 1e-5).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from . import edm
from .blocks import Decoder, FinalLayer
from .config import DiffuserConfig, SamplerConfig
from .embed import MPFourier, QueryEmbedder, SigmaEmbedder, TemplateEmbedder
from .template_prior import TemplatePrior


@dataclass
class Condition:
    """Per-image conditioning, reusable across denoising steps and ensemble members."""

    image_tokens: torch.Tensor  # (B, P, D) image half of the query embedding, with patch PE
    template_kv: list[tuple[torch.Tensor, torch.Tensor]]  # per block, (B*N, heads, L, D/heads)
    class_pe: torch.Tensor  # (1, N, 1, D)
    grid: tuple[int, int]
    num_images: int
    num_objects: int
    features: tuple[torch.Tensor, torch.Tensor] | None = None  # what it was built from (reference path)
    prior_tokens: torch.Tensor | None = None  # (B, N, P, D) template-match prior, if the model has one


class Diffuser(nn.Module):
    def __init__(self, cfg: DiffuserConfig, image_grid: tuple[int, int], template_grid: tuple[int, int],
                 feature_dim: int, latent_channels: int, descriptor_dim: int = 0):
        super().__init__()
        self.cfg = cfg
        self.latent_channels = latent_channels
        self.feature_dim = feature_dim
        d = cfg.hidden_size
        self.sigma_embedder = SigmaEmbedder(d)
        self.queries_embedder = QueryEmbedder(image_grid, feature_dim, latent_channels, cfg.max_num_classes, d)
        self.template_embedder = TemplateEmbedder(template_grid, feature_dim, cfg.max_num_classes,
                                                  cfg.max_num_templates, d)
        self.decoder = Decoder(d, cfg.num_heads, cfg.depth, cfg.mlp_ratio)
        self.final_layer = FinalLayer(d, latent_channels)
        self.logvar_mlp = nn.Sequential(MPFourier(128), nn.Linear(128, 1))
        # Our extension (model/template_prior.py); absent in the official architecture.
        self.template_prior = TemplatePrior(feature_dim, descriptor_dim, d) if cfg.template_prior else None
        self.cache = True  # False: the reference path (no work reused across evaluations)
        self._compiled = None  # compiled _network_shared (compile_sampler)
        self._init_weights()

    def _init_weights(self) -> None:
        # DiT-style: xavier linears, zero biases, adaLN-Zero (the paper's description; the
        # official code overwrites its zero init, which only matters for fresh training).
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for block in self.decoder.blocks:
            for sub in (block.cross_attn, block.self_attn, block.mlp):
                nn.init.zeros_(sub.adaLN_modulation[1].weight)
                nn.init.zeros_(sub.adaLN_modulation[1].bias)
        nn.init.zeros_(self.final_layer.adaLN_modulation[1].weight)
        nn.init.zeros_(self.final_layer.adaLN_modulation[1].bias)
        if self.template_prior is not None:
            self.template_prior.reset_parameters()  # zero: see model/template_prior.py

    @property
    def sigma_data(self) -> float:
        return self.cfg.sigma_data

    # -- conditioning --------------------------------------------------------------------
    def condition(self, image_features: torch.Tensor, template_features: torch.Tensor) -> Condition:
        """image_features (B, C, h, w), template_features (B, N, T, C, ht, wt)."""
        _check_features(image_features, template_features, self.feature_dim)
        b, n = template_features.shape[:2]
        mode = self.cfg.class_pe_training
        start = None
        cap = self.cfg.max_num_classes
        if self.training and mode == "random_interval" and n < cap:
            start = int(torch.randint(0, cap - n + 1, (1,)))  # one window for queries and templates
        templates = self.template_embedder(template_features, self.training, mode, start)
        kv = [block.template_kv(templates) for block in self.decoder.blocks]
        return Condition(
            image_tokens=self.queries_embedder.image_part(image_features),
            template_kv=kv,
            class_pe=self.queries_embedder.class_pe(n, self.training, mode, start),
            grid=(image_features.shape[-2], image_features.shape[-1]),
            num_images=b,
            num_objects=n,
            features=(image_features, template_features),
            prior_tokens=(None if self.template_prior is None
                          else self.template_prior(image_features, template_features)),
        )

    # -- network F -----------------------------------------------------------------------
    def network(self, x: torch.Tensor, c_noise: torch.Tensor, cond: Condition) -> torch.Tensor:
        """F(x, c_noise): x (B*E, N, z, h, w) ordered (image, member); c_noise (B*E,) or (1,)."""
        bx, n = x.shape[:2]
        if n != cond.num_objects or bx % cond.num_images or tuple(x.shape[-2:]) != cond.grid:
            raise ValueError(
                f"latents {tuple(x.shape)} do not match the conditioning "
                f"({cond.num_images} images, {cond.num_objects} objects, grid {cond.grid})"
            )
        e = bx // cond.num_images
        if self.cache and c_noise.numel() == 1 and not self.training:
            return (self._compiled or self._network_shared)(x, c_noise, cond, e)
        if not self.cache and cond.features is not None and not self.training:
            cond = self.condition(*cond.features)  # reference path: nothing carried over
        if c_noise.numel() == 1 and bx != 1:
            c_noise = c_noise.reshape(1).expand(bx)
        t = self.sigma_embedder(c_noise)
        t_cross = t[self._cross_rows(bx, n, t.device)]

        image_tokens = cond.image_tokens.repeat_interleave(e, dim=0)  # (B*E, P, D)
        tokens = image_tokens[:, None] + self.queries_embedder.latent_part(x, cond.class_pe)
        if cond.prior_tokens is not None:
            tokens = tokens + cond.prior_tokens.repeat_interleave(e, dim=0)
        for block, kv in zip(self.decoder.blocks, cond.template_kv):
            tokens = block(tokens, t, t_cross, kv)
        return self.final_layer(tokens, t, cond.grid)

    def compile_sampler(self, mode: str = "default", cuda_graphs: bool = False) -> None:
        """torch.compile the sampler's network evaluation (fixed shapes within a sample).

        mode: "off" (eager), "default" / "max-autotune" (inductor), or another backend's name
        (e.g. "aot_eager"); cuda_graphs captures it (inductor's reduce-overhead, CUDA only)."""
        if mode == "off":
            self._compiled = None
            return
        if mode in ("default", "max-autotune"):
            tc_mode = "reduce-overhead" if cuda_graphs else (None if mode == "default" else mode)
            self._compiled = torch.compile(self._network_shared, mode=tc_mode, dynamic=False)
        else:
            self._compiled = torch.compile(self._network_shared, backend=mode, dynamic=False)

    def _network_shared(self, x: torch.Tensor, c_noise: torch.Tensor, cond: Condition, e: int) -> torch.Tensor:
        """`network` for one noise level shared by all rows (every sampler evaluation)."""
        b = cond.num_images
        silu_t1 = F.silu(self.sigma_embedder(c_noise.reshape(1)))  # (1, D), as every adaLN takes it
        latent = self.queries_embedder.latent_part(x, cond.class_pe)  # (B*E, N, P, D)
        tokens = latent.view(b, e, *latent.shape[1:]) + cond.image_tokens[:, None, None]
        if cond.prior_tokens is not None:
            tokens = tokens + cond.prior_tokens[:, None]
        tokens = tokens.flatten(0, 1)
        for block, kv in zip(self.decoder.blocks, cond.template_kv):
            tokens = block.forward_shared(tokens, silu_t1, kv)
        return self.final_layer.forward_shared(tokens, silu_t1, cond.grid)

    def _cross_rows(self, bx: int, n: int, device: torch.device) -> torch.Tensor:
        """Which noise embedding modulates cross-attention row (b, n)."""
        rows = torch.arange(bx, device=device)[:, None].expand(bx, n)
        if self.cfg.cross_attn_sigma == "official":  # official t.repeat(N, 1) on (b, n) rows
            rows = (rows * n + torch.arange(n, device=device)[None]) % bx
        return rows

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: Condition, return_logvar: bool = False):
        """D(x; sigma) = c_skip x + c_out F(c_in x, c_noise), computed in float32."""
        x = x.to(torch.float32)
        sigma = sigma.to(torch.float32).reshape(-1, 1, 1, 1, 1)
        c_skip, c_out, c_in, c_noise = edm.precondition(sigma, self.sigma_data)
        f_x = self.network(c_in * x, c_noise, cond)
        d_x = c_skip * x + c_out * f_x.to(torch.float32)
        if return_logvar:
            return d_x, self.logvar_mlp(c_noise).reshape(-1, 1, 1, 1, 1)
        return d_x

    # -- official API ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor, sigma: torch.Tensor, image_features: torch.Tensor,
                templates_features: torch.Tensor) -> torch.Tensor:
        """Official `Diffuser.forward`: `sigma` is already c_noise = ln(sigma)/4."""
        return self.network(x, sigma, self.condition(image_features, templates_features))

    def forward_noise(self, x: torch.Tensor, sigma: torch.Tensor, image_features: torch.Tensor,
                      templates_features: torch.Tensor, return_logvar: bool = False):
        return self.denoise(x, sigma, self.condition(image_features, templates_features), return_logvar)

    def forward_loss(self, image_features: torch.Tensor, templates_features: torch.Tensor,
                     latents: torch.Tensor) -> dict[str, torch.Tensor]:
        """Official `forward_loss`: draws sigma and the noise from the global RNG, then `loss_at`."""
        cfg = self.cfg
        sigma = edm.draw_sigma(image_features.shape[0], cfg.sigma_distribution, cfg.P_mean, cfg.P_std,
                                 image_features.device)
        noise = torch.randn_like(latents)
        return self.loss_at(image_features, templates_features, latents, sigma, noise)

    def loss_at(self, image_features: torch.Tensor, templates_features: torch.Tensor, latents: torch.Tensor,
                sigma: torch.Tensor, noise: torch.Tensor) -> dict[str, torch.Tensor]:
        """The EDM training objective at given noise levels (B, 1, 1, 1, 1) and unit noise like
        `latents`: per-sample learned-uncertainty loss, its weight and the latent MSE. The one
        definition, used by `forward_loss` and by training (which draws sigma and noise per sample)."""
        weight = edm.loss_weight(sigma, self.cfg.sigma_data)
        noisy = latents + noise * sigma
        denoised, logvar = self.forward_noise(noisy, sigma, image_features, templates_features, return_logvar=True)
        return {
            "loss": edm.edm_loss(latents, denoised, logvar, weight),
            "weight": weight.flatten(),
            "loss_masks": ((latents - denoised) ** 2).flatten(1).mean(1),
        }

    def sample(self, image_features: torch.Tensor | None, templates_features: torch.Tensor | None,
               ensemble_size: int = 1,
               sampling_parameters: Mapping[str, Any] | SamplerConfig | None = None,
               generator: torch.Generator | None = None, cond: Condition | None = None) -> torch.Tensor:
        """Latents (B*E, N, z, h, w), ordered (image, member), from pure noise.

        Pass `cond` (from `condition`) to reuse conditioning; the features may then be None.
        """
        cfg = as_sampler_config(sampling_parameters)
        if ensemble_size < 1:
            raise ValueError(f"ensemble_size must be >= 1, got {ensemble_size}")
        cond = cond or self.condition(image_features, templates_features)
        b, n = cond.num_images, cond.num_objects
        shape = (b * ensemble_size, n, self.latent_channels, *cond.grid)
        # Drawn on the CPU then moved: identical noise on every device for a given seed.
        noise = torch.randn(shape, generator=generator).to(cond.image_tokens.device)
        return edm.heun_sample(lambda x, s: self.denoise(x, s, cond), noise, cfg, generator)


def as_sampler_config(params: Mapping[str, Any] | SamplerConfig | None) -> SamplerConfig:
    """SamplerConfig from the official dict (num_steps, sigma_min, sigma_max, rho) or a config.

    Like the official `sample`, missing dict keys fall back to EDM's defaults (18 steps, rho 7).
    """
    if isinstance(params, SamplerConfig):
        return params
    params = dict(params or {})
    known = {"num_steps", "sigma_min", "sigma_max", "rho", "s_churn", "s_min", "s_max", "s_noise"}
    unknown = set(params) - known
    if unknown:
        raise ValueError(f"unknown sampling parameters {sorted(unknown)}; known: {sorted(known)}")
    defaults = {"num_steps": 18, "sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0}
    return SamplerConfig(**{**defaults, **params})


def _check_features(image_features: torch.Tensor, template_features: torch.Tensor, feature_dim: int) -> None:
    if image_features.ndim != 4 or image_features.shape[1] != feature_dim:
        raise ValueError(f"image features must be (B, {feature_dim}, h, w), got {tuple(image_features.shape)}")
    if template_features.ndim != 6 or template_features.shape[3] != feature_dim:
        raise ValueError(
            f"template features must be (B, N, T, {feature_dim}, h, w), got {tuple(template_features.shape)}"
        )
    if template_features.shape[0] != image_features.shape[0]:
        raise ValueError(
            f"{image_features.shape[0]} images but template features for {template_features.shape[0]}"
        )
