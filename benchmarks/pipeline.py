"""Profile of one frame through the two-stage pipeline, stage by stage.

Per stage: wall time (median of --repeats frames after a warm-up), network evaluations, batch
sizes of the denoiser calls, and FLOPs measured with torch.utils.flop_counter next to the
analytic count for the model's config. Stages: image decode (sensor_msgs/Image -> RGB), backbone
on the image views and on the templates (first frame; cached afterwards), coarse network
evaluations, aggregation (mapping members back and clustering), refine network evaluations,
VAE decode, message building (InstanceArray). Runs on CPU or GPU unchanged; prints the machine.

    python benchmarks/pipeline.py                          # shipped default model, 5 objects
    python benchmarks/pipeline.py --weights none --model-config tiny --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ocdit_ros.model import OCDiT, load_config, load_model
from ocdit_ros.model.config import OCDiTConfig
from ocdit_ros.pipeline import ObjectSpec, PipelineConfig, Segmenter, StageConfig


# -- analytic FLOPs (2 per multiply-add; matmuls, convolutions and attention only) ----------
def vit_flops(cfg: OCDiTConfig, h: int, w: int) -> float:
    b = cfg.backbone
    p = b.patch_size
    tokens = (h // p) * (w // p) + 1
    d, hidden = b.embed_dim, int(b.embed_dim * b.mlp_ratio)
    per_block = 2 * tokens * (4 * d * d + 2 * d * hidden) + 4 * tokens * tokens * d
    return 2 * (tokens - 1) * 3 * p * p * d + b.depth * per_block


def nfe_flops(cfg: OCDiTConfig, rows: int, objects: int, templates: int) -> float:
    """One network evaluation over `rows` (views x members) of `objects` objects."""
    d, dc = cfg.diffuser.hidden_size, cfg.diffuser
    hidden = int(d * dc.mlp_ratio)
    p = cfg.grid[0] * cfg.grid[1]
    lt = templates * cfg.template_grid[0] * cfg.template_grid[1]
    z = cfg.vae.z_channels
    q = rows * objects * p  # query tokens
    per_block = 2 * q * (2 * d * d) + 4 * q * lt * d  # cross: q and out projections, attention
    per_block += 2 * q * (4 * d * d) + 4 * rows * (objects * p) ** 2 * d  # self-attention
    per_block += 2 * q * (2 * d * hidden)  # MLP
    final = 2 * q * (2 * d * d + d * z)
    return 2 * q * z * d + dc.depth * per_block + final


def decode_flops(cfg: OCDiTConfig) -> float:
    """One mask through the VAE decoder (post-quant conv to logits)."""
    v = cfg.vae
    h, w = cfg.grid
    ch = v.up_channels
    f = 2 * v.z_channels**2 * h * w + 2 * 9 * v.z_channels * ch[0] * h * w
    cin = ch[0]
    for level, cout in enumerate(ch[1:]):
        for _ in range(v.num_blocks + 1):
            f += 2 * h * w * (9 * cin * cout + 9 * cout * cout + cin * cout)
            cin = cout
        if level in (0, 1):
            f += 2 * h * w * 5 * cin * cin + 4 * (h * w) ** 2 * cin
        h, w = 2 * h, 2 * w
        f += 2 * 9 * cin * cin * h * w
    return f + 2 * 25 * cin * h * w


def measured(fn) -> float:
    # The math attention kernel: flop_counter has no formula for the CPU flash kernel.
    with sdpa_kernel([SDPBackend.MATH]), FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


# -- the frame ------------------------------------------------------------------------------
def synthetic_frame(hw: tuple[int, int], n_objects: int, n_templates: int, template_px: int, seed: int = 0):
    """An image with coloured blobs and per-object templates of the same colours."""
    rng = np.random.default_rng(seed)
    h, w = hw
    image = (rng.random((h, w, 3)) * 60 + 90).astype(np.uint8)
    objects = []
    yy, xx = np.mgrid[0:h, 0:w]
    for i in range(n_objects):
        colour = rng.integers(0, 256, 3)
        cy, cx, r = rng.integers(h // 6, 5 * h // 6), rng.integers(w // 6, 5 * w // 6), rng.integers(h // 16, h // 7)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = colour
        t = np.zeros((n_templates, 3, template_px, template_px), np.float32)
        c = template_px // 2
        ty, tx = np.mgrid[0:template_px, 0:template_px]
        disc = (ty - c) ** 2 + (tx - c) ** 2 <= (template_px // 3) ** 2
        t[:, :, disc] = (colour / 255.0)[None, :, None]
        objects.append(ObjectSpec(f"obj{i}", torch.from_numpy(t)))
    return image, objects


def image_message(image: np.ndarray):
    from sensor_msgs.msg import Image

    from ocdit_ros.ros.image_codec import fill_image

    msg = Image()
    fill_image(msg, image, "rgb8")
    return msg


def build_messages(result):
    """The node's own InstanceArray conversion (None when the ROS layer is unavailable)."""
    from std_msgs.msg import Header

    from ocdit_ros.ros import messages

    return messages.instance_array(messages.rclpy_types(), Header(), result)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_models(args):
    if args.weights == "none":
        torch.manual_seed(0)
        return OCDiT.from_config(load_config(args.model_config)), None
    from ocdit_ros.pipeline.build import ModelFiles  # the node's and the CLI's weight resolution

    files = ModelFiles.resolve(None if args.weights == "default" else args.weights)
    return load_model(files.weights), load_model(files.refine_weights) if files.refine_weights else None


def profile(args) -> dict:
    device = torch.device(args.device)
    coarse_model, refine_model = load_models(args)
    cfg = coarse_model.config
    rcfg = (refine_model or coarse_model).config
    t_px = cfg.template_pixels[0]
    image, objects = synthetic_frame(tuple(args.image), args.objects, args.templates, t_px)
    # Thresholds at 0 so every proposal is refined: the refine cost is measured, not skipped.
    pcfg = PipelineConfig(coarse=StageConfig(args.coarse_ensemble, args.coarse_augmentations),
                          refine=StageConfig(args.refine_ensemble, args.refine_augmentations),
                          proposal_threshold=0.0, score_threshold=0.0, min_support=0.0, min_mask_area=0,
                          max_instances=args.max_instances, device=args.device, dtype=args.dtype,
                          cache=not args.no_cache, memory_budget_mb=args.memory_budget_mb)
    seg = Segmenter(coarse_model, refine_model, pcfg)
    msg = image_message(image) if not args.no_ros else None

    def decode():
        if msg is None:
            return image
        from ocdit_ros.ros.image_codec import image_to_rgb

        return image_to_rgb(msg)

    # First frame: template features are computed (cold); later frames reuse them.
    sync(device)
    t0 = time.perf_counter()
    for o in objects:
        seg.coarse.template_features(o)
    sync(device)
    template_cold_ms = (time.perf_counter() - t0) * 1e3
    seg.segment(decode(), objects)  # warm-up
    runs = []
    for _ in range(args.repeats):
        sync(device)
        t0 = time.perf_counter()
        rgb = decode()
        t_decode = (time.perf_counter() - t0) * 1e3
        result = seg.segment(rgb, objects)
        t1 = time.perf_counter()
        if msg is not None:
            build_messages(result)
        t_msg = (time.perf_counter() - t1) * 1e3
        runs.append((t_decode, t_msg, (time.perf_counter() - t0) * 1e3, result))

    def med(get):
        return statistics.median(get(r) for r in runs)

    res = runs[0][3]
    coarse_b = [b for b in res.batches if b.stage == "coarse"]
    refine_b = [b for b in res.batches if b.stage == "refine"]
    n_templates = args.templates
    masks = sum(b.units * b.members * b.objects for b in res.batches)
    coarse_view_hw = (cfg.grid[0] * cfg.backbone.patch_size, cfg.grid[1] * cfg.backbone.patch_size)
    refine_view_hw = (rcfg.grid[0] * rcfg.backbone.patch_size, rcfg.grid[1] * rcfg.backbone.patch_size)
    n_crops = sum(b.units for b in refine_b)

    # Measured FLOPs per unit of work, scaled by the frame's counts.
    mm, rm = seg.coarse, seg.refine

    def one_nfe(model_wrap, b):
        m = model_wrap.model
        c = m.config
        imf = torch.rand(b.units, c.backbone.feature_dim, *c.grid, device=device)
        tf = torch.rand(b.units, b.objects, n_templates, c.backbone.feature_dim, *c.template_grid, device=device)
        with torch.inference_mode():
            cond = m.diffuser.condition(imf, tf)
            x = torch.randn(b.units * b.members, b.objects, c.vae.z_channels, *c.grid, device=device)
            return measured(lambda: m.diffuser.denoise(x, torch.tensor(1.0, device=device), cond))

    with torch.inference_mode():
        f_img = measured(lambda: mm.image_features(torch.rand(1, 3, *coarse_view_hw, device=device)))
        f_tpl = measured(lambda: mm.model.feature_extractor(torch.rand(n_templates, 3, t_px, t_px, device=device)))
        f_dec = measured(lambda: mm.model.decode_masks(
            torch.randn(1, cfg.vae.z_channels, *cfg.grid, device=device)))
        f_crop = measured(lambda: rm.image_features(torch.rand(1, 3, *refine_view_hw, device=device)))
    f_coarse = sum(one_nfe(mm, b) * b.evaluations for b in coarse_b)
    f_refine = sum(one_nfe(rm, b) * b.evaluations for b in refine_b)
    a_coarse = sum(nfe_flops(cfg, b.units * b.members, b.objects, n_templates) * b.evaluations for b in coarse_b)
    a_refine = sum(nfe_flops(rcfg, b.units * b.members, b.objects, n_templates) * b.evaluations for b in refine_b)
    n_views = sum(b.units for b in coarse_b) // max(1, -(-args.objects // mm.object_capacity))

    t = lambda k: med(lambda r: r[3].timings_ms.get(k, 0.0))  # noqa: E731
    stages = [
        ("image decode (Image -> RGB)", med(lambda r: r[0]), 0, "", 0.0, 0.0),
        ("backbone: image views + refine crops", t("features"), 0, f"{n_views} view(s), {n_crops} crop(s)",
         f_img * n_views + f_crop * n_crops,
         vit_flops(cfg, *coarse_view_hw) * n_views + vit_flops(rcfg, *refine_view_hw) * n_crops),
        ("backbone: templates (first frame only)", template_cold_ms, 0,
         f"{args.objects} x {n_templates} of {t_px} px", f_tpl * args.objects,
         vit_flops(cfg, t_px, t_px) * n_templates * args.objects),
        ("  templates on later frames (cached)", t("template_features"), 0, "", 0.0, 0.0),
        ("coarse network evaluations", t("coarse_denoise"), sum(b.evaluations for b in coarse_b),
         ", ".join(f"{b.units}x{b.members}x{b.objects}" for b in coarse_b), f_coarse, a_coarse),
        ("aggregation (mapping + clustering)", t("mapping") + t("aggregation"), 0, "", 0.0, 0.0),
        ("refine network evaluations", t("refine_denoise"), sum(b.evaluations for b in refine_b),
         ", ".join(f"{b.units}x{b.members}x{b.objects}" for b in refine_b), f_refine, a_refine),
        ("VAE decode", t("coarse_decode") + t("refine_decode"), 0, f"{masks} masks", f_dec * masks,
         decode_flops(cfg) * masks),
        ("instances (resize, overlaps)", t("postprocess"), 0, "", 0.0, 0.0),
        ("message building (InstanceArray)", med(lambda r: r[1]), 0, "", 0.0, 0.0),
    ]
    frame = med(lambda r: r[2])
    accounted = sum(s[1] for s in stages if not s[0].startswith("backbone: templates"))
    stages.append(("other (views, conditioning, glue)", frame - accounted, 0, "", 0.0, 0.0))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    return {
        "machine": {"device": str(device), "name": name, "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                    "load_average": os.getloadavg()},
        "setting": {"weights": args.weights, "config": args.model_config if args.weights == "none" else "shipped",
                    "image": args.image, "objects": args.objects, "templates": n_templates, "dtype": args.dtype,
                    "coarse": [args.coarse_ensemble, args.coarse_augmentations],
                    "refine": [args.refine_ensemble, args.refine_augmentations], "cache": not args.no_cache,
                    "proposals_refined": res.num_proposals, "repeats": args.repeats},
        "frame_ms": frame,
        "network_share": (t("coarse_denoise") + t("refine_denoise")) / frame,
        "stages": [{"stage": s[0], "ms": s[1], "evaluations": s[2], "batches": s[3],
                    "gflop_measured": s[4] / 1e9, "gflop_analytic": s[5] / 1e9} for s in stages],
    }


def print_table(report: dict) -> None:
    m, s = report["machine"], report["setting"]
    print(f"machine: {m['device']} ({m['name']}), torch {m['torch']}, {m['threads']} threads, "
          f"load average {', '.join(f'{x:.1f}' for x in m['load_average'])}")
    print(f"setting: {s}")
    print("| stage | ms | % of frame | evaluations | batches (views x members x objects) | GFLOP measured "
          "| GFLOP analytic |")
    print("|---|---|---|---|---|---|---|")
    for st in report["stages"]:
        pct = "" if st["stage"].startswith("backbone: templates") else f"{100 * st['ms'] / report['frame_ms']:.1f}"
        fl = lambda v: f"{v:.1f}" if v else ""  # noqa: E731
        print(f"| {st['stage']} | {st['ms']:.1f} | {pct} | {st['evaluations'] or ''} | {st['batches']} | "
              f"{fl(st['gflop_measured'])} | {fl(st['gflop_analytic'])} |")
    print(f"| **frame** | **{report['frame_ms']:.1f}** | 100 | | | | |")
    print(f"network evaluations: {100 * report['network_share']:.1f} % of the frame")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--weights", default="default", help="default (shipped model), none (random), or a file")
    ap.add_argument("--model-config", default="tiny", help="model preset or YAML with --weights none")
    ap.add_argument("--image", type=int, nargs=2, default=[480, 640], metavar=("H", "W"))
    ap.add_argument("--objects", type=int, default=5)
    ap.add_argument("--templates", type=int, default=8, help="templates per object")
    shipped = PipelineConfig()  # the defaults a user gets, not a copy of them
    ap.add_argument("--coarse-ensemble", type=int, default=shipped.coarse.ensemble)
    ap.add_argument("--coarse-augmentations", type=int, default=shipped.coarse.augmentations)
    ap.add_argument("--refine-ensemble", type=int, default=shipped.refine.ensemble)
    ap.add_argument("--refine-augmentations", type=int, default=shipped.refine.augmentations)
    ap.add_argument("--max-instances", type=int, default=8)
    ap.add_argument("--memory-budget-mb", type=int, default=shipped.memory_budget_mb)
    ap.add_argument("--no-cache", action="store_true", help="the reference path (no reuse across evaluations)")
    ap.add_argument("--no-ros", action="store_true", help="skip image decode and message building")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", help="also write the report here")
    return ap


def main(argv=None) -> None:
    args = parser().parse_args(argv)
    report = profile(args)
    print_table(report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
