"""`ocdit bag IN --image-topic T --out OUT`: segment every frame of a rosbag2, offline.

Pure Python (rosbags): no ROS installation needed. Reads mcap or sqlite3 bags, writes the node's
result topics (/ocdit/instances, /ocdit/label_image, /ocdit/detections is left out as it needs
vision_msgs) into a new bag with the input timestamps and headers, and optionally a BOP-format
results JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .cli_common import add_model_options


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("bag", help="segment the images of a rosbag2 offline",
                              description="Segment every image of a rosbag2 (mcap or sqlite3) into a new bag.")
    p.add_argument("input", help="input rosbag2 folder")
    p.add_argument("--image-topic", required=True, help="sensor_msgs/Image or CompressedImage topic")
    p.add_argument("--out", required=True, help="output rosbag2 folder (must not exist)")
    p.add_argument("--objects", required=True, help="folder of template archives")
    add_model_options(p)
    p.add_argument("--config", help="pipeline config YAML")
    p.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap", help="output storage format")
    p.add_argument("--bop-json", help="also write BOP 2D-segmentation results here")
    p.add_argument("--max-frames", type=int, default=0, help="stop after this many frames (0 = all)")
    return p


def msg_definitions_dir() -> Path:
    """Where ocdit_msgs' .msg files are: an installed share/ (ROS or our venv) or the source tree."""
    candidates = [Path(p) / "share" / "ocdit_msgs" / "msg"
                  for p in os.environ.get("AMENT_PREFIX_PATH", "").split(":") if p]
    candidates += [Path(sys.prefix) / "share" / "ocdit_msgs" / "msg",
                   Path(__file__).resolve().parents[2] / "ocdit_msgs" / "msg"]
    for c in candidates:
        if (c / "InstanceArray.msg").is_file():
            return c
    raise FileNotFoundError("ocdit_msgs message definitions not found (looked in "
                            + ", ".join(map(str, candidates)) + ")")


def typestore():
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    folder = msg_definitions_dir()
    types = {}
    for name in ("Instance", "InstanceArray"):
        types.update(get_types_from_msg((folder / f"{name}.msg").read_text(), f"ocdit_msgs/msg/{name}"))
    store.register(types)
    return store


def run(args) -> int:
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer

    from .cli_common import CliError, cli_segmenter, load_objects, pipeline_config
    from .pipeline.export import bop_category_ids, bop_records
    from .ros import messages
    from .ros.image_codec import ImageError, compressed_to_rgb, image_to_rgb

    try:
        cfg = pipeline_config(args.config)
        objects = load_objects(args.objects)
        segmenter = cli_segmenter(args, cfg)
        if Path(args.out).exists():
            raise CliError(f"--out {args.out} exists; choose a new folder")
        if not Path(args.input).exists():
            raise CliError(f"input bag {args.input} does not exist")
        store = typestore()
    except (CliError, ValueError, FileNotFoundError) as exc:
        print(f"ocdit bag: error: {exc}", file=sys.stderr)
        return 2

    types = messages.rosbags_types(store)
    category_ids = bop_category_ids(o.id for o in objects)
    bop, frames, bad = [], 0, 0
    storage = StoragePlugin.MCAP if args.storage == "mcap" else StoragePlugin.SQLITE3
    with Reader(args.input) as reader, Writer(args.out, version=9, storage_plugin=storage) as writer:
        conns = [c for c in reader.connections if c.topic == args.image_topic]
        if not conns:
            topics = sorted({c.topic for c in reader.connections})
            print(f"ocdit bag: error: topic {args.image_topic} not in the bag; it has {topics}", file=sys.stderr)
            return 2
        msgtype = conns[0].msgtype
        if msgtype not in ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"):
            print(f"ocdit bag: error: {args.image_topic} is {msgtype}, not an image", file=sys.stderr)
            return 2
        decode = image_to_rgb if msgtype.endswith("/Image") else compressed_to_rgb
        out_inst = writer.add_connection("/ocdit/instances", "ocdit_msgs/msg/InstanceArray", typestore=store)
        out_lab = writer.add_connection("/ocdit/label_image", "sensor_msgs/msg/Image", typestore=store)
        for conn, timestamp, raw in reader.messages(connections=conns):
            if args.max_frames and frames >= args.max_frames:
                break
            msg = store.deserialize_cdr(raw, conn.msgtype)
            try:
                image = decode(msg)
            except ImageError as exc:
                print(f"ocdit bag: skipping a frame at {timestamp} ns: {exc}", file=sys.stderr)
                bad += 1
                continue
            result = segmenter.segment(image, objects)
            writer.write(out_inst, timestamp,
                         store.serialize_cdr(messages.instance_array(types, msg.header, result), out_inst.msgtype))
            writer.write(out_lab, timestamp,
                         store.serialize_cdr(messages.label_image_msg(types, msg.header, result), out_lab.msgtype))
            bop += bop_records(result, 0, frames, category_ids)
            frames += 1
            print(f"[{frames}] {timestamp} ns: {len(result.instances)} instances, {result.timings_ms['total']:.0f} ms",
                  file=sys.stderr)
    if args.bop_json:
        Path(args.bop_json).write_text(json.dumps(bop))
    print(f"segmented {frames} frame(s) ({bad} unreadable) into {args.out}")
    return 1 if bad else 0

