"""The camera subscription: every frame from a reliable camera, still compatible with best-effort ones.

A best-effort subscription loses most camera-sized frames over Fast DDS (a 640x480 rgb8 frame is
larger than the default shared-memory segment), even from a reliable publisher. Reliability
BEST_AVAILABLE asks for reliable delivery when every publisher offers it, and best effort
otherwise. But rmw resolves it once, when the subscription is created, against the publishers it
knows then: with none yet (the usual case, the node starts before the camera) it becomes
reliable, and a best-effort camera that comes later never matches. So while the configured
reliability is BEST_AVAILABLE, the same rule is applied again to the current publishers when an
incompatible publisher appears (the subscription's incompatible-QoS event) and every
RECHECK_PERIOD_S (a reliable camera replacing a best-effort one is compatible, but would stay on
lossy best effort), and the subscription is created again when the answer changes.

The QoS stays overridable through the qos_overrides.<topic>.subscription.* parameters; with an
explicit reliable or best_effort there, the subscription is plain and is never recreated.
"""

from __future__ import annotations

import threading

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions

RECHECK_PERIOD_S = 0.5


def image_qos() -> QoSProfile:
    """Newest frame only (the node drops stale frames anyway); reliability follows the publishers."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_AVAILABLE,
                      durability=DurabilityPolicy.VOLATILE)


def resolve_reliability(publisher_reliabilities) -> ReliabilityPolicy:
    """What rmw makes of BEST_AVAILABLE: reliable if every publisher is (also if there are none)."""
    rel = list(publisher_reliabilities)
    return ReliabilityPolicy.RELIABLE if all(r == ReliabilityPolicy.RELIABLE for r in rel) \
        else ReliabilityPolicy.BEST_EFFORT


class ImageSubscription:
    """A subscription to `topic` with image_qos(), recreated when BEST_AVAILABLE would resolve
    differently for the publishers now on the topic. `resolved` is the reliability in force."""

    def __init__(self, node, msg_type, topic: str, callback):
        self.node, self.msg_type, self.topic, self.callback = node, msg_type, topic, callback
        self.resubscriptions = 0
        self.sub = None
        self.adaptive = False  # until the first subscription shows the QoS after qos_overrides
        self._lock = threading.Lock()  # the timer and the event may fire on two executor threads
        self._subscribe()
        # Known only after creation: the QoS with the user's qos_overrides applied.
        self.adaptive = self.sub.qos_profile.reliability == ReliabilityPolicy.BEST_AVAILABLE
        self._timer = None
        if self.adaptive:
            self._timer = node.create_timer(RECHECK_PERIOD_S, self._recheck,
                                            callback_group=MutuallyExclusiveCallbackGroup())

    @property
    def topic_name(self) -> str:
        return self.sub.topic_name

    def _publisher_reliabilities(self, topic_name: str):
        return [info.qos_profile.reliability for info in self.node.get_publishers_info_by_topic(topic_name)]

    def _subscribe(self) -> None:
        # Read the publishers before creating, so a publisher that appears in between makes the
        # next check differ and resubscribe, never the other way round.
        name = self.node.resolve_topic_name(self.topic)
        self.resolved = resolve_reliability(self._publisher_reliabilities(name))
        # Our own incompatible-QoS handler replaces rclpy's default warning ("no messages will be
        # received from it"), which would be wrong here: the recheck resubscribes.
        events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible, use_default_callbacks=False)
        self.sub = self.node.create_subscription(
            self.msg_type, self.topic, self.callback, image_qos(), event_callbacks=events,
            qos_overriding_options=QoSOverridingOptions.with_default_policies())
        if self.sub.qos_profile.reliability != ReliabilityPolicy.BEST_AVAILABLE:
            self.resolved = self.sub.qos_profile.reliability

    def _on_incompatible(self, event) -> None:
        if self.adaptive:
            self._recheck()
        else:  # the reliability was set explicitly: only say why nothing arrives
            policy = event.last_policy_kind.name.lower().removeprefix("rmw_qos_policy_")
            self.node.get_logger().warning(f"a publisher on {self.sub.topic_name} offers incompatible QoS "
                                           f"({policy}); no messages will be received from it")

    def _recheck(self) -> None:
        with self._lock:
            if self.sub is None or not self.adaptive:  # destroyed, or reliability set explicitly
                return
            wanted = resolve_reliability(self._publisher_reliabilities(self.sub.topic_name))
            if wanted == self.resolved:
                return
            old = self.sub
            self._subscribe()
            self.node.destroy_subscription(old)
            self.resubscriptions += 1
        self.node.get_logger().info(
            f"publishers on {self.sub.topic_name} changed: now subscribed {self.resolved.name.lower()}")

    def destroy(self) -> None:
        with self._lock:
            if self._timer is not None:
                self.node.destroy_timer(self._timer)
                self._timer = None
            if self.sub is not None:
                self.node.destroy_subscription(self.sub)
                self.sub = None
