"""Template-match prior: per object query, how much each image patch looks like that object's templates.

Why: the fixed colour descriptor already tells which present object an unseen object's image
patch belongs to for most patches (docs/training.md, patch matching 0.72 vs chance 0.32), but a
small diffuser trained for hours on 2 CPU cores learns that comparison through cross-attention
only slowly (coarse val mask IoU 0.12 after 2,400 steps). Here the comparison is computed
directly and added to each query's tokens, so the network starts from a localisation cue and
learns what to make of it (where colour misleads, shape and extent).

Two maps per (image, object), on the image's patch grid, from the descriptor channels only:
- best: the highest Bhattacharyya coefficient between the patch's colour histogram and any
  foreground patch of the object's templates (1 = same colour distribution);
- mean: cosine similarity between the patch's descriptor and the object's prototype, the mean
  descriptor of its foreground template patches.
Template patches that are mostly rendering background (black; `descriptor.template_foreground`,
the rule backbone pretraining uses too) are left out; they would match every dark image patch
for every object. The projection to tokens starts at zero, so a model
warm-started from one without the prior computes exactly what it did before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .descriptor import HIST_CHANNELS as _HIST
from .descriptor import template_foreground


class TemplatePrior(nn.Module):
    num_maps = 2

    def __init__(self, feature_dim: int, descriptor_dim: int, dim: int):
        super().__init__()
        if descriptor_dim < _HIST + 3:
            raise ValueError(f"the template prior needs the colour_hist descriptor (at least {_HIST + 3} channels: "
                             f"the histogram and the channel means), got {descriptor_dim} descriptor channels")
        self.start = feature_dim - descriptor_dim  # the descriptor is the last channels of the features
        self.proj = nn.Linear(self.num_maps, dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    @torch.no_grad()
    def maps(self, image_features: torch.Tensor, template_features: torch.Tensor) -> torch.Tensor:
        """image (B, C, h, w), templates (B, N, T, C, ht, wt) -> (B, N, h*w, 2) in [0, 1]."""
        img = image_features[:, self.start:].float().flatten(2).transpose(1, 2)  # (B, P, K)
        tpl = template_features[:, :, :, self.start:].float()
        b, n = tpl.shape[:2]
        tpl = tpl.permute(0, 1, 2, 4, 5, 3).reshape(b, n, -1, tpl.shape[3])  # (B, N, T*pt, K)
        avg, std = tpl[..., _HIST:_HIST + 3], tpl[..., _HIST + 3:_HIST + 6]  # the descriptor's channel stats
        foreground = template_foreground(avg, std * std + avg * avg).float()  # (B, N, L)
        # Bhattacharyya coefficient: the histogram channels are square roots of fractions.
        bc = torch.einsum("bpk,bnlk->bnpl", img[..., :_HIST], tpl[..., :_HIST])
        best = (bc - 2.0 * (1 - foreground[:, :, None])).amax(-1).clamp(min=0)  # background never wins
        count = foreground.sum(-1, keepdim=True)
        proto = (tpl * foreground[..., None]).sum(2) / count.clamp(min=1)  # (B, N, K)
        mean = torch.einsum("bpk,bnk->bnp", F.normalize(img, dim=-1), F.normalize(proto, dim=-1)).clamp(min=0)
        mean = mean * (count > 0).float()  # an all-background template set matches nothing
        return torch.stack([best, mean], dim=-1)

    def forward(self, image_features: torch.Tensor, template_features: torch.Tensor) -> torch.Tensor:
        """(B, N, h*w, D) tokens to add to each query's tokens."""
        return self.proj(self.maps(image_features, template_features).to(self.proj.weight.dtype))
