"""Fixed (not learned) per-patch colour descriptors, concatenated to the ViT's patch features.

Why: a ViT trained from scratch on a few hundred objects memorises them; a colour histogram
per patch does not, and already tells which of the present objects an image patch belongs to
for most patches of objects it never saw (val patch matching 0.72 against a random ViT's 0.54;
docs/training.md, experiment table, and `benchmarks/patch_matching.py`). Giving the diffuser
both lets it compare templates with the image by colour on unseen objects while the learned
features add what colour alone cannot.

`colour_hist`: per patch, the fraction of pixels in each of 4x4x4 RGB bins (square-rooted:
the Hellinger embedding, so dot products compare distributions), then the patch's mean and
standard deviation per channel. 70 values, all in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DESCRIPTORS = ("none", "colour_hist")
_BINS = 4
HIST_CHANNELS = _BINS**3  # the histogram comes first; per-channel mean and std follow


def descriptor_dim(name: str) -> int:
    if name == "none":
        return 0
    if name == "colour_hist":
        return _BINS**3 + 6
    raise ValueError(f"backbone.descriptor={name!r}: choose one of {', '.join(DESCRIPTORS)}")


def patch_descriptor(rgb: torch.Tensor, patch: int, name: str) -> torch.Tensor:
    """rgb (B, 3, H, W) in [0, 1] -> (B, descriptor_dim, H/patch, W/patch)."""
    if name != "colour_hist":
        raise ValueError(f"no descriptor {name!r}")
    rgb = rgb.float().clamp(0, 1)
    b, _, h, w = rgb.shape
    gh, gw = h // patch, w // patch
    q = (rgb * _BINS).long().clamp_(max=_BINS - 1)
    colour_bin = (q[:, 0] * _BINS + q[:, 1]) * _BINS + q[:, 2]  # (B, H, W)
    # Count pixels per (patch, bin) with one bincount: a one-hot image of 64 channels was most
    # of a training step's cost on templates.
    rows = torch.arange(h, device=rgb.device) // patch
    cols = torch.arange(w, device=rgb.device) // patch
    cell = (rows[:, None] * gw + cols[None, :]).clamp_(max=gh * gw - 1)  # pixels past the last patch are cropped below
    inside = (rows[:, None] < gh) & (cols[None, :] < gw)
    key = (torch.arange(b, device=rgb.device)[:, None, None] * (gh * gw) + cell) * _BINS**3 + colour_bin
    counts = torch.bincount(key[:, inside].reshape(-1), minlength=b * gh * gw * _BINS**3)
    hist = (counts.reshape(b, gh, gw, _BINS**3).permute(0, 3, 1, 2).float() / (patch * patch)).sqrt()
    mean = F.avg_pool2d(rgb, patch)
    std = (F.avg_pool2d(rgb * rgb, patch) - mean * mean).clamp(min=0).sqrt()
    return torch.cat([hist, mean, std], dim=1)
