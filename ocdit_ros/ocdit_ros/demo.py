"""`make demo`: a fresh synthetic scene of unseen test objects, segmented by the ROS node.

1. builds (once) the object library from Debian's sweethome3d-furniture,
2. drops a few *test-split* objects (never seen in training) with physics and renders a view,
3. renders their templates,
4. starts the real `ocdit` node in-process (rclpy on loopback), publishes the image on
   /image and prints the InstanceArray it publishes on /ocdit/instances,
5. writes the input, an overlay and the ground-truth overlay as PNGs, and prints IoU per object.

Without `--weights` it uses the shipped default model: a small model trained only on our
synthetic scenes (ocdit_ros/weights/MODEL_CARD.md). Without rclpy (a pip-only install) it runs
the same pipeline directly and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .data.objects import default_library_dir
from .naming import obj_name

CACHE = default_library_dir().parent  # $OCDIT_CACHE or ~/.cache/ocdit: library and templates
SHOW_ALL = {"min_support": 0.0, "proposal_threshold": 0.0, "score_threshold": 0.0}


def prepare_scene(out: Path, seed: int, objects: int, width: int, height: int) -> tuple[Path, dict]:
    """Library (cached) + one test-split scene; returns the scene folder and the object names."""
    from .data.objects import build_library
    from .data.scenes import SceneConfig, generate_split

    library = default_library_dir()
    if not (library / "objects.json").is_file():
        print(f"building the object library in {library} (once, about 15 s) ...", flush=True)
        build_library(library)
    cfg = SceneConfig(width=width, height=height, views=1, objects=(objects, objects), distractors=(1, 2),
                      camera_distance=(0.5, 0.65), elevation_deg=(45.0, 70.0))
    dataset = out / "scene"
    # A finished scene would be kept and an earlier run's templates queried too: start clean
    # (the converted-mesh cache in dataset/.cache stays).
    for stale in (dataset / "test", dataset / "templates"):
        shutil.rmtree(stale, ignore_errors=True)
    generate_split(library, dataset, "test", 1, seed=seed, cfg=cfg)
    names = {int(k): v["name"] for k, v in json.loads((library / "objects.json").read_text())["objects"].items()}
    return dataset / "test" / "000000", names


def prepare_templates(scene: Path, settings, extra_absent: int, seed: int) -> tuple[Path, list[int]]:
    """Templates of the scene's objects plus `extra_absent` test objects that are not in it, rendered
    with `settings` (the model's: `Segmenter.template_settings()`)."""
    from .templates import render_or_load

    library = default_library_dir()
    gt = json.loads((scene / "scene_gt.json").read_text())["0"]
    present = sorted({g["obj_id"] for g in gt})
    test_ids = sorted(int(k) for k, v in json.loads((library / "objects.json").read_text())["objects"].items()
                      if v["split"] == "test")
    rng = np.random.default_rng(seed)
    absent = [int(o) for o in rng.permutation([o for o in test_ids if o not in present])[:extra_absent]]
    folder = scene.parent.parent / "templates"
    cache = CACHE / f"templates_{settings.renderer}_{settings.template_size}"
    for oid in present + absent:
        name = obj_name(oid)
        tpl, _ = render_or_load(library / "models" / f"{name}.ply", cache, settings, object_id=name, units="mm")
        folder.mkdir(parents=True, exist_ok=True)
        for ext in (".npz", ".json"):
            target = folder / f"{name}{ext}"
            if not target.exists():
                target.write_bytes((cache / f"{name}{ext}").read_bytes())
    return folder, present + absent


def run_node(image: np.ndarray, templates: Path, weights: str | None, extra: dict | None = None,
             timeout: float = 300.0):
    """Publish `image` to a live `ocdit` node and return the InstanceArray it answers with."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")  # never leave this machine
    import rclpy
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image

    from ocdit_msgs.msg import InstanceArray

    from .ros.image_codec import fill_image
    from .ros.node import SegmentNode
    from .ros.process import run_executor

    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    params = {"templates_dir": str(templates), **(extra or {})}
    if weights:
        params["weights"] = weights
    node = SegmentNode(context=ctx, parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
    peer = rclpy.create_node("ocdit_demo", context=ctx)
    results: list = []
    peer.create_subscription(InstanceArray, "/ocdit/instances", results.append, 10)
    camera = peer.create_publisher(Image, "/image", 1)  # reliable, as many camera drivers publish
    executor = rclpy.executors.MultiThreadedExecutor(context=ctx)
    executor.add_node(node)
    executor.add_node(peer)
    spin = threading.Thread(target=run_executor, args=(executor,), daemon=True)
    spin.start()
    try:
        deadline = time.monotonic() + 30
        while camera.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        msg = fill_image(Image(), image, "rgb8")
        msg.header.frame_id = "camera_optical"
        camera.publish(msg)
        deadline = time.monotonic() + timeout
        while not results and time.monotonic() < deadline:
            time.sleep(0.05)
        if not results:
            raise RuntimeError("the node published no result in time")
        return results[-1]
    finally:
        executor.shutdown()
        spin.join(timeout=10)
        node.destroy_node()
        peer.destroy_node()
        rclpy.shutdown(context=ctx)


def scene_ap(dataset: Path, instances: list[tuple[str, float, np.ndarray]], split_name: str = "test"):
    """COCO segmentation AP of (object id, score, mask) on the demo's one-image BOP split."""
    from .data.bop import open_split
    from .evaluation.coco import evaluate
    from .pipeline.export import bop_category_ids, rle_encode

    split = open_split(dataset, split_name, targets=None)
    im = split.images[0]
    category = bop_category_ids(oid for oid, _, _ in instances)
    records = [{"scene_id": im.scene_id, "image_id": im.image_id, "category_id": category[oid],
                "score": float(score), "segmentation": rle_encode(mask)} for oid, score, mask in instances]
    return evaluate(split, records)


def _mask_from_msg(m) -> np.ndarray:
    return np.frombuffer(bytes(m.data), np.uint8).reshape(m.height, m.step)[:, :m.width] > 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="demo_out", help="output folder")
    ap.add_argument("--weights", help="coarse model weights (default: the shipped model)")
    ap.add_argument("--seed", type=int, help="scene seed (default: a new one each run, printed)")
    ap.add_argument("--objects", type=int, default=3, help="test objects dropped into the scene")
    ap.add_argument("--absent", type=int, default=2, help="extra test objects queried that are NOT in the scene")
    ap.add_argument("--no-ros", action="store_true", help="run the pipeline directly instead of the node")
    ap.add_argument("--show-all", action="store_true",
                    help="thresholds to 0 (min_support, proposal_threshold, score_threshold): show every proposal")
    args = ap.parse_args(argv)

    from PIL import Image as PILImage

    from .pipeline.export import overlay

    seed = args.seed if args.seed is not None else int(time.time()) % 100000
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        from .pipeline.build import build_segmenter

        # The node builds its own (the same builder); this one gives the template settings (and --no-ros).
        segmenter = build_segmenter(weights=args.weights)
        scene, names = prepare_scene(out, seed, args.objects, 320, 240)
        templates, queried = prepare_templates(scene, segmenter.template_settings(), args.absent, seed)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    image = np.asarray(PILImage.open(scene / "rgb" / "000000.jpg").convert("RGB"))
    gt = json.loads((scene / "scene_gt.json").read_text())["0"]
    info = json.loads((scene / "scene_gt_info.json").read_text())["0"]
    print(f"scene seed {seed}: {len(gt)} test-split objects (unseen in training): "
          + ", ".join(f"{obj_name(g['obj_id'])} {names[g['obj_id']]!r}" for g in gt))
    print(f"queried objects: {', '.join(obj_name(o) for o in queried)} ({args.absent} of them absent)")

    t0 = time.perf_counter()
    instances = []
    use_ros = not args.no_ros
    if use_ros:
        try:
            import rclpy  # noqa: F401
        except ImportError:
            print("rclpy is not importable here: running the pipeline directly (make demo has ROS)")
            use_ros = False
    if use_ros:
        result = run_node(image, templates, args.weights, SHOW_ALL if args.show_all else None)
        print(f"/ocdit/instances: stage {result.stage!r}, {len(result.instances)} instance(s), "
              f"node latency {result.latency_total_ms:.0f} ms")
        for inst in result.instances:
            instances.append((inst.object_id, float(inst.score), _mask_from_msg(inst.mask)))
    else:
        from .pipeline import PipelineConfig
        from .templates import load_template_dir

        cfg = PipelineConfig().replace(**SHOW_ALL) if args.show_all else PipelineConfig()
        res = segmenter.segment(image, load_template_dir(templates), config=cfg)
        instances = [(i.object_id, i.score, i.mask) for i in res.instances]
    elapsed = time.perf_counter() - t0

    from types import SimpleNamespace

    from .pipeline.segmenter import mask_bbox

    shown = [SimpleNamespace(mask=m, bbox=mask_bbox(m)) for _, _, m in instances]
    PILImage.fromarray(image).save(out / "input.png")
    PILImage.fromarray(overlay(image, shown)).save(out / "overlay.png")
    gt_masks = [np.asarray(PILImage.open(scene / "mask_visib" / f"000000_{k:06d}.png")) > 0 for k in range(len(gt))]
    gt_shown = [SimpleNamespace(mask=m, bbox=mask_bbox(m)) for m in gt_masks if m.any()]
    PILImage.fromarray(overlay(image, gt_shown)).save(out / "ground_truth.png")
    for oid, score, mask in instances:
        ious = [(m & mask).sum() / max((m | mask).sum(), 1) for g, m in zip(gt, gt_masks)
                if obj_name(g['obj_id']) == oid]
        truth = f"best IoU with its ground truth {max(ious):.2f}" if ious else "FALSE POSITIVE (not in the scene)"
        print(f"  {oid} score {score:.2f} area {int(mask.sum())} px: {truth}")
    # What the line says: a visible target no prediction of its object overlaps with IoU > 0.5.
    missed = [obj_name(g['obj_id']) for g, m, i in zip(gt, gt_masks, info)
              if i["visib_fract"] >= 0.1
              and not any(o == obj_name(g['obj_id']) and (m & k).sum() > 0.5 * (m | k).sum() for o, _, k in instances)]
    if missed:
        print(f"  missed (IoU <= 0.5 or not found): {', '.join(missed)}")
    scores = scene_ap(scene.parent.parent, instances)
    print(f"scene AP {scores.ap:.3f}, AP50 {scores.ap50:.3f} ({scores.num_gt} targets, {scores.num_predictions} "
          f"predictions; COCO segmentation AP as `ocdit eval` computes it)")
    print(f"{elapsed:.1f} s; wrote {out / 'overlay.png'}, {out / 'ground_truth.png'}, {out / 'input.png'}")
    print("NOTE: the default model is a small CPU-trained model on synthetic scenes; real objects and "
          "cameras need DINOv2 features and real training data (ocdit_ros/weights/MODEL_CARD.md).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
