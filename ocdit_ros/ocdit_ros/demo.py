"""`make demo`: run OC-DiT on a synthetic scene and write an overlay PNG.

Until trained weights ship (training issue) the demo uses the `tiny` config with random
weights, or `--weights` if you have some: the pipeline runs end to end, but random weights
cannot segment anything, and the demo says so instead of pretending.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from .model import OCDiT, load_config, load_model

PALETTE = np.array([[230, 25, 75], [60, 180, 75], [0, 130, 200], [245, 130, 48], [145, 30, 180],
                    [70, 240, 240], [240, 50, 230], [210, 245, 60]], dtype=np.float32)


def _shape_mask(kind: str, size: int, angle: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) - (size - 1) / 2
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * xx + s * yy, -s * xx + c * yy
    r = size * 0.42
    if kind == "disc":
        return u**2 + v**2 <= r**2
    if kind == "box":
        return (np.abs(u) <= r * 0.8) & (np.abs(v) <= r * 0.5)
    return (v >= -r * 0.6) & (v <= r * 0.7) & (np.abs(u) <= (v + r * 0.6) * 0.6)  # triangle


def _texture(rgb: np.ndarray, size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    stripes = 0.75 + 0.25 * np.sin(np.arange(size)[:, None] / (2 + seed % 3) + np.zeros((1, size)))
    noise = rng.uniform(0.9, 1.0, (size, size))
    return np.clip(rgb[None, None] * (stripes * noise)[..., None], 0, 255)


def synthetic_scene(image_hw=(224, 224), template_px=42, num_templates=6, seed=0):
    """Three textured shapes on a noisy background, plus rendered 'templates' of each shape."""
    rng = np.random.default_rng(seed)
    h, w = image_hw
    image = rng.uniform(90, 140, (h, w, 3)).astype(np.float32)
    kinds = ["disc", "box", "triangle"]
    colours = PALETTE[:3]
    gt = np.zeros((len(kinds), h, w), dtype=bool)
    for i, (kind, col) in enumerate(zip(kinds, colours)):
        size = int(rng.integers(48, 72))
        y, x = int(rng.integers(0, h - size)), int(rng.integers(0, w - size))
        m = _shape_mask(kind, size, float(rng.uniform(0, np.pi)))
        tex = _texture(col, size, i)
        region = image[y:y + size, x:x + size]
        region[m] = tex[m]
        gt[i, y:y + size, x:x + size] |= m
        gt[:i, y:y + size, x:x + size] &= ~m  # later objects occlude earlier ones
    templates = np.zeros((len(kinds), num_templates, template_px, template_px, 3), dtype=np.float32)
    for i, (kind, col) in enumerate(zip(kinds, colours)):
        for v in range(num_templates):
            m = _shape_mask(kind, template_px, v * np.pi / num_templates)
            templates[i, v][m] = _texture(col, template_px, i)[m]
    return image / 255.0, templates / 255.0, gt


def overlay(image: np.ndarray, probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    out = image * 255.0
    for i, p in enumerate(probs):
        m = p > threshold
        out[m] = 0.5 * out[m] + 0.5 * PALETTE[i % len(PALETTE)]
    return out.clip(0, 255).astype(np.uint8)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="demo_out", help="output folder")
    ap.add_argument("--weights", help="model weights (.safetensors or save_pretrained folder)")
    ap.add_argument("--config", default="tiny", help="preset name or YAML (used without --weights)")
    ap.add_argument("--ensemble", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from PIL import Image

    torch.manual_seed(args.seed)
    if args.weights:
        model = load_model(args.weights)
        trained = True
    else:
        model = OCDiT.from_config(load_config(args.config)).eval()
        trained = False
    cfg = model.config
    t_px = cfg.template_size[0] // cfg.backbone.patch_size * cfg.backbone.patch_size
    image, templates, gt = synthetic_scene(template_px=t_px, seed=args.seed)

    images_t = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    templates_t = torch.from_numpy(templates).permute(0, 1, 4, 2, 3)[None].float()
    t0 = time.perf_counter()
    probs = model.generate_segmentations(images_t, templates_t, args.ensemble, output_size="input",
                                         generator=torch.Generator().manual_seed(args.seed))[0].numpy()
    dt = time.perf_counter() - t0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    Image.fromarray((image * 255).astype(np.uint8)).save(out / "input.png")
    Image.fromarray(overlay(image, probs)).save(out / "overlay.png")
    print(f"model: {'weights ' + args.weights if trained else args.config + ' with RANDOM weights'}; "
          f"{len(probs)} objects, ensemble {args.ensemble}, {dt:.2f} s on {next(model.parameters()).device}")
    for i, (p, g) in enumerate(zip(probs, gt)):
        m = p > 0.5
        iou = (m & g).sum() / max((m | g).sum(), 1)
        print(f"  object {i}: mean p {p.mean():.3f}, mask area {int(m.sum())} px, IoU vs truth {iou:.3f}")
    if not trained:
        print("NOTE: random weights cannot segment; these masks only show the pipeline runs. "
              "Trained default weights come with the training issue.")
    print(f"wrote {out / 'overlay.png'} and {out / 'input.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
