"""`ocdit train vae|coarse|refine --config train.yaml [--data DIR ...] [--out DIR] [--steps N] [--stop-at N]`.

`ocdit train backbone --config ... --data DIR --templates DIR --out DIR` pretrains the ViT alone by
template matching (`losses.MatchingLoss`), a stage of the same trainer as the others.

Resumes from the newest checkpoint in --out unless --restart; ends by exporting EMA weights to
OUT/model.safetensors. Under `torchrun --nproc_per_node K -m ocdit_ros.cli train ...` it trains
with DistributedDataParallel.
"""

from __future__ import annotations

import argparse
import sys

from .config import TrainConfig


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train the mask VAE, the coarse or the refine model (or pretrain the ViT)",
                              description="Train one stage on BOP-format scenes (docs/training.md).")
    p.add_argument("stage", choices=["vae", "coarse", "refine", "backbone"])
    p.add_argument("--config", help="training YAML (TrainConfig fields); command-line options override it")
    p.add_argument("--data", nargs="+", help="BOP split folders, e.g. DATA/train")
    p.add_argument("--templates", help="template archives of the training objects (obj_XXXXXX.npz)")
    p.add_argument("--init", help="weights to start from (the VAE run for coarse/refine)")
    p.add_argument("--backbone-init", help="a model file whose backbone replaces --init's, frozen "
                                           "(from 'ocdit train backbone')")
    p.add_argument("--model", help="model preset or YAML when --init carries no config")
    p.add_argument("--out", help="run folder: checkpoints, log.jsonl, tensorboard/, model.safetensors")
    p.add_argument("--steps", type=int, help="total optimiser steps (a resumed run continues up to this)")
    p.add_argument("--stop-at", type=int, metavar="STEP",
                   help="stop (checkpoint and export) at this step; the learning-rate schedule stays that of "
                        "--steps, so a later call without it continues the same run")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--num-workers", type=int)
    p.add_argument("--max-minutes", type=float, help="time budget: the schedule is fitted to it and the run "
                                                     "stops, checkpoints and exports when it is spent")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda if available)")
    p.add_argument("--restart", action="store_true", help="ignore checkpoints in --out")
    return p


def run(args) -> int:
    from .trainer import Trainer

    try:
        raw = _yaml(args.config)
        raw["stage"] = args.stage
        for key in ("data", "templates", "init", "backbone_init", "model", "out", "steps", "batch_size", "lr",
                    "num_workers", "max_minutes"):
            value = getattr(args, key)
            if value is not None:
                raw[key] = value
        cfg = TrainConfig.from_dict(raw)
        trainer = Trainer(cfg, device=args.device)
    except (ValueError, FileNotFoundError) as exc:
        print(f"ocdit train {args.stage}: error: {exc}", file=sys.stderr)
        return 2
    latest = None if args.restart else trainer.latest_checkpoint()
    if latest is not None:
        trainer.load_checkpoint(latest)
        print(f"resuming from {latest} (step {trainer.step})", file=sys.stderr)
    target = min(cfg.steps, args.stop_at) if args.stop_at else cfg.steps
    if trainer.step < target:
        metrics = trainer.fit(target)
        print({k: round(v, 5) for k, v in metrics.items()}, file=sys.stderr)
    path = trainer.export()
    if path is not None:
        print(f"weights: {path}")
    import torch.distributed as dist

    if dist.is_initialized():  # under torchrun: leave together, then close gloo/NCCL cleanly
        dist.barrier()
        dist.destroy_process_group()
    return 0


def _yaml(path) -> dict:
    if not path:
        return {}
    import yaml
    from pathlib import Path

    if not Path(path).is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    return yaml.safe_load(Path(path).read_text()) or {}
