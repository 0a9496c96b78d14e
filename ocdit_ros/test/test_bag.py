"""`ocdit bag`: rosbag2 in (mcap and sqlite3) -> results bag out, with the input stamps."""

import json

import numpy as np
import pytest
import torch
import trimesh

pytest.importorskip("rosbags")
from rosbags.rosbag2 import Reader, StoragePlugin, Writer  # noqa: E402
from rosbags.typesys import Stores, get_typestore  # noqa: E402

from ocdit_ros.bag import typestore  # noqa: E402
from ocdit_ros.cli import main  # noqa: E402
from ocdit_ros.model import OCDiT, save_weights, tiny  # noqa: E402
from ocdit_ros.templates import RenderSettings, render_or_load  # noqa: E402


def make_input_bag(path, storage, frames=3):
    store = get_typestore(Stores.ROS2_KILTED)
    T = store.types
    stamps = []
    with Writer(path, version=9, storage_plugin=storage) as w:
        conn = w.add_connection("/cam/image_raw", "sensor_msgs/msg/Image", typestore=store)
        for k in range(frames):
            img = np.random.default_rng(k).integers(0, 255, (40, 56, 3), dtype=np.uint8)
            header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=100 + k, nanosec=7),
                                              frame_id="cam")
            msg = T["sensor_msgs/msg/Image"](header=header, height=40, width=56, encoding="rgb8", is_bigendian=0,
                                             step=56 * 3, data=img.reshape(-1))
            t = (100 + k) * 10**9 + 7
            w.write(conn, t, store.serialize_cdr(msg, conn.msgtype))
            stamps.append(t)
    return stamps


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("bag_assets")
    trimesh.creation.box(extents=(0.1, 0.06, 0.04)).export(d / "box.ply")
    render_or_load(d / "box.ply", d / "tpl", RenderSettings(views=12, template_size=42, render_size=96))
    torch.manual_seed(0)
    save_weights(OCDiT.from_config(tiny()), d / "tiny.safetensors")
    (d / "cfg.yaml").write_text("coarse: {ensemble: 1}\nrefine: {ensemble: 1, augmentations: 1}\n"
                                "proposal_threshold: 0.0\nscore_threshold: 0.0\nmin_support: 0.0\n")
    return d


@pytest.mark.parametrize("storage", [StoragePlugin.MCAP, StoragePlugin.SQLITE3])
def test_bag_round_trip_keeps_stamps_and_writes_results(tmp_path, assets, storage):
    stamps = make_input_bag(tmp_path / "in", storage)
    rc = main(["bag", str(tmp_path / "in"), "--image-topic", "/cam/image_raw", "--out", str(tmp_path / "out"),
               "--objects", str(assets / "tpl"), "--weights", str(assets / "tiny.safetensors"),
               "--config", str(assets / "cfg.yaml"), "--bop-json", str(tmp_path / "bop.json"),
               "--storage", "mcap" if storage == StoragePlugin.MCAP else "sqlite3"])
    assert rc == 0
    store = typestore()
    with Reader(tmp_path / "out") as r:
        topics = {c.topic: c.msgtype for c in r.connections}
        assert topics == {"/ocdit/instances": "ocdit_msgs/msg/InstanceArray",
                          "/ocdit/label_image": "sensor_msgs/msg/Image"}
        got = {t: [] for t in topics}
        for conn, t, raw in r.messages():
            got[conn.topic].append((t, store.deserialize_cdr(raw, conn.msgtype)))
    for topic in topics:
        assert [t for t, _ in got[topic]] == stamps
        assert [(m.header.stamp.sec, m.header.stamp.nanosec, m.header.frame_id) for _, m in got[topic]] == \
            [(100 + k, 7, "cam") for k in range(3)]
    for (_, arr), (_, lab) in zip(got["/ocdit/instances"], got["/ocdit/label_image"]):
        labels = lab.data.view(np.uint16).reshape(lab.height, lab.width)
        assert set(np.unique(labels)) - {0} == {i.instance_id for i in arr.instances}
        for inst in arr.instances:
            assert (inst.mask.height, inst.mask.width, inst.mask.encoding) == (40, 56, "mono8")
    bop = json.loads((tmp_path / "bop.json").read_text())
    assert len(bop) == sum(len(a.instances) for _, a in got["/ocdit/instances"])


def test_bag_results_deserialise_with_rclpy(tmp_path, assets):
    rclpy_serialization = pytest.importorskip("rclpy.serialization")
    from ocdit_msgs.msg import InstanceArray

    make_input_bag(tmp_path / "in", StoragePlugin.MCAP, frames=1)
    assert main(["bag", str(tmp_path / "in"), "--image-topic", "/cam/image_raw", "--out", str(tmp_path / "out"),
                 "--objects", str(assets / "tpl"), "--weights", str(assets / "tiny.safetensors"),
                 "--config", str(assets / "cfg.yaml")]) == 0
    with Reader(tmp_path / "out") as r:
        conn = next(c for c in r.connections if c.topic == "/ocdit/instances")
        raw = next(raw for _, _, raw in r.messages(connections=[conn]))
    msg = rclpy_serialization.deserialize_message(bytes(raw), InstanceArray)
    assert msg.header.stamp.sec == 100 and msg.header.frame_id == "cam"


def test_bag_errors(tmp_path, assets, capsys):
    make_input_bag(tmp_path / "in", StoragePlugin.MCAP, frames=1)
    base = ["bag", str(tmp_path / "in"), "--objects", str(assets / "tpl"),
            "--weights", str(assets / "tiny.safetensors")]
    assert main(base + ["--image-topic", "/nope", "--out", str(tmp_path / "o1")]) == 2
    assert "not in the bag" in capsys.readouterr().err
    (tmp_path / "exists").mkdir()
    assert main(base + ["--image-topic", "/cam/image_raw", "--out", str(tmp_path / "exists")]) == 2
    assert "exists" in capsys.readouterr().err


def test_bag_and_segment_number_bop_categories_the_same_way(tmp_path, assets):
    """`ocdit bag --bop-json` and `ocdit segment --format bop` on the same frames give the same
    records, including category ids, with BOP-named and plain object ids mixed."""
    from PIL import Image

    tpl = tmp_path / "tpl"
    for oid in ("obj_000005", "mug", "box"):
        render_or_load(assets / "box.ply", tpl, RenderSettings(views=12, template_size=42, render_size=96),
                       object_id=oid)
    make_input_bag(tmp_path / "in", StoragePlugin.MCAP, frames=3)
    pngs = []
    for k in range(3):  # the frames make_input_bag wrote, as image files
        pngs.append(str(tmp_path / f"{k:06d}.png"))
        Image.fromarray(np.random.default_rng(k).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(pngs[-1])
    common = ["--objects", str(tpl), "--weights", str(assets / "tiny.safetensors"),
              "--config", str(assets / "cfg.yaml")]
    assert main(["bag", str(tmp_path / "in"), "--image-topic", "/cam/image_raw", "--out", str(tmp_path / "out"),
                 "--bop-json", str(tmp_path / "bag_bop.json"), *common]) == 0
    assert main(["segment", *pngs, "--out", str(tmp_path / "seg"), "--format", "bop", *common]) == 0
    strip = lambda recs: [{k: v for k, v in r.items() if k != "time"} for r in recs]  # noqa: E731
    from_bag = strip(json.loads((tmp_path / "bag_bop.json").read_text()))
    from_segment = strip(json.loads((tmp_path / "seg" / "results.json").read_text()))
    assert from_bag and from_bag == from_segment
    assert {r["category_id"] for r in from_bag} <= {5, 1, 2}


def test_bop_category_rule():
    from ocdit_ros.pipeline.export import bop_category_ids

    assert bop_category_ids(["mug", "box"]) == {"box": 1, "mug": 2}
    assert bop_category_ids(["obj_000005", "obj_000001", "mug", "box", "can"]) == \
        {"obj_000001": 1, "obj_000005": 5, "box": 2, "can": 3, "mug": 4}
    assert bop_category_ids(["obj_12a", "obj_000012"]) == {"obj_000012": 12, "obj_12a": 1}  # only exact BOP names


def test_rclpy_and_rosbags_messages_decode_identically():
    """One builder for both flavours: the same result gives the same message in both."""
    rclpy_serialization = pytest.importorskip("rclpy.serialization")
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    from ocdit_ros.pipeline.segmenter import Instance, SegmentationResult
    from ocdit_ros.ros import messages

    mask = np.zeros((6, 9), bool)
    mask[1:4, 2:7] = True
    inst = Instance("mug", 1, 0.75, mask, (2, 1, 7, 4), 0.5, np.zeros((6, 9), np.float32), "refined", 0.6)
    result = SegmentationResult([inst], (6, 9), "refined", {"features": 1.0, "coarse_total": 2.0, "total": 4.5})
    store = typestore()
    T = store.types
    bag_header = T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](sec=3, nanosec=4), frame_id="cam")
    ros_header = Header(stamp=Time(sec=3, nanosec=4), frame_id="cam")
    rb, rc = messages.rosbags_types(store), messages.rclpy_types()
    for build, msgtype in ((lambda t, h: messages.instance_array(t, h, result), "ocdit_msgs/msg/InstanceArray"),
                           (lambda t, h: messages.label_image_msg(t, h, result, "16SC1"), "sensor_msgs/msg/Image")):
        # CDR padding bytes may differ (rclpy leaves them uninitialised): compare decoded messages.
        from_rclpy = build(rc, ros_header)
        from_bag = bytes(store.serialize_cdr(build(rb, bag_header), msgtype))
        assert rclpy_serialization.deserialize_message(from_bag, type(from_rclpy)) == from_rclpy, msgtype
    arr = messages.instance_array(rc, ros_header, result)
    got = np.frombuffer(bytes(arr.instances[0].mask.data), np.uint8).reshape(6, 9)
    assert np.array_equal(got == 255, mask) and arr.instances[0].bbox.width == 5 and arr.latency_total_ms == 4.5
