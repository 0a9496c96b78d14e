"""Noise-level, query and template embeddings with learned positional encodings.

Positional-encoding rules (official behaviour first, our extensions after):
- patches: the constructor grid as is; a smaller grid takes the top-left window (official);
  a larger grid (or a different template grid, which the official code rejects) is resized
  bicubically.
- objects: N == capacity as is; N > capacity uses the official nearest "interpolation"
  (which reshapes (1, C, 1, D) to (1, D, C) without permuting — reproduced for checkpoint
  fidelity); N < capacity takes the first N, or a random contiguous window while training
  with `class_pe_training="random_interval"` (the paper's best capacity scheme).
- templates: T == capacity as is; T > capacity like objects; T < capacity takes the first T
  in eval and a random cyclic window in training (official).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MPFourier(nn.Module):
    """Magnitude-preserving Fourier features (EDM2): sqrt(2) * cos(x * freqs + phases)."""

    def __init__(self, num_channels: int, bandwidth: float = 1.0):
        super().__init__()
        self.register_buffer("freqs", 2 * math.pi * torch.randn(num_channels) * bandwidth)
        self.register_buffer("phases", 2 * math.pi * torch.rand(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.outer(x.float(), self.freqs.float()) + self.phases.float()
        return (y.cos() * math.sqrt(2)).to(x.dtype)


class LearnedPE(nn.Module):
    def __init__(self, *shape: int):
        super().__init__()
        self.pe = nn.Parameter(torch.zeros(shape))
        nn.init.trunc_normal_(self.pe, std=0.02)


class PointwiseEmbed(nn.Module):
    """1x1 convolution to tokens; stored as a Conv2d like the official timm PatchEmbed."""

    def __init__(self, in_channels: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=1)

    def linear(self, x: torch.Tensor, channels: slice = slice(None), bias: bool = True) -> torch.Tensor:
        """(..., C, h, w) -> (..., h*w, D) using input channels `channels` of the weight."""
        w = self.proj.weight[:, channels, 0, 0]
        tokens = x.flatten(-2).transpose(-1, -2)
        return F.linear(tokens, w, self.proj.bias if bias else None)


def official_resize_1d(pe: torch.Tensor, length: int) -> torch.Tensor:
    """The official N > capacity rule: reshape (not permute) to (1, D, C), nearest, reshape back.

    `pe` is (1, C, D) with the encoded position on dim 1; returns (1, length, D).
    """
    _, cap, dim = pe.shape
    scrambled = pe.reshape(1, dim, cap)
    return F.interpolate(scrambled, size=length).reshape(1, length, dim)


def window_1d(pe: torch.Tensor, length: int, start: int, cyclic: bool) -> torch.Tensor:
    """Contiguous window of `length` positions of a (1, C, D) encoding starting at `start`."""
    cap = pe.shape[1]
    idx = torch.arange(start, start + length, device=pe.device)
    if cyclic:
        idx = idx % cap
    return pe[:, idx]


def resize_grid(pe: torch.Tensor, grid: tuple[int, int], new_grid: tuple[int, int], crop_smaller: bool) -> torch.Tensor:
    """(P, D) patch encodings on `grid` -> (P', D) on `new_grid`."""
    if tuple(new_grid) == tuple(grid):
        return pe
    rows, cols = grid
    img = pe.reshape(rows, cols, -1).permute(2, 0, 1)
    if crop_smaller and new_grid[0] <= rows and new_grid[1] <= cols:
        img = img[:, : new_grid[0], : new_grid[1]]  # official: top-left window
    else:
        img = F.interpolate(img[None].float(), size=tuple(new_grid), mode="bicubic",
                            align_corners=False)[0].to(pe.dtype)
    return img.permute(1, 2, 0).reshape(new_grid[0] * new_grid[1], -1)


class ClassWindow:
    """Which object positional encodings a forward pass uses (shared by queries and templates)."""

    @staticmethod
    def select(pe: torch.Tensor, n: int, training: bool, mode: str, start: int | None = None) -> torch.Tensor:
        cap = pe.shape[1]
        if n == cap:
            return pe
        if n > cap:
            return official_resize_1d(pe, n)
        if training and mode == "random_interval":
            if start is None:
                start = int(torch.randint(0, cap - n + 1, (1,)))
            return window_1d(pe, n, start, cyclic=False)
        return pe[:, :n]


class SigmaEmbedder(nn.Module):
    """c_noise -> Fourier features -> Linear -> SiLU (the blocks' adaLN applies SiLU again)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.emb_fourier = MPFourier(hidden)
        self.proj = nn.Sequential(nn.Linear(hidden, hidden), nn.SiLU())

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        return self.proj(self.emb_fourier(c_noise))


class QueryEmbedder(nn.Module):
    """[image features ‖ noisy latent] per object -> tokens (B, N, h*w, D).

    The 1x1 conv is linear, so the image-feature half is computed once per image
    (`image_part`) and only the latent half per denoising step (`latent_part`).
    """

    def __init__(self, grid: tuple[int, int], feature_dim: int, latent_dim: int, max_classes: int, dim: int):
        super().__init__()
        self.grid = tuple(grid)
        self.feature_dim = feature_dim
        self.embedder = PointwiseEmbed(feature_dim + latent_dim, dim)
        self.pe_patches = LearnedPE(1, 1, grid[0] * grid[1], dim)
        self.pe_classes = LearnedPE(1, max_classes, 1, dim)

    def image_part(self, image_features: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, h*w, D), including the conv bias and patch encodings."""
        tokens = self.embedder.linear(image_features, slice(0, self.feature_dim))
        pe = resize_grid(self.pe_patches.pe[0, 0], self.grid, image_features.shape[-2:], crop_smaller=True)
        return tokens + pe

    def latent_part(self, x: torch.Tensor, class_pe: torch.Tensor) -> torch.Tensor:
        """(B, N, z, h, w) -> (B, N, h*w, D) without bias (it is in `image_part`)."""
        return self.embedder.linear(x, slice(self.feature_dim, None), bias=False) + class_pe

    def class_pe(self, n: int, training: bool, mode: str, start: int | None) -> torch.Tensor:
        return ClassWindow.select(self.pe_classes.pe[:, :, 0], n, training, mode, start)[:, :, None]


class TemplateEmbedder(nn.Module):
    """Template features (B, N, T, C, h, w) -> tokens (B, N, T*h*w, D), ordered (view, patch)."""

    def __init__(self, grid: tuple[int, int], feature_dim: int, max_classes: int, max_templates: int, dim: int):
        super().__init__()
        self.grid = tuple(grid)
        self.embedder = PointwiseEmbed(feature_dim, dim)
        self.pe_patches = LearnedPE(1, 1, 1, grid[0] * grid[1], dim)
        self.pe_classes = LearnedPE(1, max_classes, 1, 1, dim)
        self.pe_views = LearnedPE(1, 1, max_templates, 1, dim)

    def forward(self, features: torch.Tensor, training: bool, class_mode: str, class_start: int | None) -> torch.Tensor:
        b, n, t = features.shape[:3]
        tokens = self.embedder.linear(features)  # (B, N, T, P, D)
        patches = resize_grid(self.pe_patches.pe[0, 0, 0], self.grid, features.shape[-2:], crop_smaller=False)
        classes = ClassWindow.select(self.pe_classes.pe[:, :, 0, 0], n, training, class_mode, class_start)
        views = self.view_pe(t, training)
        tokens = tokens + patches + classes[:, :, None, None] + views[:, None, :, None]
        return tokens.reshape(b, n, -1, tokens.shape[-1])

    def view_pe(self, t: int, training: bool) -> torch.Tensor:
        pe = self.pe_views.pe[:, 0, :, 0]  # (1, T_cap, D)
        cap = pe.shape[1]
        if t == cap:
            return pe
        if t > cap:
            return official_resize_1d(pe, t)
        if training:  # random cyclic window, drawn exactly like the official code
            return window_1d(pe, t, int(torch.randint(0, cap, (1,))), cyclic=True)
        return pe[:, :t]
