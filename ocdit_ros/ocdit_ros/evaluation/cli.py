"""`ocdit eval --dataset DIR (--results FILE.json | [--weights W]) --out REPORT.json`.

With --results it scores a BOP 2D-segmentation results file. Without, it first runs the pipeline
(the shipped default model unless --weights) over the split and scores both the refined output
(`ap`) and the coarse stage's (`ap_coarse`, same run, refinement skipped for it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..cli_common import add_model_options
from ..data.bop import BopFormatError, open_split
from ..naming import obj_name
from .coco import ResultsError, evaluate


class EvalError(Exception):
    """One-line user error, exit status 2."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="COCO/BOP segmentation AP on a BOP-format split",
                              description="Score a results file, or run the pipeline and score it.")
    p.add_argument("--dataset", required=True, help="BOP split folder, or dataset root (with --split)")
    p.add_argument("--split", help="split folder name under a dataset root (default: the only one, test, val)")
    p.add_argument("--out", required=True, help="report JSON (results JSON goes next to it)")
    p.add_argument("--results", help="BOP 2D segmentation results JSON to score (no model is run)")
    add_model_options(p)
    p.add_argument("--config", help="pipeline config YAML")
    p.add_argument("--templates", help="template cache folder (default: DATASET_ROOT/templates_cache)")
    p.add_argument("--template-renderer", choices=["pybullet", "raster"],
                   help="renderer for templates (default: the one the model's training templates used, "
                        "as its weights record; pybullet for the shipped model)")
    p.add_argument("--queries", choices=["all", "present"], default="all",
                   help="objects asked for per image: all the dataset's models (detection, the default) "
                        "or only those in the ground truth (BOP's localisation setting)")
    p.add_argument("--max-images", type=int, help="only the first N images (in scene, image order)")
    p.add_argument("--all-images", action="store_true",
                   help="ignore the dataset's test_targets_bop19.json (default: only its images, as BOP does)")
    p.add_argument("--ensemble", type=int, help="coarse ensemble size (override)")
    p.add_argument("--steps", type=int, help="sampling steps of both stages (override)")
    p.add_argument("--no-coarse-ap", action="store_true", help="skip the coarse-only score")
    p.add_argument("--visib-threshold", type=float, default=0.1,
                   help="instances less visible are not targets (BOP: 0.1); 0: every instance is one")
    p.add_argument("--device", help="cpu, cuda, ...")
    return p


def run(args) -> int:
    try:
        return _run(args)
    except (EvalError, BopFormatError, ResultsError, OSError, ValueError) as exc:  # user errors: one line
        print(f"ocdit eval: error: {exc}", file=sys.stderr)
        return 2


def _run(args) -> int:
    if args.max_images is not None and args.max_images < 1:
        raise EvalError(f"--max-images {args.max_images}: must be >= 1")
    if not 0.0 <= args.visib_threshold <= 1.0:
        raise EvalError(f"--visib-threshold {args.visib_threshold}: must be in [0, 1]")
    split = open_split(args.dataset, args.split, targets=None if args.all_images else "auto")
    images = split.images[: args.max_images] if args.max_images else split.images
    if not images:
        raise EvalError(f"{split.path}: no images" + (f" listed in {split.targets_path}" if split.targets_path else ""))
    report: dict = {"dataset": str(split.path), "num_images": len(images), "visib_threshold": args.visib_threshold,
                    "faint_instances": "iscrowd (neither targets nor false positives)",
                    "targets_file": str(split.targets_path) if split.targets_path else None}
    if args.results:
        path = Path(args.results)
        if not path.is_file():
            raise EvalError(f"--results {path}: no such file")
        try:
            records = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise EvalError(f"--results {path}: not JSON ({exc})") from None
        try:
            scores = evaluate(split, records, args.visib_threshold, images=images)
        except ResultsError as exc:
            raise EvalError(f"--results {path}: {exc}") from None
        report.update(scores.to_dict(), results=str(path), num_records=len(records))
        times = [r.get("time", -1) for r in records]
        if times and all(isinstance(t, (int, float)) and t >= 0 for t in times):  # BOP: -1 = not measured
            report["timing"] = _timing(records)
    else:
        records, coarse_records, timing, cfg = _run_pipeline(args, split, images)
        out = Path(args.out)
        results_path = out.with_name(out.stem + "_results.json")
        results_path.parent.mkdir(parents=True, exist_ok=True)
        results_path.write_text(json.dumps(records))
        scores = evaluate(split, records, args.visib_threshold, images=images)
        report.update(scores.to_dict(), results=str(results_path), timing=timing, pipeline_config=cfg)
        if coarse_records is not None:
            coarse = evaluate(split, coarse_records, args.visib_threshold, images=images)
            report.update(ap_coarse=coarse.ap, ap50_coarse=coarse.ap50, ap75_coarse=coarse.ap75)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(format_table(report))
    return 0


def _timing(records: list[dict]) -> dict:
    """BOP `time` is per image (repeated on each of its entries): count it once per image."""
    per_image = {(r["scene_id"], r["image_id"]): float(r["time"]) for r in records}
    total = sum(per_image.values())
    return {"mean_seconds_per_image": total / max(len(per_image), 1), "total_seconds": total}


def _run_pipeline(args, split, images):
    import torch

    from ..pipeline.build import ModelFiles, SetupError
    from ..cli_common import CliError, cli_segmenter, option_name, pipeline_config
    from ..pipeline.export import bop_category_ids, bop_records
    from ..templates.archive import render_or_load

    if split.models_dir is None:
        raise EvalError(f"{split.root}: no models/ folder with models_info.json; templates come from the models")
    cfg = pipeline_config(args.config, device=args.device or None, **{
        "coarse.ensemble": args.ensemble, "coarse.num_steps": args.steps, "refine.num_steps": args.steps})
    try:  # the same model loading and messages as `ocdit segment`; the files resolved once
        files = ModelFiles.resolve(args.weights, args.refine_weights, args.model_config)
        segmenter = cli_segmenter(args, cfg, files)
    except SetupError as exc:
        raise EvalError(exc.render(option_name(exc.setting))) from None
    except CliError as exc:
        raise EvalError(str(exc)) from None

    # Templates rendered as the model's training templates were (its weights' record).
    try:
        settings = segmenter.template_settings()
    except ValueError as exc:
        raise EvalError(str(exc)) from None
    try:
        settings, note = settings.resolve_renderer(args.template_renderer)
    except ValueError as exc:  # only a renderer asked for by name is refused
        raise EvalError(f"--template-renderer: {exc}") from None
    if note:
        print(f"ocdit eval: warning: {note}", file=sys.stderr)
    cache = Path(args.templates) if args.templates else split.root / "templates_cache"
    wanted = sorted({i.obj_id for im in images for i in im.instances}) if args.queries == "present" \
        else split.object_ids()
    templates = {}
    for oid in _progress(wanted, "templates"):
        name = obj_name(oid)  # BOP models are in millimetres
        templates[oid], _ = render_or_load(split.model_path(oid), cache, settings, object_id=name, units="mm")
    records, coarse_records, seconds = [], [] if not args.no_coarse_ap else None, []
    category = bop_category_ids(obj_name(oid) for oid in templates)
    for im in _progress(images, "eval"):
        queried = sorted({i.obj_id for i in im.instances}) if args.queries == "present" else list(templates)
        if not queried:
            continue
        t0 = time.perf_counter()
        with torch.no_grad():
            result = segmenter.segment(im.load_rgb(), [templates[o] for o in queried],
                                       keep_coarse=not args.no_coarse_ap)
        dt = time.perf_counter() - t0
        seconds.append(dt)
        for rec in bop_records(result, im.scene_id, im.image_id, category):
            rec["time"] = dt
            records.append(rec)
        if coarse_records is not None:
            coarse_result = type(result)(result.coarse_instances or [], result.image_size, "coarse")
            for rec in bop_records(coarse_result, im.scene_id, im.image_id, category):
                rec["time"] = dt
                coarse_records.append(rec)
    timing = {"mean_seconds_per_image": sum(seconds) / max(len(seconds), 1), "total_seconds": sum(seconds),
              "device": str(cfg.device), "threads": torch.get_num_threads()}
    meta = {"weights": str(files.weights),
            "refine_weights": str(files.refine_weights) if files.refine_weights else None,
            "config_file": args.config, "queries": args.queries, "template_settings": settings.to_dict(),
            **cfg.to_dict()}
    return records, coarse_records, timing, meta


def format_table(report: dict) -> str:
    """The report as a plain-text table: AP rows per stage, then one row per object, then timing."""
    lines = [f"{report['dataset']}: {report['num_images']} images, {report['num_gt']} targets "
             f"({report['num_ignored_gt']} ignored, visib < {report['visib_threshold']}), "
             f"{report['num_predictions']} predictions",
             f"{'':14}{'AP':>8}{'AP50':>8}{'AP75':>8}",
             f"{'refined' if 'ap_coarse' in report else 'all':14}{report['ap']:8.3f}{report['ap50']:8.3f}"
             f"{report['ap75']:8.3f}"]
    if "ap_coarse" in report:
        lines.append(f"{'coarse':14}{report['ap_coarse']:8.3f}{report['ap50_coarse']:8.3f}"
                     f"{report['ap75_coarse']:8.3f}")
    for oid, ap in sorted(report.get("per_object", {}).items(), key=lambda kv: int(kv[0])):
        lines.append(f"{obj_name(oid):14}{ap:8.3f}")
    if not report.get("has_targets", True):
        lines.append("no targets in these images: AP is reported as 0")
    if report.get("timing"):
        t = report["timing"]
        lines.append(f"time: {t['mean_seconds_per_image']:.3f} s per image, {t.get('total_seconds', 0.0):.1f} s total")
    return "\n".join(lines)


def _progress(items, desc):
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc=desc, file=sys.stderr, disable=len(items) < 2)
