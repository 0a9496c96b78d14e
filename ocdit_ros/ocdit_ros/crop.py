"""One crop-and-resize for templates, training examples and benchmarks (no ROS, no torch)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def crop_resize(img: np.ndarray, box, size: tuple[int, int], resample, fill: int = 0) -> np.ndarray:
    """Crop (x0, y0, x1, y1), float and possibly outside the image (padded with `fill`), resized to (H, W)."""
    x0, y0, x1, y1 = box
    pil = Image.fromarray(img)
    fillcolor = (fill,) * 3 if img.ndim == 3 else fill
    return np.asarray(pil.transform((size[1], size[0]), Image.EXTENT, (x0, y0, x1, y1), resample=resample,
                                    fillcolor=fillcolor))
