"""ocdit_msgs: the generated types, their installed files, and a real in-process DDS round trip.

conftest.py keeps DDS discovery on this machine (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST) and
picks a ROS_DOMAIN_ID before rclpy starts.
"""

import sys
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy", reason="ROS 2 is set up by `make test`")
from rclpy.executors import SingleThreadedExecutor  # noqa: E402

from ocdit_msgs.msg import Instance, InstanceArray  # noqa: E402
from sensor_msgs.msg import Image, RegionOfInterest  # noqa: E402

TIMEOUT_S = 30.0  # discovery is usually instant in process; be generous on a loaded CI machine


def test_instance_fields():
    assert Instance.get_fields_and_field_types() == {
        "header": "std_msgs/Header",
        "object_id": "string",
        "instance_id": "int32",
        "score": "float",
        "bbox": "sensor_msgs/RegionOfInterest",
        "mask": "sensor_msgs/Image",
        "mask_agreement": "float",
    }


def test_instance_array_fields_and_constants():
    assert InstanceArray.get_fields_and_field_types() == {
        "header": "std_msgs/Header",
        "stage": "string",
        "instances": "sequence<ocdit_msgs/Instance>",
        "latency_features_ms": "float",
        "latency_coarse_ms": "float",
        "latency_refine_ms": "float",
        "latency_total_ms": "float",
    }
    assert InstanceArray.STAGE_COARSE == "coarse"
    assert InstanceArray.STAGE_REFINED == "refined"


def test_interface_files_installed_in_the_venv():
    prefix = Path(sys.prefix)
    share = prefix / "share" / "ocdit_msgs"
    for name in ("Instance", "InstanceArray"):
        assert (share / "msg" / f"{name}.msg").is_file(), name
        assert (share / "msg" / f"{name}.idl").is_file(), name
    assert (share / "package.xml").is_file()
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "ocdit_msgs").is_file()
    assert list((prefix / "lib").glob("libocdit_msgs__rosidl_typesupport_c.so"))


MASK_BYTES = bytes([0, 0, 255, 255,
                    0, 255, 255, 0,
                    0, 0, 0, 0])  # 3 x 4 mono8


def _message() -> InstanceArray:
    msg = InstanceArray()
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1234, 567
    msg.header.frame_id = "camera_color_optical_frame"
    msg.stage = InstanceArray.STAGE_REFINED
    for i, (name, box) in enumerate([("mug", (1, 0, 2, 2)), ("drill", (0, 1, 4, 2))]):
        inst = Instance()
        inst.header = msg.header
        inst.object_id, inst.instance_id = name, i + 1
        inst.score, inst.mask_agreement = 0.5 + 0.25 * i, 0.75
        inst.bbox = RegionOfInterest(x_offset=box[0], y_offset=box[1], width=box[2], height=box[3])
        data = MASK_BYTES if i == 0 else bytes(255 - b for b in MASK_BYTES)
        inst.mask = Image(header=msg.header, height=3, width=4, encoding="mono8", step=4, data=data)
        msg.instances.append(inst)
    msg.latency_features_ms, msg.latency_coarse_ms = 10.5, 20.25
    msg.latency_refine_ms, msg.latency_total_ms = 11.75, 42.5
    return msg


def test_instance_array_round_trip_over_dds():
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    executor, nodes = None, []
    try:
        pub_node = rclpy.create_node("ocdit_test_pub", context=ctx)
        sub_node = rclpy.create_node("ocdit_test_sub", context=ctx)
        nodes += [pub_node, sub_node]
        received = []
        sub_node.create_subscription(InstanceArray, "ocdit_test/instances", received.append, 10)
        pub = pub_node.create_publisher(InstanceArray, "ocdit_test/instances", 10)
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(pub_node)
        executor.add_node(sub_node)

        deadline = time.monotonic() + TIMEOUT_S
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        assert pub.get_subscription_count() == 1, f"subscriber not matched within {TIMEOUT_S} s"

        sent = _message()
        deadline = time.monotonic() + TIMEOUT_S
        while not received and time.monotonic() < deadline:
            pub.publish(sent)  # repeated until one arrives: the first may race the reader's setup
            executor.spin_once(timeout_sec=0.2)
        assert received, f"no message received within {TIMEOUT_S} s"

        got = received[0]
        assert (got.header.stamp.sec, got.header.stamp.nanosec) == (1234, 567)
        assert got.header.frame_id == "camera_color_optical_frame"
        assert got.stage == InstanceArray.STAGE_REFINED
        assert len(got.instances) == 2
        for g, s in zip(got.instances, sent.instances):
            assert (g.object_id, g.instance_id) == (s.object_id, s.instance_id)
            assert g.score == pytest.approx(s.score) and g.mask_agreement == pytest.approx(0.75)
            assert (g.header.stamp.sec, g.header.frame_id) == (1234, "camera_color_optical_frame")
            assert (g.bbox.x_offset, g.bbox.y_offset, g.bbox.width, g.bbox.height) == (
                s.bbox.x_offset, s.bbox.y_offset, s.bbox.width, s.bbox.height)
            assert (g.mask.height, g.mask.width, g.mask.step, g.mask.encoding) == (3, 4, 4, "mono8")
            assert bytes(g.mask.data) == bytes(s.mask.data)
        assert bytes(got.instances[0].mask.data) == MASK_BYTES
        assert (got.latency_features_ms, got.latency_coarse_ms, got.latency_refine_ms,
                got.latency_total_ms) == pytest.approx((10.5, 20.25, 11.75, 42.5))
    finally:
        if executor is not None:
            executor.shutdown()
        for node in nodes:
            node.destroy_node()
        rclpy.shutdown(context=ctx)


def test_object_services_have_the_documented_fields():
    from ocdit_msgs.srv import AddObject, ListObjects, RemoveObject, SetActiveObjects

    assert set(AddObject.Request.get_fields_and_field_types()) == {"object_id", "mesh_path", "mesh_units",
                                                                  "templates_path"}
    assert set(AddObject.Response.get_fields_and_field_types()) == {"success", "message", "object_id", "cache_hit",
                                                                   "num_templates"}
    assert ListObjects.Response.get_fields_and_field_types()["active"] == "sequence<boolean>"
    assert SetActiveObjects.Request.get_fields_and_field_types() == {"object_ids": "sequence<string>"}
    assert set(RemoveObject.Response.get_fields_and_field_types()) == {"success", "message"}
