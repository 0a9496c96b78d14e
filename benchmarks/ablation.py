"""AP against ensemble size and against sampling steps (the paper's two test-time ablations).

    python benchmarks/ablation.py --dataset DATA/val --out ablation/ [--weights W] \
        [--ensembles 1 2 4 8] [--steps 3 5 9 18] [--max-images 40]

Every point is one `ocdit eval` run (the same images, seed and templates), so the curves show the
effect of the knob alone. Writes ablation/summary.json, prints a table and, when matplotlib is
installed, ablation/ap_vs_ensemble.png and ablation/ap_vs_steps.png.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from ocdit_ros.cli import main as ocdit


def run_point(args, out: Path, name: str, extra: list[str]) -> dict:
    report = out / f"{name}.json"
    if not report.is_file():  # points already measured are reused: the sweep resumes
        cmd = ["eval", "--dataset", args.dataset, "--out", str(report), "--no-coarse-ap",
               "--max-images", str(args.max_images)] + extra
        if args.weights:
            cmd += ["--weights", args.weights]
        for flag in ("config", "templates", "queries"):
            if getattr(args, flag):
                cmd += [f"--{flag}", getattr(args, flag)]
        t0 = time.perf_counter()
        code = ocdit(cmd)
        if code != 0:
            raise SystemExit(f"ocdit eval failed ({code}) for {name}")
        print(f"{name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return json.loads(report.read_text())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True, help="BOP split folder (or dataset root)")
    ap.add_argument("--out", default="ablation")
    ap.add_argument("--weights", help="coarse weights (default: the shipped model)")
    ap.add_argument("--ensembles", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--steps", type=int, nargs="+", default=[3, 5, 9, 18])
    ap.add_argument("--default-ensemble", type=int, default=4, help="ensemble of the steps sweep")
    ap.add_argument("--default-steps", type=int, default=9, help="sampling steps of the ensemble sweep")
    ap.add_argument("--max-images", type=int, default=40)
    ap.add_argument("--config", help="pipeline config YAML for every point (e.g. lower thresholds)")
    ap.add_argument("--templates", help="template cache folder")
    ap.add_argument("--queries", choices=["all", "present"], help="see ocdit eval --queries")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    rows = {"ensemble": [], "steps": []}
    for e in args.ensembles:
        r = run_point(args, out, f"ensemble_{e}_steps_{args.default_steps}",
                      ["--ensemble", str(e), "--steps", str(args.default_steps)])
        rows["ensemble"].append({"ensemble": e, "steps": args.default_steps, "ap": r["ap"], "ap50": r["ap50"],
                                 "seconds_per_image": r.get("timing", {}).get("mean_seconds_per_image")})
    for s in args.steps:
        # Named by both knobs: the point the two sweeps share is run once.
        r = run_point(args, out, f"ensemble_{args.default_ensemble}_steps_{s}",
                      ["--ensemble", str(args.default_ensemble), "--steps", str(s)])
        rows["steps"].append({"ensemble": args.default_ensemble, "steps": s, "ap": r["ap"], "ap50": r["ap50"],
                              "seconds_per_image": r.get("timing", {}).get("mean_seconds_per_image")})
    summary = {"dataset": args.dataset, "max_images": args.max_images, "weights": args.weights or "default",
               "machine": f"{platform.machine()} {torch.get_num_threads()} threads, "
                          f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU only'}",
               **rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    for key in ("ensemble", "steps"):
        print(f"\nAP vs {key}")
        print(f"{key:>9} {'AP':>7} {'AP50':>7} {'s/img':>7}")
        for r in rows[key]:
            spi = r["seconds_per_image"]
            print(f"{r[key]:>9} {r['ap']:7.3f} {r['ap50']:7.3f} {spi if spi is None else round(spi, 2):>7}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plots (pip install matplotlib)", file=sys.stderr)
        return 0
    for key in ("ensemble", "steps"):
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.plot([r[key] for r in rows[key]], [r["ap"] for r in rows[key]], "o-", label="AP")
        ax.plot([r[key] for r in rows[key]], [r["ap50"] for r in rows[key]], "s--", label="AP50")
        ax.set_xlabel("ensemble size" if key == "ensemble" else "sampling steps")
        ax.set_ylabel("AP")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / f"ap_vs_{key}.png", dpi=120)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
