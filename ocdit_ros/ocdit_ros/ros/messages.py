"""The one way to turn a SegmentationResult into messages, for rclpy (the node) and for rosbags
(`ocdit bag`, no ROS needed). Both flavours take the same keyword constructors; only the message
classes and the form of a uint8[] field differ, so `MessageTypes` carries those and the builders
below are shared. Nothing here imports rclpy at import time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..pipeline.export import label_image


@dataclass(frozen=True)
class MessageTypes:
    Image: type
    RegionOfInterest: type
    Instance: type
    InstanceArray: type
    uint8_field: Callable[[np.ndarray], Any]  # a contiguous array's bytes as this flavour's uint8[] value


def rclpy_types() -> MessageTypes:
    from sensor_msgs.msg import Image, RegionOfInterest

    from ocdit_msgs.msg import Instance, InstanceArray

    return MessageTypes(Image, RegionOfInterest, Instance, InstanceArray, lambda a: a.tobytes())


def rosbags_types(store) -> MessageTypes:
    """From a rosbags typestore with ocdit_msgs registered (`ocdit_ros.bag.typestore()`)."""
    T = store.types
    return MessageTypes(T["sensor_msgs/msg/Image"], T["sensor_msgs/msg/RegionOfInterest"], T["ocdit_msgs/msg/Instance"],
                        T["ocdit_msgs/msg/InstanceArray"], lambda a: a.reshape(-1).view(np.uint8))


def image(types: MessageTypes, header, array: np.ndarray, encoding: str):
    arr = np.ascontiguousarray(array)
    return types.Image(header=header, height=int(arr.shape[0]), width=int(arr.shape[1]), encoding=encoding,
                       is_bigendian=0, step=int(arr.strides[0]), data=types.uint8_field(arr))


def instance_array(types: MessageTypes, header, result):
    """ocdit_msgs/InstanceArray: the input header on the array and on every instance and mask."""
    instances = []
    for inst in result.instances:
        x0, y0, x1, y1 = inst.bbox
        roi = types.RegionOfInterest(x_offset=int(x0), y_offset=int(y0), height=int(y1 - y0), width=int(x1 - x0),
                                     do_rectify=False)
        instances.append(types.Instance(
            header=header, object_id=inst.object_id, instance_id=int(inst.instance_id), score=float(inst.score),
            bbox=roi, mask=image(types, header, inst.mask.astype(np.uint8) * 255, "mono8"),
            mask_agreement=float(inst.agreement)))
    t = result.timings_ms
    return types.InstanceArray(
        header=header, stage=result.stage, instances=instances, latency_features_ms=float(t.get("features", 0.0)),
        latency_coarse_ms=float(t.get("coarse_total", 0.0)), latency_refine_ms=float(t.get("refine_total", 0.0)),
        latency_total_ms=float(t.get("total", 0.0)))


def label_image_msg(types: MessageTypes, header, result, encoding: str = "mono16"):
    """Instance ids per pixel: mono16/16UC1 with 0 = background, or 16SC1 with -1 = background."""
    labels = label_image(result.instances, tuple(result.image_size))
    if encoding == "16SC1":
        labels = np.where(labels == 0, -1, labels.astype(np.int32)).astype(np.int16)
    return image(types, header, labels, encoding)


def detection_array(array_type, header, result):
    """vision_msgs/Detection2DArray (`array_type`, from a ROS install that has vision_msgs): one
    detection per instance, its box centre and size in pixels, the object id as class_id."""
    from vision_msgs.msg import BoundingBox2D, Detection2D, ObjectHypothesisWithPose

    out = array_type()
    out.header = header
    for inst in result.instances:
        x0, y0, x1, y1 = inst.bbox
        det = Detection2D()
        det.header = header
        det.id = str(inst.instance_id)
        hyp = ObjectHypothesisWithPose()
        hyp.hypothesis.class_id = inst.object_id
        hyp.hypothesis.score = float(inst.score)
        det.results.append(hyp)
        det.bbox = BoundingBox2D()
        det.bbox.center.position.x, det.bbox.center.position.y = (x0 + x1) / 2.0, (y0 + y1) / 2.0
        det.bbox.size_x, det.bbox.size_y = float(x1 - x0), float(y1 - y0)
        out.detections.append(det)
    return out


def diagnostic_array(array_type, stamp, name: str, hardware_id: str, ok: bool, message: str, values: dict):
    """diagnostic_msgs/DiagnosticArray (`array_type`, when the ROS install has diagnostic_msgs) with one
    status: OK or WARN, the message, and every value as a string key-value pair."""
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

    status = DiagnosticStatus(name=name, hardware_id=hardware_id, message=message,
                              level=DiagnosticStatus.OK if ok else DiagnosticStatus.WARN)
    status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
    arr = array_type(status=[status])
    arr.header.stamp = stamp
    return arr


def topic_token(object_id: str) -> str:
    """A ROS-name-safe token for an object id (letters, digits, underscores; no leading digit)."""
    token = "".join(c if c.isalnum() or c == "_" else "_" for c in object_id)
    return token if token and not token[0].isdigit() else f"obj_{token}"
