"""Mask IoU of a refine model on ground-truth box crops, against ensemble size and sampling steps.

    python benchmarks/refine_iou.py --dataset DATA/val [--weights W] [--ensembles 1 2 4 8] [--steps 3 5 9 18]

The refine stage alone, prompted by each visible instance's box (1.5x, square), asked for the
right object: it isolates how well the model segments an object it is pointed at, which is what
the test-time ensemble and the step count change (the paper's ablations), from how well the
coarse stage finds objects. Masks: the mean of the ensemble's probabilities > 0.5. A control
row asks the same crops for another object: the gap to it is what the templates contribute.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time

import numpy as np
import torch
from PIL import Image

from ocdit_ros.data.bop import open_split
from ocdit_ros.model import load_model
from ocdit_ros.model.default import default_weights
from ocdit_ros.naming import obj_name
from ocdit_ros.templates import render_or_load
from ocdit_ros.templates.render import RenderSettings
from ocdit_ros.crop import crop_resize


def crops(split, model, templates_dir, max_instances: int, min_visib: float = 0.3):
    """(image crop tensor, templates tensor, gt mask) per visible instance, in dataset order."""
    size, mask_size = model.config.image_size, model.config.mask_size(model.config.image_size)
    settings = RenderSettings.for_model(model)  # as its training templates were rendered
    views = np.linspace(0, settings.views - 1, 8).astype(int)
    out = []
    for im in split.images:
        rgb = im.load_rgb()
        for inst in im.instances:
            if inst.visib_fract < min_visib:
                continue
            x, y, w, h = inst.bbox_visib
            side, cx, cy = max(w, h) * 1.5, x + w / 2, y + h / 2
            box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
            name = obj_name(inst.obj_id)
            tpl, _ = render_or_load(split.model_path(inst.obj_id), templates_dir, settings, object_id=name, units="mm")
            crop = crop_resize(rgb, box, size, Image.BILINEAR)
            gt = crop_resize(im.load_mask(inst).astype(np.uint8) * 255, box, mask_size, Image.BILINEAR) > 127
            out.append((torch.from_numpy(crop.copy()).permute(2, 0, 1).float() / 255,
                        torch.from_numpy(tpl.rgb[views]).permute(0, 3, 1, 2).float() / 255, torch.from_numpy(gt)))
            if len(out) >= max_instances:
                return out
    return out


@torch.no_grad()
def mean_iou(model, items, ensemble: int, steps: int, seed: int = 0) -> float:
    sampler = dataclasses.replace(model.sampler_config, num_steps=steps)
    ious = []
    for k, (img, tpl, gt) in enumerate(items):
        cond = model.condition(img[None], tpl[None, None])
        prob = model.sample_masks(cond, ensemble, torch.Generator().manual_seed(seed + k), sampler).mean(1)[0, 0]
        pred = prob > 0.5
        ious.append(float((pred & gt).sum() / max(int((pred | gt).sum()), 1)))
    return float(np.mean(ious))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--weights", help="refine weights (default: the shipped refine model)")
    ap.add_argument("--templates", default="templates_cache", help="template cache folder")
    ap.add_argument("--ensembles", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--steps", type=int, nargs="+", default=[3, 5, 9, 18])
    ap.add_argument("--default-ensemble", type=int, default=4)
    ap.add_argument("--default-steps", type=int, default=9)
    ap.add_argument("--max-instances", type=int, default=40)
    ap.add_argument("--out", help="write the numbers as JSON here")
    args = ap.parse_args(argv)
    model = load_model(args.weights or default_weights()[1]).eval()
    split = open_split(args.dataset)
    items = crops(split, model, args.templates, args.max_instances)
    t0 = time.perf_counter()
    rows = {"ensemble": [(e, mean_iou(model, items, e, args.default_steps)) for e in args.ensembles],
            "steps": [(s, mean_iou(model, items, args.default_ensemble, s)) for s in args.steps]}
    # Control: the same crops asked for the *next* instance's object. A model that ignores the
    # templates (a "blob in the middle" prior) scores the same here; one that matches them drops.
    wrong = [(img, items[(k + 1) % len(items)][1], gt) for k, (img, _, gt) in enumerate(items)]
    control = mean_iou(model, wrong, args.default_ensemble, args.default_steps)
    summary = {"dataset": str(split.path), "instances": len(items), "machine": f"{platform.machine()}, "
               f"{torch.get_num_threads()} threads, {'CUDA' if torch.cuda.is_available() else 'CPU only'}",
               "seconds": round(time.perf_counter() - t0, 1),
               "iou_vs_ensemble": {str(e): round(v, 4) for e, v in rows["ensemble"]},
               "iou_vs_steps": {str(s): round(v, 4) for s, v in rows["steps"]},
               "iou_with_another_objects_templates": round(control, 4),
               "default_ensemble": args.default_ensemble, "default_steps": args.default_steps}
    print(json.dumps(summary, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
