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

# Templates are rendered on black, and recolouring keeps black black. The one rule for "template
# foreground" (the template prior, backbone pretraining's prototypes, benchmarks/patch_matching): a
# template patch is the object's when the object covers more than half of it, the share estimated
# from the patch's colour statistics, which the descriptor holds and pixels give alike. For one
# colour c on black over a share f: mean = f c and mean square = f c^2, so |mean|^2 / mean square = f.
# Chosen on val (row 13 of the experiment table in docs/training.md): prototypes and prior both come out better
# than with "any object pixel in the patch".
MIN_OBJECT_SHARE = 0.5
TEMPLATE_BACKGROUND = 0.02  # channel means (in [0, 1]) summing to at most this: black, whatever the share


def template_foreground(mean_rgb: torch.Tensor, mean_square_rgb: torch.Tensor) -> torch.Tensor:
    """A template patch's mean and mean-square colour (..., 3), in [0, 1] -> (...) bool: the object's."""
    return ((mean_rgb.pow(2).sum(-1) > MIN_OBJECT_SHARE * mean_square_rgb.sum(-1))
            & (mean_rgb.sum(-1) > TEMPLATE_BACKGROUND))


def template_patch_foreground(templates: torch.Tensor, patch: int) -> torch.Tensor:
    """Template pixels (..., 3, S, S) in [0, 1] -> (..., S/patch, S/patch) bool, by `template_foreground`."""
    flat = templates.reshape(-1, *templates.shape[-3:]).float()
    fg = template_foreground(F.avg_pool2d(flat, patch).movedim(1, -1), F.avg_pool2d(flat * flat, patch).movedim(1, -1))
    return fg.reshape(*templates.shape[:-3], *fg.shape[-2:])


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
