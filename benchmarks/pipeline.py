"""Per-stage timings of the two-stage pipeline (features, coarse sampling, aggregation,
refine, post-processing) on a synthetic scene. Runs on CPU or GPU unchanged; prints the device.

    python benchmarks/pipeline.py [--device cuda] [--config tiny] [--coarse-ensemble 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics

import numpy as np
import torch

from ocdit_ros.demo import synthetic_scene
from ocdit_ros.model import OCDiT, load_config
from ocdit_ros.pipeline import ObjectSpec, PipelineConfig, Segmenter, StageConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--config", default="tiny", help="model preset or YAML (random weights)")
    ap.add_argument("--image", type=int, nargs=2, default=[480, 640], metavar=("H", "W"))
    ap.add_argument("--coarse-ensemble", type=int, default=4)
    ap.add_argument("--coarse-augmentations", type=int, default=1)
    ap.add_argument("--refine-ensemble", type=int, default=2)
    ap.add_argument("--refine-augmentations", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"device: {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, dtype {args.dtype}")
    torch.manual_seed(0)
    model = OCDiT.from_config(load_config(args.config))
    cfg = model.config
    t_px = cfg.template_size[0] // cfg.backbone.patch_size * cfg.backbone.patch_size
    image, templates, _ = synthetic_scene(tuple(args.image), template_px=t_px)
    objects = [ObjectSpec(f"obj{i}", torch.from_numpy(t).permute(0, 3, 1, 2)) for i, t in enumerate(templates)]
    # Thresholds at 0 so every proposal is refined: the refine cost is measured, not skipped.
    pcfg = PipelineConfig(coarse=StageConfig(args.coarse_ensemble, args.coarse_augmentations),
                          refine=StageConfig(args.refine_ensemble, args.refine_augmentations),
                          proposal_threshold=0.0, score_threshold=0.0, min_support=0.0,
                          max_instances=8, device=args.device, dtype=args.dtype)
    seg = Segmenter(model, config=pcfg)
    image_u8 = (image * 255).astype(np.uint8)
    seg.segment(image_u8, objects)  # warm-up (template features cached from here on)
    runs = []
    for _ in range(args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        runs.append(seg.segment(image_u8, objects))
    keys = ["features", "template_features", "sampling", "mapping", "aggregation", "coarse_total", "refine_total", "postprocess", "total"]
    r0 = runs[0]
    print(f"model {args.config}: image {args.image[0]}x{args.image[1]}, {len(objects)} objects, coarse E={args.coarse_ensemble} "
          f"A={args.coarse_augmentations}, refine E={args.refine_ensemble} A={args.refine_augmentations}, "
          f"{r0.num_proposals} proposals refined; median of {args.repeats} runs:")
    for k in keys:
        vals = [r.timings_ms.get(k, 0.0) for r in runs]
        print(f"  {k:<18} {statistics.median(vals):10.1f} ms")
    if device.type == "cuda":
        print(f"  peak GPU memory    {torch.cuda.max_memory_allocated(device) / 2**20:10.1f} MiB")


if __name__ == "__main__":
    main()
