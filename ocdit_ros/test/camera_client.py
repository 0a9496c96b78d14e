"""A camera and a consumer in one process, for the camera-sized frame tests (run as a script).

    python camera_client.py reliable|best_effort NS WxH [WxH ...] --frames N --timeout S

Publishes N rgb8 frames of each size on NS/image, one at a time: the next frame goes out when
the node has answered the previous one on NS/ocdit/instances (matched by header stamp) or after
S seconds, so a lost frame counts as unanswered and is never sent again. Prints one JSON line:
{"WxH": [answered, sent], ...}. The DDS profile comes from the environment
(FASTDDS_DEFAULT_PROFILES_FILE), as it would for a camera driver.
"""

import argparse
import json
import time

import numpy as np
import rclpy
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image

from ocdit_msgs.msg import InstanceArray


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("reliability", choices=["reliable", "best_effort"])
    ap.add_argument("namespace")
    ap.add_argument("sizes", nargs="+")
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--timeout", type=float, default=20.0)
    args = ap.parse_args()
    rclpy.init()
    node = rclpy.create_node("camera_client", namespace=args.namespace)
    # A reliable camera: the ROS default QoS, as many drivers use; a best-effort one: sensor data.
    qos = QoSProfile(depth=10) if args.reliability == "reliable" else qos_profile_sensor_data
    pub = node.create_publisher(Image, "image", qos)
    answers = set()
    node.create_subscription(InstanceArray, "ocdit/instances",
                             lambda m: answers.add((m.header.stamp.sec, m.header.frame_id)), 10)

    def spin_until(cond, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end and not cond():
            rclpy.spin_once(node, timeout_sec=0.05)
        return cond()

    # Matched both ways before the first frame (the node's subscription follows a best-effort
    # publisher within a second; discovery between processes can take longer).
    if not spin_until(lambda: pub.get_subscription_count() > 0
                      and node.count_publishers(f"{args.namespace}/ocdit/instances") > 0, 60.0):
        print(json.dumps({"error": "the node's image subscription never matched"}))
        return 1
    spin_until(lambda: False, 1.0)
    rng = np.random.default_rng(0)
    result, stamp = {}, 0
    for size in args.sizes:
        w, h = map(int, size.split("x"))
        answered = 0
        for _ in range(args.frames):
            stamp += 1
            msg = Image(height=h, width=w, encoding="rgb8", step=w * 3,
                        data=rng.integers(0, 255, (h, w, 3), dtype=np.uint8).tobytes())
            msg.header.stamp.sec, msg.header.frame_id = stamp, size
            pub.publish(msg)
            answered += spin_until(lambda: (stamp, size) in answers, args.timeout)
        result[size] = [answered, args.frames]
    print(json.dumps(result))
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
