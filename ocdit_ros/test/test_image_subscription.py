"""The image subscription follows its publishers: reliable ones get reliable delivery, best-effort
ones started after the subscriber still match (real rclpy and DDS in one process)."""

import threading
import time

import pytest

rclpy = pytest.importorskip("rclpy", reason="ROS 2 is set up by `make test`")
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from ros_processes import wait_for  # noqa: E402  (30 s, polling every 20 ms)

from ocdit_ros.ros.image_subscription import ImageSubscription, image_qos, resolve_reliability  # noqa: E402
from ocdit_ros.ros.process import run_executor  # noqa: E402

RELIABLE, BEST_EFFORT = ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT


def test_best_available_rule():
    assert resolve_reliability([]) == RELIABLE  # what rmw picks before any publisher exists
    assert resolve_reliability([RELIABLE, RELIABLE]) == RELIABLE
    assert resolve_reliability([RELIABLE, BEST_EFFORT]) == BEST_EFFORT
    qos = image_qos()
    assert (qos.reliability, qos.depth) == (ReliabilityPolicy.BEST_AVAILABLE, 1)


class Pair:
    """A subscriber node with ImageSubscription on `image` and a peer node that publishes."""

    def __init__(self, overrides=()):
        self.ctx = rclpy.context.Context()
        rclpy.init(context=self.ctx)
        self.node = rclpy.create_node("img_sub", context=self.ctx, parameter_overrides=list(overrides))
        self.peer = rclpy.create_node("img_pub", context=self.ctx)
        self.got = []
        self.sub = ImageSubscription(self.node, Image, "image", lambda m: self.got.append(m.header.stamp.sec))
        self.executor = rclpy.executors.MultiThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.executor.add_node(self.peer)
        self.thread = threading.Thread(target=run_executor, args=(self.executor,), daemon=True)
        self.thread.start()

    def publish_until_received(self, pub, stamp):
        msg = Image(height=4, width=4, encoding="mono8", step=4, data=bytes(16))
        msg.header.stamp.sec = stamp

        def sent_and_got():
            pub.publish(msg)
            return stamp in self.got

        wait_for(sent_and_got, f"frame {stamp}")

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        self.peer.destroy_node()
        rclpy.shutdown(context=self.ctx)


@pytest.fixture
def pair():
    p = Pair()
    yield p
    p.close()


def test_follows_best_effort_then_reliable_publishers(pair):
    assert pair.sub.adaptive and pair.sub.resolved == RELIABLE  # no publisher yet
    # A best-effort camera that starts after the node: incompatible with the first subscription.
    be = pair.peer.create_publisher(Image, "image", qos_profile_sensor_data)
    pair.publish_until_received(be, 1)
    assert pair.sub.resolved == BEST_EFFORT and pair.sub.resubscriptions >= 1
    # The camera is replaced by a reliable one: back to reliable delivery.
    pair.peer.destroy_publisher(be)
    rel = pair.peer.create_publisher(Image, "image", QoSProfile(depth=10))
    wait_for(lambda: pair.sub.resolved == RELIABLE, "the reliable resubscription")
    pair.publish_until_received(rel, 2)
    assert pair.sub.topic_name == "/image"


def test_explicit_override_is_kept():
    p = Pair([Parameter("qos_overrides./image.subscription.reliability", value="reliable")])
    try:
        assert not p.sub.adaptive and p.sub.resolved == RELIABLE
        assert p.sub.sub.qos_profile.reliability == RELIABLE
        be = p.peer.create_publisher(Image, "image", qos_profile_sensor_data)
        time.sleep(2.0)  # several recheck periods: an adaptive subscription would have switched
        assert p.sub.resubscriptions == 0 and be.get_subscription_count() == 0
    finally:
        p.close()
