"""A small z-buffer triangle rasteriser in NumPy (perspective-correct, headless, no GL).

Why not OpenGL: templates are rendered once per object (42 views at 256 px take a few seconds
here), and a pure-NumPy renderer runs identically on CI, robots and servers with no display,
GPU driver or Mesa packages. See docs/templates.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHUNK_ELEMENTS = 2_000_000  # candidate pixels per vectorised batch (bounds memory)


@dataclass
class Fragments:
    face: np.ndarray  # (H, W) int64, -1 where empty
    bary: np.ndarray  # (H, W, 3) perspective-correct barycentric coordinates
    depth: np.ndarray  # (H, W) camera z, inf where empty


def project(vertices_cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    z = vertices_cam[:, 2]
    u = K[0, 0] * vertices_cam[:, 0] / z + K[0, 2]
    v = K[1, 1] * vertices_cam[:, 1] / z + K[1, 2]
    return np.stack([u, v], axis=1)


def rasterize(vertices_cam: np.ndarray, faces: np.ndarray, K: np.ndarray, height: int, width: int,
              near: float = 1e-4) -> Fragments:
    """Nearest triangle per pixel centre (x + 0.5, y + 0.5) for an OpenCV camera (z forward)."""
    zbuf = np.full(height * width, np.inf)
    face_buf = np.full(height * width, -1, dtype=np.int64)
    bary_buf = np.zeros((height * width, 3))
    z = vertices_cam[:, 2]
    keep = (z[faces] > near).all(1)
    fids = np.nonzero(keep)[0]
    if len(fids):
        uv = project(vertices_cam, K)
        tri = uv[faces[fids]]  # (F, 3, 2)
        tz = z[faces[fids]]
        x0 = np.clip(np.ceil(tri[..., 0].min(1) - 0.5), 0, width).astype(np.int64)
        x1 = np.clip(np.floor(tri[..., 0].max(1) - 0.5), -1, width - 1).astype(np.int64)
        y0 = np.clip(np.ceil(tri[..., 1].min(1) - 0.5), 0, height).astype(np.int64)
        y1 = np.clip(np.floor(tri[..., 1].max(1) - 0.5), -1, height - 1).astype(np.int64)
        bw, bh = x1 - x0 + 1, y1 - y0 + 1
        area = ((tri[:, 1, 0] - tri[:, 0, 0]) * (tri[:, 2, 1] - tri[:, 0, 1])
                - (tri[:, 1, 1] - tri[:, 0, 1]) * (tri[:, 2, 0] - tri[:, 0, 0]))
        ok = (bw > 0) & (bh > 0) & (np.abs(area) > 1e-12)
        order = np.nonzero(ok)[0][np.argsort((bw * bh)[ok], kind="stable")]
        start = 0
        while start < len(order):
            # Faces sorted by box size: a chunk pads every box to its largest, so similar sizes waste little.
            end = start + 1
            while end < len(order) and (end + 1 - start) * bw[order[end]] * bh[order[end]] <= CHUNK_ELEMENTS:
                end += 1
            idx = order[start:end]
            start = end
            _raster_chunk(idx, tri, tz, area, x0, y0, bw, bh, width, fids, zbuf, face_buf, bary_buf)
    return Fragments(face_buf.reshape(height, width), bary_buf.reshape(height, width, 3), zbuf.reshape(height, width))


def _raster_chunk(idx, tri, tz, area, x0, y0, bw, bh, width, fids, zbuf, face_buf, bary_buf) -> None:
    mh, mw = int(bh[idx].max()), int(bw[idx].max())
    dy, dx = np.meshgrid(np.arange(mh), np.arange(mw), indexing="ij")
    px = x0[idx, None, None] + dx + 0.5
    py = y0[idx, None, None] + dy + 0.5
    inbox = (dx < bw[idx, None, None]) & (dy < bh[idx, None, None])
    t = tri[idx]
    a = area[idx, None, None]

    def edge(i, j):  # signed area of (p_i, p_j, pixel) over the triangle's signed area
        return ((t[:, i, 0, None, None] - px) * (t[:, j, 1, None, None] - py)
                - (t[:, i, 1, None, None] - py) * (t[:, j, 0, None, None] - px)) / a

    w0, w1, w2 = edge(1, 2), edge(2, 0), edge(0, 1)
    inside = inbox & (w0 >= -1e-9) & (w1 >= -1e-9) & (w2 >= -1e-9)
    f_local, yy, xx = np.nonzero(inside)
    if not len(f_local):
        return
    w = np.stack([w0[f_local, yy, xx], w1[f_local, yy, xx], w2[f_local, yy, xx]], axis=1)
    inv_z = w / tz[idx][f_local]  # perspective-correct interpolation of 1/z
    depth = 1.0 / inv_z.sum(1)
    bary = inv_z * depth[:, None]
    pix = (y0[idx][f_local] + yy) * width + (x0[idx][f_local] + xx)
    np.minimum.at(zbuf, pix, depth)
    win = depth <= zbuf[pix]
    face_buf[pix[win]] = fids[idx[f_local[win]]]
    bary_buf[pix[win]] = bary[win]
