"""`ocdit data objects --out DIR`, `ocdit data procedural --library DIR --count N`,
`ocdit data scenes --split S --num-scenes N --seed S --out DIR` and
`ocdit data pack --data DIR/train ... --templates DIR --out PACK.tar.gz`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .objects import DEFAULT_FURNITURE_DIR, default_library_dir


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("data", help="build the object library and synthetic BOP scenes",
                              description="Synthetic BOP-format training and evaluation data.")
    sub = p.add_subparsers(dest="data_command", metavar="{objects,procedural,scenes,pack}", required=True)
    o = sub.add_parser("objects", help="build the object library (BOP models/ + split) from Sweet Home 3D")
    o.add_argument("--out", required=True, help="library folder (models/, objects.json, ATTRIBUTION.md)")
    o.add_argument("--furniture", default=str(DEFAULT_FURNITURE_DIR),
                   help="folder with the .sh3f catalogues (Debian package sweethome3d-furniture)")
    o.add_argument("--limit", type=int, help="only the first N objects (quick tries)")
    g = sub.add_parser("procedural", help="add procedural train objects (random shapes and textures) to a library")
    g.add_argument("--library", required=True, help="library folder from 'ocdit data objects' (created if missing)")
    g.add_argument("--count", type=int, required=True, help="how many (replaces earlier procedural objects)")
    g.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("scenes", help="generate a split of physics-settled synthetic scenes in BOP format")
    s.add_argument("--split", required=True, choices=["train", "val", "test"],
                   help="which objects to drop (from objects.json); the output goes to OUT/<split>/")
    s.add_argument("--num-scenes", type=int, required=True)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--out", required=True, help="BOP dataset root (gets models/ and <split>/)")
    s.add_argument("--objects", help="object library from 'ocdit data objects', or any BOP models/ folder "
                                     "(then every model is used for every split); default: $OCDIT_CACHE/objects or "
                                     "~/.cache/ocdit/objects")
    s.add_argument("--views", type=int, default=4, help="camera views per scene")
    s.add_argument("--width", type=int, default=320)
    s.add_argument("--height", type=int, default=240)
    s.add_argument("--min-objects", type=int, default=4)
    s.add_argument("--max-objects", type=int, default=9)
    s.add_argument("--workers", type=int, default=1, help="parallel processes")
    k = sub.add_parser("pack", help="pack training scenes and their objects' templates into one tar.gz "
                                    "for another machine (tools/gpu_train.sh)")
    k.add_argument("--data", nargs="+", required=True, help="BOP split folders, e.g. DATA/train")
    k.add_argument("--templates", required=True, help="template archives (only the scenes' objects are packed)")
    k.add_argument("--out", required=True, help="the pack, e.g. build/gpu_data.tar.gz")
    return p


def run(args) -> int:
    try:
        if args.data_command == "objects":
            return _objects(args)
        if args.data_command == "procedural":
            return _procedural(args)
        if args.data_command == "pack":
            return _pack(args)
        return _scenes(args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"ocdit data {args.data_command}: error: {exc}", file=sys.stderr)
        return 2


def _objects(args) -> int:
    from .objects import build_library

    payload = build_library(args.out, args.furniture, limit=args.limit, progress=_progress("objects"))
    counts: dict[str, int] = {}
    for o in payload["objects"].values():
        counts[o["split"]] = counts.get(o["split"], 0) + 1
    print(f"{len(payload['objects'])} objects in {Path(args.out) / 'models'} "
          f"({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}); {len(payload['skipped'])} skipped")
    return 0


def _procedural(args) -> int:
    from .procedural import FIRST_ID, add_procedural

    payload = add_procedural(args.library, args.count, args.seed, progress=_progress("procedural"))
    kinds: dict[str, int] = {}
    for k, o in payload["objects"].items():
        if int(k) >= FIRST_ID:
            kinds[o["category"]] = kinds.get(o["category"], 0) + 1
    print(f"{args.count} procedural train objects (ids {FIRST_ID}..{FIRST_ID + args.count - 1}) in "
          f"{Path(args.library) / 'models'}: {', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}")
    return 0


def _scenes(args) -> int:
    from .scenes import SceneConfig, generate_split

    objects = Path(args.objects) if args.objects else default_library_dir()
    if not objects.exists():
        raise FileNotFoundError(f"object library {objects} does not exist; build it with "
                                f"'ocdit data objects --out {objects}' or pass --objects DIR")
    if args.num_scenes < 1:
        raise ValueError("--num-scenes must be >= 1")
    cfg = SceneConfig(width=args.width, height=args.height, views=args.views,
                      objects=(args.min_objects, args.max_objects))
    summary = generate_split(objects, args.out, args.split, args.num_scenes, args.seed, cfg,
                             workers=max(1, args.workers), progress=_progress("scenes"))
    print(json.dumps({k: summary[k] for k in ("split", "scenes_total", "scenes_generated", "wall_seconds",
                                              "seconds_per_scene")}))
    return 0


def _pack(args) -> int:
    from .pack import pack_training_data

    summary = pack_training_data(args.data, args.templates, args.out)
    print(json.dumps({**summary, "mib": round(summary["bytes"] / 2**20, 2)}))
    return 0


def _progress(desc: str):
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return lambda it, total=None: tqdm(it, total=total, desc=desc, file=sys.stderr)
