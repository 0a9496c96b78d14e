"""The training objectives as modules (so DistributedDataParallel can wrap them).

`DiffusionLoss` is OCDiT.forward_loss with the randomness (posterior sample, sigma, noise) taken
from the batch instead of the global RNG; the objective itself is `Diffuser.loss_at` and the
noise-level law `edm.sigma_from_uniform`, the same code `forward_loss` runs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model import edm
from ..model.ocdit import OCDiT


class DiffusionLoss(nn.Module):
    def __init__(self, model: OCDiT, sigma_distribution: str | None = None):
        super().__init__()
        self.model = model
        self.sigma_distribution = sigma_distribution or model.config.diffuser.sigma_distribution

    def forward(self, images, templates, masks, posterior_eps, noise, sigma_u) -> dict[str, torch.Tensor]:
        model = self.model
        b, n = masks.shape[:2]
        image_features, template_features = model.extract_features(images, templates)
        with torch.no_grad():  # the VAE is trained first and frozen here
            mean, logvar = model.vae.net.moments(masks.flatten(0, 1).unsqueeze(1))
            latents = (mean + torch.exp(0.5 * logvar) * posterior_eps.flatten(0, 1)) * model.vae.scale
            latents = latents.reshape(b, n, *latents.shape[1:])
        d = model.config.diffuser
        sigma = edm.sigma_from_uniform(sigma_u, self.sigma_distribution, d.P_mean, d.P_std).reshape(b, 1, 1, 1, 1)
        out = model.diffuser.loss_at(image_features, template_features, latents, sigma, noise)
        return {"loss": out["loss"].mean(), "mse": out["loss_masks"].mean().detach()}


class VAELoss(nn.Module):
    """beta-VAE ELBO for binary masks: per-pixel BCE + beta * KL (per latent element)."""

    def __init__(self, model: OCDiT, kl_weight: float):
        super().__init__()
        self.model = model
        self.kl_weight = kl_weight

    def forward(self, masks, posterior_eps=None) -> dict[str, torch.Tensor]:
        net = self.model.vae.net
        mean, logvar = net.moments(masks)
        eps = torch.randn_like(mean) if posterior_eps is None else posterior_eps
        logits = net.decode(mean + torch.exp(0.5 * logvar) * eps)
        bce = F.binary_cross_entropy_with_logits(logits, masks)
        kl = self.model.vae.kl(mean, logvar).mean() / mean[0].numel()
        with torch.no_grad():
            pred, gt = logits > 0, masks > 0.5
            inter = (pred & gt).flatten(1).sum(1).float()
            union = (pred | gt).flatten(1).sum(1).float()
            iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union)).mean()
        return {"loss": bce + self.kl_weight * kl, "bce": bce.detach(), "kl": kl.detach(), "iou": iou}
