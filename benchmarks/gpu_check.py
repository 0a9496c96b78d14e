"""The prepared device check (run through benchmarks/gpu_check.sh): JSON results under --out.

On CUDA: the paper's Tab. 5 setting (coarse stage, 8 objects, the official-shaped config
`official_coarse` with random weights) at ensemble 1, 4 and 16, float32 and bfloat16, caching on
and off, with peak memory; the node's frame path end to end on synthetic frames (latency per
stage, benchmarks/pipeline.py); the node's out-of-memory fallback forced with
torch.cuda.set_per_process_memory_fraction. On a machine without CUDA the same steps run at
the `tiny` config (ensembles 1, 2, 4) so the script itself is tested; the OOM step needs CUDA.
A time guard skips (and records) what would not fit in --budget-s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ocdit_ros.model import OCDiT, load_config  # noqa: E402
from ocdit_ros.pipeline import OCDiTMaskModel, PipelineConfig, StageConfig  # noqa: E402


def write(out: Path, name: str, data) -> None:
    (out / name).write_text(json.dumps(data, indent=1))
    print(f"wrote {out / name}", flush=True)


def machine(device: torch.device) -> dict:
    info = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "cpus": os.cpu_count(), "load_average": os.getloadavg()}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        info.update(name=p.name, memory_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda)
    else:
        info["name"] = platform.processor() or platform.machine()
    return info


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tab5(device, preset, ensembles, objects, templates, deadline, quick=False) -> list[dict]:
    """Coarse stage at one view: backbone + 17 network evaluations + decode, per setting."""
    torch.manual_seed(0)
    model = OCDiT.from_config(load_config(preset))
    mm = OCDiTMaskModel(model, device)
    cfg = model.config
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, cfg.grid[0] * 14, cfg.grid[1] * 14, generator=g)
    tpx = cfg.template_grid[0] * 14
    tpl = torch.rand(1, objects, templates, 3, tpx, tpx, generator=g).to(device)
    rows = []
    for ensemble in ensembles:
        for dtype in ("float32", "bfloat16"):
            for cache in (True, False):
                row = {"preset": preset, "objects": objects, "templates": templates, "ensemble": ensemble,
                       "dtype": dtype, "cache": cache}
                if time.monotonic() > deadline:
                    rows.append({**row, "skipped": "time budget"})
                    continue
                mm.configure(PipelineConfig(device=str(device), dtype=dtype, cache=cache))
                try:
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                        torch.cuda.reset_peak_memory_stats(device)
                    sync(device)
                    t0 = time.perf_counter()
                    feats = mm.image_features(image)
                    with torch.inference_mode(), mm._autocast():
                        tf = mm.model.feature_extractor(mm.model.normalize(tpl.flatten(0, 2))).float()
                    tf = tf.reshape(1, objects, templates, *tf.shape[1:])
                    sync(device)
                    t1 = time.perf_counter()
                    stage = StageConfig(ensemble=ensemble, num_steps=2 if quick else 9)
                    probs = mm.sample(feats, tf, ensemble, stage,
                                      torch.Generator().manual_seed(1))
                    sync(device)
                    row.update(total_s=time.perf_counter() - t0, backbone_s=t1 - t0,
                               denoise_s=mm.last_sample["denoise_ms"] / 1e3,
                               decode_s=mm.last_sample["decode_ms"] / 1e3,
                               evaluations=mm.last_sample["evaluations"], mask_mean=float(probs.mean()))
                    if device.type == "cuda":
                        row["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
                except torch.OutOfMemoryError as e:
                    row["error"] = f"out of memory: {str(e).splitlines()[0]}"
                print(row, flush=True)
                rows.append(row)
    mm.configure(PipelineConfig(device=str(device)))
    return rows


def node_frames(device, preset, deadline, quick=False) -> dict:
    """The node's frame path (image decode, pipeline, InstanceArray) on synthetic frames."""
    import pipeline as bench  # benchmarks/pipeline.py

    if time.monotonic() > deadline:
        return {"skipped": "time budget"}
    argv = ["--device", str(device), "--weights", "none", "--model-config", preset, "--objects", "5",
            "--templates", "8", "--repeats", "2"]
    if quick:
        argv += ["--image", "120", "160", "--objects", "2", "--templates", "2", "--repeats", "1",
                 "--coarse-ensemble", "1", "--refine-ensemble", "1", "--refine-augmentations", "1",
                 "--max-instances", "2"]
    try:
        import rclpy  # noqa: F401
    except ImportError:
        argv.append("--no-ros")
    results = {}
    for dtype in ("float32",) if quick else ("float32", "bfloat16"):
        if time.monotonic() > deadline:
            results[dtype] = {"skipped": "time budget"}
            continue
        results[dtype] = bench.profile(bench.parser().parse_args(argv + ["--dtype", dtype]))
    return results


def oom_fallback(device, preset, deadline) -> dict:
    """Force an out-of-memory and check that the node's fallback (halved ensembles) recovers."""
    if device.type != "cuda":
        return {"skipped": "needs CUDA (set_per_process_memory_fraction)"}
    if time.monotonic() > deadline:
        return {"skipped": "time budget"}
    import logging

    import numpy as np

    import pipeline as bench
    from ocdit_ros.pipeline import Segmenter
    from ocdit_ros.pipeline.retry import segment_with_retry

    torch.manual_seed(0)
    model = OCDiT.from_config(load_config(preset))
    cfg = PipelineConfig(coarse=StageConfig(ensemble=16), refine=StageConfig(ensemble=16), device=str(device),
                         memory_budget_mb=1 << 20)  # no batching by budget: the OOM must happen
    seg = Segmenter(model, config=cfg)
    image, objects = bench.synthetic_frame((480, 640), 8, 4, model.config.template_grid[0] * 14)
    total = torch.cuda.get_device_properties(device).total_memory
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    fraction = min(0.9, (weights + 3 * 2**30) / total)
    warnings = []

    class Log(logging.Handler):
        def emit(self, record):
            warnings.append(record.getMessage())

    logger = logging.getLogger("gpu_check.oom")
    logger.addHandler(Log())
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    try:
        t0 = time.perf_counter()
        result = segment_with_retry(seg, image, objects, cfg, warn=logger.warning)
        out = {"memory_fraction": fraction, "recovered": True, "seconds": time.perf_counter() - t0,
               "instances": len(result.instances), "fallback_messages": warnings}
    except torch.OutOfMemoryError as e:
        out = {"memory_fraction": fraction, "recovered": False, "error": str(e).splitlines()[0],
               "fallback_messages": warnings}
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        torch.cuda.empty_cache()
    out["image"] = list(np.asarray(image).shape)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "gpu_check_out"))
    ap.add_argument("--budget-s", type=float, default=420.0, help="stop starting new steps after this")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="smallest settings (the CPU test)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    deadline = time.monotonic() + args.budget_s
    preset = "official_coarse" if cuda else "tiny"
    summary = {"machine": machine(device), "preset": preset, "quick": args.quick, "steps": {}}
    steps = [
        ("tab5", lambda: tab5(device, preset, (1,) if args.quick else (1, 4, 16) if cuda else (1, 2, 4),
                              2 if args.quick else 8, 2 if args.quick else 4, deadline, args.quick)),
        ("node_frames", lambda: node_frames(device, preset, deadline, args.quick)),
        ("oom_fallback", lambda: oom_fallback(device, preset, deadline)),
    ]
    ok = True
    for name, fn in steps:
        t0 = time.monotonic()
        try:
            data = fn()
            status = "ok"
        except Exception:  # keep going: a failed step is a result too
            data = {"error": traceback.format_exc()}
            status = "error"
            ok = False
        write(out, f"{name}.json", data)
        summary["steps"][name] = {"status": status, "seconds": round(time.monotonic() - t0, 1)}
    write(out, "summary.json", summary)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
