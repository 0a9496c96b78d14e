"""Views: axis-aligned regions of the input image resampled onto a model canvas.

Every model input (the full image, an augmentation crop, a refine crop) is a `View`: a box
in input pixel coordinates (continuous, x right, y down, pixel centres at +0.5) and a canvas
size that is a multiple of the patch size. The same object maps model outputs back to input
pixels, which is the only place where geometry happens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class View:
    x0: float
    y0: float
    x1: float
    y1: float
    canvas_h: int
    canvas_w: int

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0, self.x1, self.y1)

    @property
    def scale(self) -> tuple[float, float]:
        """Canvas pixels per input pixel (y, x)."""
        return self.canvas_h / (self.y1 - self.y0), self.canvas_w / (self.x1 - self.x0)

    # -- input -> canvas ------------------------------------------------------------------
    def render(self, image: torch.Tensor, fill: float = 0.5) -> torch.Tensor:
        """(3, H, W) image in [0, 1] -> (3, canvas_h, canvas_w); outside the image is `fill`."""
        _, h, w = image.shape
        sy, sx = self.scale
        k = max(1, int(1.0 / max(sy, sx)))  # pre-shrink (antialiased) when sampling coarsely
        src = image
        if k > 1:
            src = F.interpolate(image[None], size=(max(1, round(h / k)), max(1, round(w / k))),
                                mode="bilinear", antialias=True, align_corners=False)[0]
        grid = self._grid(self.canvas_h, self.canvas_w, h, w)
        out = F.grid_sample((src - fill)[None], grid[None].to(src.dtype), mode="bilinear",
                            padding_mode="zeros", align_corners=False)[0]
        return out + fill

    def _grid(self, out_h: int, out_w: int, in_h: int, in_w: int) -> torch.Tensor:
        """Normalised input coordinates of the canvas' pixel centres (grid_sample layout)."""
        ys = self.y0 + (torch.arange(out_h, dtype=torch.float64) + 0.5) * (self.y1 - self.y0) / out_h
        xs = self.x0 + (torch.arange(out_w, dtype=torch.float64) + 0.5) * (self.x1 - self.x0) / out_w
        gy = (2 * ys / in_h - 1).float()
        gx = (2 * xs / in_w - 1).float()
        return torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)

    # -- canvas -> input ------------------------------------------------------------------
    def to_input(self, maps: torch.Tensor, out_hw: tuple[int, int],
                 out_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps covering this view's box, (..., h, w) at any resolution, onto an output grid.

        The output grid is the input image at `out_scale` (out pixel = input pixel * out_scale).
        Returns the resampled maps (..., H', W') and a bool validity mask (H', W') that is True
        where the view saw the pixel.
        """
        lead = maps.shape[:-2]
        h, w = maps.shape[-2:]
        oh, ow = out_hw
        # Output pixel centres in input coordinates, then normalised into the view's box.
        ys = (torch.arange(oh, dtype=torch.float64) + 0.5) / out_scale
        xs = (torch.arange(ow, dtype=torch.float64) + 0.5) / out_scale
        gy = 2 * (ys - self.y0) / (self.y1 - self.y0) - 1
        gx = 2 * (xs - self.x0) / (self.x1 - self.x0) - 1
        grid = torch.stack(torch.meshgrid(gx.float(), gy.float(), indexing="xy"), dim=-1).to(maps.device)
        flat = maps.reshape(-1, 1, h, w).float()
        out = F.grid_sample(flat, grid[None].expand(flat.shape[0], -1, -1, -1), mode="bilinear",
                            padding_mode="border", align_corners=False)
        valid = (gx.abs() <= 1)[None, :] & (gy.abs() <= 1)[:, None]
        return out.reshape(*lead, oh, ow), valid.to(maps.device)


def fit_canvas(h: float, w: float, max_grid: tuple[int, int], patch: int) -> tuple[int, int, float]:
    """Canvas (multiple of `patch`) that holds an h x w region scaled to fit `max_grid` patches.

    Returns (canvas_h, canvas_w, scale). The region keeps its aspect ratio and is scaled up or
    down to the model's grid (the resolution it was trained at); the canvas is rounded up to
    whole patches, so it may extend past the region (padding).
    """
    scale = min(max_grid[0] * patch / h, max_grid[1] * patch / w)
    ch = min(max_grid[0], max(1, math.ceil(h * scale / patch - 1e-6))) * patch
    cw = min(max_grid[1], max(1, math.ceil(w * scale / patch - 1e-6))) * patch
    return ch, cw, scale


def full_view(h: int, w: int, max_grid: tuple[int, int], patch: int) -> View:
    """The whole image, aspect kept, padded on the right/bottom up to whole patches."""
    ch, cw, s = fit_canvas(h, w, max_grid, patch)
    return View(0.0, 0.0, cw / s, ch / s, ch, cw)


def region_view(box: tuple[float, float, float, float], canvas: tuple[int, int]) -> View:
    """A box re-shaped to the canvas aspect ratio around its centre (never squashes objects)."""
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    bw, bh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    aspect = canvas[1] / canvas[0]
    if bw / bh > aspect:
        bh = bw / aspect
    else:
        bw = bh * aspect
    return View(cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2, canvas[0], canvas[1])


def augmentation_views(base: View, count: int, zoom: float) -> list[View]:
    """`count` views: the base view, then zoomed crops (side = zoom x base) at the centre and the
    four corners — the paper's "full image + 5 spatial augmentations"."""
    views = [base]
    w, h = base.x1 - base.x0, base.y1 - base.y0
    anchors = [(0.5, 0.5), (0.0, 0.0), (1.0, 0.0), (0.0, 1.0), (1.0, 1.0)]
    for i in range(count - 1):
        ax, ay = anchors[i % len(anchors)]
        shrink = zoom ** (1 + i // len(anchors))  # beyond 6 views: zoom further
        cw, ch = w * shrink, h * shrink
        x0 = base.x0 + ax * (w - cw)
        y0 = base.y0 + ay * (h - ch)
        views.append(View(x0, y0, x0 + cw, y0 + ch, base.canvas_h, base.canvas_w))
    return views


def jittered_views(box: tuple[float, float, float, float], canvas: tuple[int, int], count: int, margin: float,
                   jitter: float, generator: torch.Generator) -> list[View]:
    """Refine crops around a modal box: the box with `margin`, then scaled/shifted copies."""
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    views = []
    for i in range(count):
        if i == 0:
            s, dx, dy = 1.0, 0.0, 0.0
        else:
            r = torch.rand(3, generator=generator, dtype=torch.float64) * 2 - 1
            s, dx, dy = 1.0 + jitter * float(r[0]), jitter * float(r[1]), jitter * float(r[2])
        m = (1 + 2 * margin) * s
        cx, cy = (x0 + x1) / 2 + dx * bw, (y0 + y1) / 2 + dy * bh
        views.append(region_view((cx - bw * m / 2, cy - bh * m / 2, cx + bw * m / 2, cy + bh * m / 2), canvas))
    return views
