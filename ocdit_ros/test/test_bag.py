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
        assert topics == {"/ocdit/instances": "ocdit_msgs/msg/InstanceArray", "/ocdit/label_image": "sensor_msgs/msg/Image"}
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
    base = ["bag", str(tmp_path / "in"), "--objects", str(assets / "tpl"), "--weights", str(assets / "tiny.safetensors")]
    assert main(base + ["--image-topic", "/nope", "--out", str(tmp_path / "o1")]) == 2
    assert "not in the bag" in capsys.readouterr().err
    (tmp_path / "exists").mkdir()
    assert main(base + ["--image-topic", "/cam/image_raw", "--out", str(tmp_path / "exists")]) == 2
    assert "exists" in capsys.readouterr().err
