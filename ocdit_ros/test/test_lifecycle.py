"""The managed node (`segment_lifecycle_node`) driven through the real lifecycle services
(lifecycle_msgs ChangeState/GetState) by an rclpy client, in-process and as a process."""

import gc
import subprocess
import sys
import threading
import time
import weakref

import numpy as np
import pytest
import ros_processes

rclpy = pytest.importorskip("rclpy", reason="ROS 2 is set up by `make test`")
import trimesh  # noqa: E402
from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from ocdit_msgs.msg import InstanceArray  # noqa: E402
from ocdit_msgs.srv import ListObjects  # noqa: E402
from ocdit_ros.ros.image_codec import fill_image  # noqa: E402
from ocdit_ros.ros.process import run_executor  # noqa: E402
from ocdit_ros.templates import RenderSettings, render_or_load  # noqa: E402

TIMEOUT = 60.0


@pytest.fixture(scope="module")
def templates_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("lc_tpl")
    trimesh.creation.box(extents=(0.1, 0.06, 0.04)).export(d / "box.ply")
    render_or_load(d / "box.ply", d, RenderSettings(views=6, template_size=42, render_size=64))
    return d


def wait_for(cond, what, timeout=TIMEOUT):
    return ros_processes.wait_for(cond, what, timeout)


class Client:
    """A peer node: lifecycle client, camera and result subscriber for the node at `ns`/ocdit."""

    def __init__(self, ctx, ns):
        self.ns = ns
        self.peer = rclpy.create_node("lc_test_peer", context=ctx)
        self.change = self.peer.create_client(ChangeState, f"{ns}/ocdit/change_state")
        self.get = self.peer.create_client(GetState, f"{ns}/ocdit/get_state")
        self.camera = self.peer.create_publisher(Image, f"{ns}/image", rclpy.qos.qos_profile_sensor_data)
        self.results = []
        self.peer.create_subscription(InstanceArray, f"{ns}/ocdit/instances", self.results.append, 10)
        self.list_objects = self.peer.create_client(ListObjects, f"{ns}/ocdit/list_objects")

    def call(self, client, request):
        assert client.wait_for_service(timeout_sec=TIMEOUT), client.srv_name
        fut = client.call_async(request)
        wait_for(fut.done, client.srv_name, timeout=120)
        return fut.result()

    def transition(self, transition_id) -> bool:
        return self.call(self.change, ChangeState.Request(transition=Transition(id=transition_id))).success

    def state(self) -> int:
        return self.call(self.get, GetState.Request()).current_state.id

    def send(self, stamp):
        msg = fill_image(Image(), np.random.default_rng(stamp).integers(0, 255, (48, 64, 3), dtype=np.uint8), "rgb8")
        msg.header.stamp.sec = stamp
        self.camera.publish(msg)

    def answered(self, stamp, timeout=TIMEOUT) -> bool:
        """Publish frame `stamp` until a result for it arrives (best-effort may lose one) or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(r.header.stamp.sec == stamp for r in self.results):
                return True
            self.send(stamp)
            time.sleep(0.3)
        return False


def test_every_transition_through_the_lifecycle_services(templates_dir):
    from ocdit_ros.ros.lifecycle import SegmentLifecycleNode

    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    node = SegmentLifecycleNode(context=ctx, namespace="/lc", parameter_overrides=[
        Parameter("model_config", value="tiny"), Parameter("templates_dir", value=str(templates_dir)),
        Parameter("coarse.ensemble", value=1), Parameter("refine.ensemble", value=1),
        Parameter("refine.augmentations", value=1)])
    c = Client(ctx, "/lc")
    executor = rclpy.executors.MultiThreadedExecutor(context=ctx)
    executor.add_node(node)
    executor.add_node(c.peer)
    spin = threading.Thread(target=run_executor, args=(executor,), daemon=True)
    spin.start()
    try:
        assert c.state() == State.PRIMARY_STATE_UNCONFIGURED and node.segmenter is None
        assert c.camera.get_subscription_count() == 0 and not c.list_objects.service_is_ready()

        assert c.transition(Transition.TRANSITION_CONFIGURE)  # loads weights and templates
        assert c.state() == State.PRIMARY_STATE_INACTIVE and node.segmenter is not None
        assert list(c.call(c.list_objects, ListObjects.Request()).object_ids) == ["box"]
        assert c.camera.get_subscription_count() == 0  # inactive: not listening yet

        assert c.transition(Transition.TRANSITION_ACTIVATE)
        assert c.state() == State.PRIMARY_STATE_ACTIVE
        wait_for(lambda: c.camera.get_subscription_count() > 0, "the image subscription")
        assert c.answered(1)

        assert c.transition(Transition.TRANSITION_DEACTIVATE)  # stops listening and publishing
        assert c.state() == State.PRIMARY_STATE_INACTIVE
        wait_for(lambda: c.camera.get_subscription_count() == 0, "the subscription to go")
        assert not c.answered(2, timeout=3.0)

        assert c.transition(Transition.TRANSITION_ACTIVATE)  # and back
        wait_for(lambda: c.camera.get_subscription_count() > 0, "the image subscription again")
        assert c.answered(3)
        assert c.transition(Transition.TRANSITION_DEACTIVATE)

        model = weakref.ref(node.segmenter.coarse.model)
        assert c.transition(Transition.TRANSITION_CLEANUP)  # frees the model
        assert c.state() == State.PRIMARY_STATE_UNCONFIGURED and node.segmenter is None
        gc.collect()
        assert model() is None, "the model is still referenced after cleanup"
        wait_for(lambda: not c.list_objects.service_is_ready(), "the object services to go")

        assert c.transition(Transition.TRANSITION_CONFIGURE) and c.transition(Transition.TRANSITION_ACTIVATE)
        wait_for(lambda: c.camera.get_subscription_count() > 0, "the image subscription after a new configure")
        assert c.answered(4)

        assert c.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert c.state() == State.PRIMARY_STATE_FINALIZED and node.finished.done() and node.segmenter is None
        assert c.camera.get_subscription_count() == 0
    finally:
        executor.shutdown()
        spin.join(timeout=TIMEOUT)
        node.destroy_node()
        c.peer.destroy_node()
        rclpy.shutdown(context=ctx)


def _process(*ros_args):
    return subprocess.Popen([sys.executable, "-m", "ocdit_ros.segment_lifecycle_node", "--ros-args", *ros_args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture
def client():
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    c = Client(ctx, "/lcp")
    executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
    executor.add_node(c.peer)
    spin = threading.Thread(target=run_executor, args=(executor,), daemon=True)
    spin.start()
    yield c
    executor.shutdown()
    spin.join(timeout=TIMEOUT)
    c.peer.destroy_node()
    rclpy.shutdown(context=ctx)


def test_process_configure_activate_shutdown_exits(templates_dir, client):
    proc = _process("-r", "__ns:=/lcp", "-p", "model_config:=tiny", "-p", f"templates_dir:={templates_dir}",
                    "-p", "coarse.ensemble:=1", "-p", "refine_enabled:=false")
    try:
        assert client.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert client.transition(Transition.TRANSITION_CONFIGURE)
        assert client.transition(Transition.TRANSITION_ACTIVATE)
        assert client.answered(7)
        assert client.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
        out, _ = proc.communicate(timeout=TIMEOUT)  # shutdown ends the process
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "Traceback" not in out, out


def test_process_failed_configure_stays_unconfigured_with_the_reason(templates_dir, client, tmp_path):
    proc = _process("-r", "__ns:=/lcp", "-p", f"weights:={tmp_path / 'missing.safetensors'}",
                    "-p", f"templates_dir:={templates_dir}")
    try:
        assert client.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert not client.transition(Transition.TRANSITION_CONFIGURE)
        assert client.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert client.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        out, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "Traceback" not in out, out
    line = next(x for x in out.splitlines() if "configure failed" in x)
    assert "parameter 'weights'" in line and "missing.safetensors does not exist" in line and "unconfigured" in line
