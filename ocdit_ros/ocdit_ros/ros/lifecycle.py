"""Managed (lifecycle) segmentation node: `segment_lifecycle_node`, same parameters as `segment_node`.

    segment_lifecycle_node --ros-args -p templates_dir:=templates/
    ros2 lifecycle set /ocdit configure   # load weights and templates (a failure: back to unconfigured)
    ros2 lifecycle set /ocdit activate    # subscribe and publish
    ros2 lifecycle set /ocdit deactivate  # stop both
    ros2 lifecycle set /ocdit cleanup     # free the model
    ros2 lifecycle set /ocdit shutdown    # the process exits

The work is `node.SegmentCore`, shared with the plain node; this module only maps transitions
onto its steps. Publishers are lifecycle publishers (they exist from configure on and publish
only while active).
"""

from __future__ import annotations

from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.task import Future

from ..pipeline.build import SetupError
from .node import SegmentCore
from .process import spin, start


class SegmentLifecycleNode(SegmentCore, LifecycleNode):
    def __init__(self, node_name: str = "ocdit", **kwargs):
        super().__init__(node_name, **kwargs)  # SegmentCore turns rclpy's parameter errors into ours
        try:
            self._setup_parameters()  # a bad parameter value is a start-up error, as for the plain node
        except BaseException:
            self.destroy_node()
            raise
        self.finished = Future()  # done after the shutdown transition: the process exits
        self.get_logger().info("unconfigured; configure and activate with the lifecycle services "
                               f"(ros2 lifecycle set {self.get_fully_qualified_name()} configure)")

    def _make_publisher(self, msg_type, topic, qos):
        pub = self.create_lifecycle_publisher(msg_type, topic, qos)
        self._entities.append(pub)
        if self._running:  # made while active (a new object's mask topic): publishes at once
            pub.on_activate(None)
        return pub

    def _destroy_publisher(self, pub) -> None:
        self.destroy_lifecycle_publisher(pub)

    # -- transitions -----------------------------------------------------------------------------
    def on_configure(self, state) -> TransitionCallbackReturn:
        try:
            self._configure()
        except Exception as exc:  # noqa: BLE001 - any failure returns to unconfigured, with the reason
            reason = exc.render(f"parameter '{exc.setting}'") if isinstance(exc, SetupError) else \
                f"{type(exc).__name__}: {exc}"
            self.get_logger().error(f"configure failed: {reason}; the node stays unconfigured")
            self._cleanup()
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"configured: {len(self.objects)} objects, device {self.config.device}")
        return super().on_configure(state)

    def on_activate(self, state) -> TransitionCallbackReturn:
        ret = super().on_activate(state)  # enables the lifecycle publishers
        self._activate()
        return ret

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._deactivate()
        self.get_logger().info("deactivated: not listening, not publishing")
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._cleanup()
        self.get_logger().info("cleaned up: model and objects freed")
        return super().on_cleanup(state)

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._stop_all()
        self.finished.set_result(True)
        return super().on_shutdown(state)

    def on_error(self, state) -> TransitionCallbackReturn:
        self.get_logger().error("a transition failed: back to unconfigured")
        self._stop_all()
        return TransitionCallbackReturn.SUCCESS

    def _stop_all(self) -> None:
        if self._running:
            self._deactivate()
        if self.segmenter is not None or self._entities:
            self._cleanup()

    def destroy_node(self):
        if getattr(self, "_running", False):
            self._deactivate()
        return super().destroy_node()


def main(args=None) -> int:
    node, status = start(SegmentLifecycleNode, args)
    if node is None:
        return status
    spin(node, until=node.finished)
    return 0
