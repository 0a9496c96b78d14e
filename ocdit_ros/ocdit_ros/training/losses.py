"""The training objectives as modules (so DistributedDataParallel can wrap them): the diffusion
stages', the mask VAE's, and template matching for backbone pretraining.

`DiffusionLoss` is OCDiT.forward_loss with the randomness (posterior sample, sigma, noise) taken
from the batch instead of the global RNG; the objective itself is `Diffuser.loss_at` and the
noise-level law `edm.sigma_from_uniform`, the same code `forward_loss` runs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..model import edm
from ..model.descriptor import template_patch_foreground
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


def template_prototypes(vit, templates: torch.Tensor, patch: int) -> torch.Tensor:
    """templates (N, T, 3, S, S) in [0, 1] -> (N, C): unit mean ViT feature over their foreground patches."""
    n, t = templates.shape[:2]
    flat = templates.flatten(0, 1)
    feats = vit.patch_tokens(OCDiT.normalize(flat))  # (N*T, P, C)
    fg = template_patch_foreground(flat, patch).view(n, t, -1, 1).float()  # the template prior's rule
    summed = (feats.view(n, t, -1, feats.shape[-1]) * fg).sum((1, 2))
    return F.normalize(summed / fg.sum((1, 2)).clamp_min(1), dim=-1)


class MatchingLoss(nn.Module):
    """Backbone pretraining (our stand-in for DINOv2's): InfoNCE of each labelled image patch against
    the template prototypes of every object in the batch, its own object's the positive.

    A ViT trained jointly with the diffuser learns its training objects rather than how to compare
    templates with an image; this asks for exactly that comparison. The same object in another
    image of the batch is neither positive nor negative (it may carry the same colours: a
    duplicate, not a different object). It is what `benchmarks/patch_matching.py` measures on val.
    """

    def __init__(self, vit: nn.Module, patch: int, temperature: float):
        super().__init__()
        self.vit, self.patch, self.temperature = vit, patch, temperature

    def forward(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        images = torch.stack([b["image"] for b in batch])
        feats = F.normalize(self.vit.patch_tokens(OCDiT.normalize(images)), dim=-1)  # (B, P, C)
        protos = template_prototypes(self.vit, torch.cat([b["templates"] for b in batch]), self.patch)  # (K, C)
        ids = torch.tensor([o for b in batch for o in b["obj_ids"]])
        start = np.cumsum([0] + [len(b["obj_ids"]) for b in batch])
        rows, targets, blocked = [], [], []
        for i, b in enumerate(batch):
            lab = b["labels"].flatten().cpu()
            keep = lab >= 0
            if not keep.any():
                continue
            target = lab[keep] + int(start[i])
            rows.append(feats[i][keep.to(feats.device)])
            targets.append(target)
            own = torch.zeros(len(ids), dtype=torch.bool)
            own[int(start[i]):int(start[i + 1])] = True
            blocked.append((ids[None] == ids[target][:, None]) & ~own[None])  # same object, other image
        if not rows:
            zero = feats.sum() * 0.0
            return {"loss": zero, "train_acc": zero.detach()}
        logits = (torch.cat(rows) @ protos.T).float() / self.temperature
        logits = logits.masked_fill(torch.cat(blocked).to(logits.device), float("-inf"))
        target = torch.cat(targets).to(logits.device)
        acc = (logits.argmax(1) == target).float().mean()
        return {"loss": F.cross_entropy(logits, target), "train_acc": acc.detach()}
