"""ocdit_msgs: generated types and a real in-process DDS round trip (loopback only)."""

import sys
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy", reason="ROS 2 is set up by `make test`")
from ocdit_msgs.msg import Instance, InstanceArray  # noqa: E402
from sensor_msgs.msg import Image, RegionOfInterest  # noqa: E402


def test_fields_and_constants():
    assert InstanceArray.STAGE_COARSE == "coarse" and InstanceArray.STAGE_REFINED == "refined"
    fields = Instance.get_fields_and_field_types()
    assert fields == {
        "header": "std_msgs/Header", "object_id": "string", "instance_id": "int32", "score": "float",
        "bbox": "sensor_msgs/RegionOfInterest", "mask": "sensor_msgs/Image", "mask_agreement": "float",
    }
    arr = InstanceArray.get_fields_and_field_types()
    assert arr["instances"] == "sequence<ocdit_msgs/Instance>"
    assert {"latency_features_ms", "latency_coarse_ms", "latency_refine_ms", "latency_total_ms"} <= set(arr)


def test_interface_files_installed_in_the_venv():
    share = Path(sys.prefix) / "share" / "ocdit_msgs"
    assert (share / "msg" / "Instance.msg").is_file() and (share / "msg" / "InstanceArray.msg").is_file()
    assert (Path(sys.prefix) / "share" / "ament_index" / "resource_index" / "packages" / "ocdit_msgs").is_file()


def _message():
    msg = InstanceArray()
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1234, 567
    msg.header.frame_id = "camera_color_optical_frame"
    msg.stage = InstanceArray.STAGE_REFINED
    for i, (name, box) in enumerate([("mug", (1, 2, 3, 4)), ("drill", (0, 0, 5, 3))]):
        inst = Instance()
        inst.header = msg.header
        inst.object_id, inst.instance_id, inst.score = name, i + 1, 0.5 + 0.1 * i
        inst.bbox = RegionOfInterest(x_offset=box[0], y_offset=box[1], width=box[2], height=box[3])
        inst.mask = Image(height=3, width=4, encoding="mono8", step=4, data=bytes([0, 255] * 6))
        msg.instances.append(inst)
    msg.latency_total_ms = 42.5
    return msg


def test_instance_array_round_trip_over_dds():
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    try:
        pub_node = rclpy.create_node("ocdit_test_pub", context=ctx)
        sub_node = rclpy.create_node("ocdit_test_sub", context=ctx)
        received = []
        sub_node.create_subscription(InstanceArray, "ocdit_test/instances", received.append, 10)
        pub = pub_node.create_publisher(InstanceArray, "ocdit_test/instances", 10)
        ex = rclpy.executors.SingleThreadedExecutor(context=ctx)
        ex.add_node(pub_node)
        ex.add_node(sub_node)
        deadline = time.monotonic() + 30
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            ex.spin_once(timeout_sec=0.1)
        assert pub.get_subscription_count() == 1, "subscriber never matched"
        sent = _message()
        while not received and time.monotonic() < deadline:
            pub.publish(sent)
            ex.spin_once(timeout_sec=0.2)
        assert received, "no message received within 30 s"
        got = received[0]
        assert got.header.stamp.sec == 1234 and got.header.stamp.nanosec == 567
        assert got.header.frame_id == "camera_color_optical_frame" and got.stage == "refined"
        assert [i.object_id for i in got.instances] == ["mug", "drill"]
        assert [i.instance_id for i in got.instances] == [1, 2]
        assert got.instances[1].bbox.width == 5 and got.instances[0].bbox.y_offset == 2
        assert bytes(got.instances[0].mask.data) == bytes([0, 255] * 6)
        assert got.latency_total_ms == pytest.approx(42.5)
        ex.shutdown()
        pub_node.destroy_node()
        sub_node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
