"""`ocdit segment IMAGE... --objects DIR --out DIR`: segment images, write masks, JSON, overlays."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from ..cli_common import CliError, add_model_options, cli_segmenter, load_objects, pipeline_config


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("segment", help="segment objects in images",
                              description="Segment the objects of a template folder in images.")
    p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    p.add_argument("--objects", required=True, help="folder of template archives (ocdit templates render)")
    add_model_options(p)
    p.add_argument("--config", help="pipeline config YAML (ensembles, steps, thresholds, ...)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", choices=["ocdit", "bop"], default="ocdit",
                   help="results JSON format (bop: BOP challenge 2D segmentation entries)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: from the config)")
    p.add_argument("--no-refine", action="store_true", help="coarse stage only")
    p.add_argument("--seed", type=int, help="sampling seed (default: from the config)")
    return p


def run(args) -> int:
    from PIL import Image, UnidentifiedImageError

    from .export import bop_category_ids, bop_records, overlay, result_record

    try:
        cfg = pipeline_config(args.config, device=args.device or None, seed=args.seed,
                              refine_enabled=False if args.no_refine else None)
        objects = load_objects(args.objects)
        segmenter = cli_segmenter(args, cfg)
    except (CliError, ValueError, FileNotFoundError) as exc:
        print(f"ocdit segment: error: {exc}", file=sys.stderr)
        return 2

    out = Path(args.out)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    category_ids = bop_category_ids(o.id for o in objects)
    records, bop, failed = [], [], []
    for index, name in enumerate(_progress(args.images)):
        path = Path(name)
        try:
            with Image.open(path) as im:
                image = np.asarray(im.convert("RGB"))
        except (FileNotFoundError, UnidentifiedImageError, OSError) as exc:
            print(f"ocdit segment: skipping {path}: cannot read image ({exc})", file=sys.stderr)
            failed.append(str(path))
            continue
        result = segmenter.segment(image, objects)
        stem = path.stem
        Image.fromarray(overlay(image, result.instances)).save(out / f"{stem}_overlay.png")
        for inst in result.instances:
            Image.fromarray(inst.mask.astype(np.uint8) * 255).save(
                out / "masks" / f"{stem}_{inst.instance_id:03d}_{inst.object_id}.png")
        records.append(result_record(str(path), result))
        bop += bop_records(result, 0, index, category_ids)
    payload = bop if args.format == "bop" else {"images": records, "failed": failed,
                                                 "config": cfg.to_dict(), "category_ids": category_ids}
    (out / "results.json").write_text(json.dumps(payload, indent=1))
    print(f"segmented {len(records)} image(s), {sum(len(r['instances']) for r in records)} instance(s); "
          f"results in {out / 'results.json'}")
    return 1 if failed else 0


def _progress(items):
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is optional: plain progress lines instead
        for i, item in enumerate(items):
            print(f"[{i + 1}/{len(items)}] {item}", file=sys.stderr)
            yield item
        return
    yield from tqdm(items, desc="segment", unit="img", file=sys.stderr, disable=len(items) < 2)
