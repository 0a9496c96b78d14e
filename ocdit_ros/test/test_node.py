"""The segmentation node with real rclpy and DDS on loopback (no ROS mocks).

The node, a peer node (camera + consumer) and a parameter client share one context and a
multi-threaded executor spinning in the background, as in a real process.
"""

import json
import threading
import time

import numpy as np
import pytest
import ros_processes

rclpy = pytest.importorskip("rclpy", reason="ROS 2 is set up by `make test`")
import trimesh  # noqa: E402
from rcl_interfaces.srv import DescribeParameters, SetParameters  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import CompressedImage  # noqa: E402
from vision_msgs.msg import Detection2DArray  # noqa: E402

from ocdit_msgs.msg import InstanceArray  # noqa: E402
from ocdit_ros.ros.image_codec import fill_image  # noqa: E402
from ocdit_ros.ros.node import SegmentNode  # noqa: E402
from ocdit_ros.ros.process import run_executor  # noqa: E402
from ocdit_ros.templates import RenderSettings, render_or_load  # noqa: E402

TIMEOUT = 30.0


@pytest.fixture(scope="module")
def templates_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tpl")
    for name, colour in (("mug", [200, 40, 40, 255]), ("box", [40, 40, 200, 255])):
        mesh = trimesh.creation.box(extents=(0.1, 0.06, 0.04))
        mesh.visual.face_colors = np.tile(colour, (len(mesh.faces), 1))
        mesh.export(d / f"{name}.ply")
        render_or_load(d / f"{name}.ply", d, RenderSettings(views=12, template_size=42, render_size=96))
    return d


class Harness:
    def __init__(self, templates_dir, namespace="/", **overrides):
        self.ctx = rclpy.context.Context()
        rclpy.init(context=self.ctx)
        params = {"model_config": "tiny", "templates_dir": str(templates_dir), "coarse.ensemble": 1,
                  "refine.ensemble": 1, "refine.augmentations": 1, "score_threshold": 0.0,
                  "proposal_threshold": 0.0, "min_support": 0.0, **overrides}
        self.node = SegmentNode(context=self.ctx, namespace=namespace,
                                parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        ns = namespace.rstrip("/")
        self.peer = rclpy.create_node("ocdit_test_peer", context=self.ctx, namespace=namespace)
        self.results, self.labels, self.detections, self.diagnostics = [], [], [], []
        self.extra = {}
        self.peer.create_subscription(InstanceArray, f"{ns}/ocdit/instances", self.results.append, 50)
        self.peer.create_subscription(Image, f"{ns}/ocdit/label_image", self.labels.append, 50)
        self.peer.create_subscription(Detection2DArray, f"{ns}/ocdit/detections", self.detections.append, 50)
        self.peer.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 50)
        kind = CompressedImage if overrides.get("image_transport") == "compressed" else Image
        self.camera = self.peer.create_publisher(kind, f"{ns}/image", rclpy.qos.qos_profile_sensor_data)
        self.set_client = self.peer.create_client(SetParameters, f"{ns}/ocdit/set_parameters")
        self.describe_client = self.peer.create_client(DescribeParameters, f"{ns}/ocdit/describe_parameters")
        self.executor = rclpy.executors.MultiThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.executor.add_node(self.peer)
        self.thread = threading.Thread(target=run_executor, args=(self.executor,), daemon=True)
        self.thread.start()
        wait_for(lambda: self.camera.get_subscription_count() > 0, "the node's image subscription")
        assert self.set_client.wait_for_service(timeout_sec=TIMEOUT)

    def image(self, stamp_sec, h=60, w=80, seed=0, encoding="rgb8"):
        arr = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
        msg = fill_image(Image(), arr if encoding == "rgb8" else arr[..., ::-1], encoding)
        msg.header.frame_id = "camera_optical"
        msg.header.stamp.sec = stamp_sec
        return msg

    def send_and_wait(self, msg):
        n = len(self.results)
        self.camera.publish(msg)
        wait_for(lambda: len(self.results) > n, f"a result for stamp {msg.header.stamp.sec}")
        return self.results[-1]

    def set_params(self, **values):
        req = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg() for k, v in values.items()])
        fut = self.set_client.call_async(req)
        wait_for(fut.done, "set_parameters")
        return fut.result().results

    def close(self):
        self.executor.shutdown()
        self.thread.join(timeout=TIMEOUT)  # the spin loop has left before the nodes go away
        self.node.destroy_node()
        self.peer.destroy_node()
        rclpy.shutdown(context=self.ctx)


def wait_for(cond, what, timeout=TIMEOUT):
    return ros_processes.wait_for(cond, what, timeout)


@pytest.fixture(scope="module")
def harness(templates_dir):
    h = Harness(templates_dir)
    yield h
    h.close()


def test_results_carry_the_input_header_and_consistent_masks(harness):
    out = harness.send_and_wait(harness.image(11, seed=1, encoding="bgr8"))
    assert out.header.stamp.sec == 11 and out.header.frame_id == "camera_optical"
    assert out.stage in (InstanceArray.STAGE_COARSE, InstanceArray.STAGE_REFINED)
    assert out.latency_total_ms > 0
    wait_for(lambda: any(lab.header.stamp.sec == 11 for lab in harness.labels), "the label image")
    lab = next(lab for lab in harness.labels if lab.header.stamp.sec == 11)
    labels = np.frombuffer(bytes(lab.data), np.uint16).reshape(lab.height, lab.width)
    assert (lab.encoding, lab.width, lab.height) == ("mono16", 80, 60)
    assert set(np.unique(labels)) - {0} == {i.instance_id for i in out.instances}
    for inst in out.instances:
        assert inst.header.stamp.sec == 11 and inst.object_id in ("mug", "box")
        assert (inst.mask.encoding, inst.mask.width, inst.mask.height) == ("mono8", 80, 60)
        mask = np.frombuffer(bytes(inst.mask.data), np.uint8).reshape(60, 80)
        assert set(np.unique(mask)) <= {0, 255}
        assert np.array_equal(mask == 255, labels == inst.instance_id)
        ys, xs = np.nonzero(mask)
        assert (inst.bbox.x_offset, inst.bbox.y_offset) == (xs.min(), ys.min())
        assert (inst.bbox.width, inst.bbox.height) == (xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)


def test_detections_and_diagnostics(harness):
    out = harness.send_and_wait(harness.image(15, seed=4))
    wait_for(lambda: any(d.header.stamp.sec == 15 for d in harness.detections), "Detection2DArray")
    det = next(d for d in harness.detections if d.header.stamp.sec == 15)
    assert det.header.frame_id == "camera_optical" and len(det.detections) == len(out.instances)
    for d, inst in zip(det.detections, out.instances):
        assert d.id == str(inst.instance_id) and d.results[0].hypothesis.class_id == inst.object_id
        assert d.results[0].hypothesis.score == pytest.approx(inst.score, rel=1e-6)
        assert d.bbox.size_x == inst.bbox.width and d.bbox.center.position.x == inst.bbox.x_offset + inst.bbox.width / 2
    # The 1 Hz status may have gone out while the first frame was still being processed: wait for
    # one sent after it (the node keeps publishing), not just the latest one received so far.
    def statuses():
        return [{kv.key: kv.value for kv in s.values} for a in harness.diagnostics for s in a.status
                if s.name.startswith("ocdit:")]

    wait_for(lambda: any(int(v["frames_processed"]) >= 1 for v in statuses()), "/diagnostics after a frame")
    values = next(v for v in reversed(statuses()) if int(v["frames_processed"]) >= 1)
    assert "frames_dropped" in values and "latency_total_ms" in values
    assert float(values["process_max_rss_mb"]) > 0


def test_compressed_input_coarse_first_object_masks_and_uncertainty(templates_dir):
    import io

    from PIL import Image as PILImage

    from sensor_msgs.msg import CameraInfo

    h = Harness(templates_dir, namespace="/extra", image_transport="compressed", publish_coarse_first=True,
                publish_object_masks=True, publish_uncertainty=True, use_camera_info=True)
    info_pub = h.peer.create_publisher(CameraInfo, "/extra/camera_info", rclpy.qos.qos_profile_sensor_data)
    wait_for(lambda: info_pub.get_subscription_count() > 0, "the camera_info subscription")
    deadline = time.monotonic() + TIMEOUT
    while h.node.camera_info is None:  # a calibration for another resolution than the images
        assert time.monotonic() < deadline
        info_pub.publish(CameraInfo(width=640, height=480))
        time.sleep(0.1)
    masks, unc = {"mug": [], "box": []}, []
    for oid in masks:
        h.peer.create_subscription(Image, f"/extra/ocdit/object_masks/{oid}", masks[oid].append, 10)
    h.peer.create_subscription(Image, "/extra/ocdit/uncertainty", unc.append, 10)
    try:
        buf = io.BytesIO()
        PILImage.fromarray(np.random.default_rng(3).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(buf, "PNG")
        msg = CompressedImage(format="png", data=buf.getvalue())
        msg.header.stamp.sec, msg.header.frame_id = 7, "cam"
        deadline = time.monotonic() + TIMEOUT
        while len([r for r in h.results if r.header.stamp.sec == 7]) < 2:
            assert time.monotonic() < deadline, "no coarse + refined pair"
            if not h.results:
                h.camera.publish(msg)
            time.sleep(0.3)
        first, second = [r for r in h.results if r.header.stamp.sec == 7][:2]
        assert (first.stage, second.stage) == ("coarse", "refined")
        wait_for(lambda: all(masks.values()) and unc, "object masks and uncertainty")
        for oid, got in masks.items():
            m = got[0]
            assert (m.encoding, m.width, m.height, m.header.stamp.sec) == ("mono8", 64, 48, 7)
        assert (unc[0].encoding, unc[0].width, unc[0].height) == ("32FC1", 64, 48)
        assert h.node.camera_info_mismatch >= 1  # 64x48 images vs a 640x480 calibration
    finally:
        h.close()


def test_parameters_change_the_next_frame_and_bad_values_are_rejected(harness):
    res = harness.set_params(score_threshold=1.0)
    assert res[0].successful
    out = harness.send_and_wait(harness.image(12))
    assert out.header.stamp.sec == 12 and len(out.instances) == 0  # empty results are still published
    res = harness.set_params(score_threshold=1.5)
    assert not res[0].successful and "score_threshold" in res[0].reason
    assert harness.set_params(label_encoding="16SC1", score_threshold=0.0)[0].successful
    out = harness.send_and_wait(harness.image(14))
    wait_for(lambda: any(lab.header.stamp.sec == 14 for lab in harness.labels), "the signed label image")
    lab = next(lab for lab in harness.labels if lab.header.stamp.sec == 14)
    signed = np.frombuffer(bytes(lab.data), np.int16).reshape(lab.height, lab.width)
    assert lab.encoding == "16SC1" and set(np.unique(signed)) <= {-1} | {i.instance_id for i in out.instances}
    assert harness.set_params(label_encoding="mono16", score_threshold=1.0)[0].successful
    res = harness.set_params(label_encoding="jpeg")
    assert not res[0].successful and "label_encoding" in res[0].reason
    res = harness.set_params(active_objects=["nope"])
    assert not res[0].successful and "unknown objects" in res[0].reason
    res = harness.set_params(weights="/other.safetensors")
    assert not res[0].successful and "read-only" in res[0].reason
    assert harness.set_params(score_threshold=0.0, active_objects=["box"])[0].successful
    out = harness.send_and_wait(harness.image(13))
    assert {i.object_id for i in out.instances} <= {"box"}
    fut = harness.describe_client.call_async(
        DescribeParameters.Request(names=["coarse.ensemble", "score_threshold", "weights"]))
    wait_for(fut.done, "describe_parameters")
    ens, thr, weights = fut.result().descriptors
    assert (ens.integer_range[0].from_value, ens.integer_range[0].to_value) == (1, 64)  # PipelineConfig's range
    assert (thr.floating_point_range[0].from_value, thr.floating_point_range[0].to_value) == (0.0, 1.0)
    assert weights.read_only and ens.description


@pytest.mark.parametrize("mutate,why", [
    (lambda m: setattr(m, "encoding", "yuv422_weird"), "unsupported encoding"),
    (lambda m: setattr(m, "data", bytes(m.data)[:-7]), "expected height x step"),
    (lambda m: setattr(m, "step", 3), "step 3 is smaller"),
    (lambda m: (setattr(m, "height", 0), setattr(m, "data", b"")), "empty image"),
    (lambda m: setattr(m, "width", 100000), "limit"),
])
def test_malformed_images_are_dropped_and_the_node_keeps_working(harness, mutate, why):
    from rcl_interfaces.msg import Log

    logs = []
    sub = harness.peer.create_subscription(Log, "/rosout", logs.append, 100)
    wait_for(lambda: sub.get_publisher_count() > 0, "/rosout")
    try:
        bad = harness.image(20)
        mutate(bad)
        n = len(harness.results)
        # The node logs why it dropped the frame; wait for that (the frame has been handled), resending
        # in case best-effort transport lost it. Then a good frame must be answered, and nothing for
        # the bad frame may have been published before or after it.
        deadline = time.monotonic() + TIMEOUT
        dropped = []
        while not dropped:
            assert time.monotonic() < deadline, f"no log saying the frame was dropped for {why!r}"
            harness.camera.publish(bad)
            time.sleep(0.5)
            dropped = [g for g in logs if g.name == "ocdit" and "malformed" in g.msg]
        assert why in dropped[0].msg and dropped[0].level == Log.WARN
        out = harness.send_and_wait(harness.image(21))
        assert out.header.stamp.sec == 21
        assert all(r.header.stamp.sec != 20 for r in harness.results[n:])  # nothing for the bad frame
    finally:
        harness.peer.destroy_subscription(sub)


def test_latest_frame_slot_keeps_the_newest_and_counts_the_dropped():
    from ocdit_ros.ros.frames import LatestFrame

    slot = LatestFrame()
    t0 = time.monotonic()
    assert slot.take(timeout=0.05) is None and time.monotonic() - t0 >= 0.04  # empty: waits, then None
    for k in range(3):
        slot.put(k)
    assert slot.take() == 2  # the newest of the waiting frames
    assert (slot.received, slot.dropped) == (3, 2)
    assert slot.take(timeout=0.01) is None  # taking empties the slot
    slot.put("a")
    assert slot.take() == "a" and slot.dropped == 2  # a frame taken in time is not dropped

    got = []
    waiter = threading.Thread(target=lambda: got.append(slot.take(timeout=10)))
    waiter.start()
    time.sleep(0.1)
    slot.put("late")  # wakes a waiting take at once
    waiter.join(timeout=5)
    assert got == ["late"]
    waiter = threading.Thread(target=lambda: got.append(slot.take(timeout=10)))
    t0 = time.monotonic()
    waiter.start()
    slot.close()  # closing wakes it too
    waiter.join(timeout=5)
    assert got == ["late", None] and time.monotonic() - t0 < 5


def test_the_executor_outlives_an_entity_destroyed_while_it_builds_its_wait_set():
    """rclpy's race (ros2/rclpy#1284) made deterministic: a waitable that is destroyed after the
    executor listed it raises InvalidHandle when added to the wait set. Plain spin() ends there
    (the node answers nothing more, as in a CI run of this file); run_executor spins on."""
    from rclpy.exceptions import InvalidHandle
    from rclpy.waitable import NumberOfEntities, Waitable

    class DestroyedWhileListed(Waitable):
        def __init__(self, node):
            super().__init__(node.default_callback_group)
            self.node, self.raised = node, threading.Event()

        def __enter__(self):
            pass

        def __exit__(self, *exc):
            pass

        def get_num_entities(self):
            return NumberOfEntities()

        def add_to_wait_set(self, wait_set):
            self.node.remove_waitable(self)  # what destroy_subscription does to its event handlers
            self.raised.set()
            raise InvalidHandle("cannot use Destroyable because destruction was requested")

        def is_ready(self, wait_set):
            return False

    def spins_on(spin):
        ctx = rclpy.context.Context()
        rclpy.init(context=ctx)
        node = rclpy.create_node("ocdit_race", context=ctx)
        ticks = []
        node.create_timer(0.05, lambda: ticks.append(1))
        executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        errors = []

        def target():
            try:
                spin(executor)
            except InvalidHandle as exc:
                errors.append(exc)

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        try:
            wait_for(lambda: len(ticks) > 2, "the timer before the race")
            waitable = DestroyedWhileListed(node)
            node.add_waitable(waitable)
            executor.wake()
            wait_for(waitable.raised.is_set, "the waitable in the wait set")
            n = len(ticks)
            time.sleep(0.5)
            return thread.is_alive() and len(ticks) > n + 2, errors
        finally:
            executor.shutdown()
            thread.join(timeout=TIMEOUT)
            node.destroy_node()
            rclpy.shutdown(context=ctx)

    alive, errors = spins_on(lambda ex: ex.spin())
    assert not alive and len(errors) == 1  # the race is real and ends plain spin()
    alive, errors = spins_on(run_executor)
    assert alive and not errors


def test_burst_drops_stale_frames(templates_dir):
    h = Harness(templates_dir, namespace="/burst", **{"coarse.ensemble": 4, "coarse.num_steps": 20})
    arrived = []  # (time, stamp) of each result as the peer receives it
    h.peer.create_subscription(InstanceArray, "/burst/ocdit/instances",
                               lambda m: arrived.append((time.monotonic(), m.header.stamp.sec)), 50)
    try:
        sent = []
        for k in range(30):  # ~30 Hz into a pipeline far slower than that
            h.camera.publish(h.image(100 + k, seed=k))
            sent.append((time.monotonic(), 100 + k))
            time.sleep(1 / 30)
        # Best-effort transport may lose a frame itself: repeat the final one until it is answered.
        deadline = time.monotonic() + TIMEOUT
        while not (h.results and h.results[-1].header.stamp.sec == 200):
            assert time.monotonic() < deadline, "no result for the final frame"
            h.camera.publish(h.image(200))
            time.sleep(0.5)
        stamps = [r.header.stamp.sec for r in h.results]
        assert len(stamps) < 30 and h.node.frames.dropped > 0  # stale frames were skipped, not queued
        assert stamps == sorted(stamps) and stamps[-1] == 200  # in order
        # Results refer to recent frames: once a result is out, the worker takes the newest waiting
        # frame, so the next answered frame is at most a few frames (transport delay, ~170 ms here)
        # older than the newest one published when the previous result arrived. Keeping the oldest
        # waiting frame instead answers 101 after 100 while 129 was already out.
        burst = [(t, s) for t, s in arrived if s < 200]
        for (t_prev, _), (_, s_next) in zip(burst, burst[1:]):
            newest = max(s for t, s in sent if t <= t_prev)
            assert s_next >= newest - 5, f"answered {s_next} although {newest} was out: {burst}"
        # Every received frame was either processed or dropped; none is left queued.
        wait_for(lambda: h.node.processed + h.node.frames.dropped == h.node.frames.received, "the worker to settle")
    finally:
        h.close()


def call(harness, srv_type, name, **fields):
    client = harness.peer.create_client(srv_type, f"/ocdit/{name}")
    assert client.wait_for_service(timeout_sec=TIMEOUT), name
    fut = client.call_async(srv_type.Request(**fields))
    wait_for(fut.done, name, timeout=60)
    return fut.result()


def test_object_services_change_the_object_set_while_running(harness, tmp_path):
    from ocdit_msgs.srv import AddObject, ListObjects, RemoveObject, SetActiveObjects

    assert call(harness, SetActiveObjects, "set_active_objects", object_ids=[]).success  # empty = all
    listed = call(harness, ListObjects, "list_objects")
    assert list(listed.object_ids) == ["box", "mug"] and list(listed.active) == [True, True]
    assert list(listed.num_templates) == [12, 12]

    res = call(harness, SetActiveObjects, "set_active_objects", object_ids=["mug"])
    assert res.success and list(res.active_object_ids) == ["mug"]
    assert harness.node.get_parameter("active_objects").value == ["mug"]  # the same state rqt sees
    out = harness.send_and_wait(harness.image(30))
    assert {i.object_id for i in out.instances} <= {"mug"}
    assert not call(harness, SetActiveObjects, "set_active_objects", object_ids=["ghost"]).success

    cyl = trimesh.creation.cylinder(radius=0.03, height=0.1)
    cyl.export(tmp_path / "can.ply")
    added = call(harness, AddObject, "add_object", mesh_path=str(tmp_path / "can.ply"))
    assert added.success and added.object_id == "can" and not added.cache_hit and added.num_templates == 42
    rendered = json.loads((harness.node.templates_dir / "can.json").read_text())["render_settings"]
    assert rendered == harness.node.segmenter.template_settings().to_dict()  # as the model's templates were
    assert rendered["renderer"] == "pybullet" and rendered["template_size"] == 42  # tiny: 42 px (the rule)
    again = call(harness, AddObject, "add_object", mesh_path=str(tmp_path / "can.ply"))
    assert again.success and again.cache_hit  # rendered templates are reused
    copy = call(harness, AddObject, "add_object", templates_path=str(harness.node.templates_dir / "can.npz"),
                object_id="can_copy")
    assert copy.success and copy.object_id == "can_copy"
    assert call(harness, SetActiveObjects, "set_active_objects", object_ids=[]).success  # all objects
    assert set(call(harness, ListObjects, "list_objects").object_ids) == {"box", "mug", "can", "can_copy"}
    out = harness.send_and_wait(harness.image(31))
    assert out.header.stamp.sec == 31

    for bad in (dict(), dict(mesh_path="a.ply", templates_path="b.npz"), dict(mesh_path=str(tmp_path / "no.ply"))):
        res = call(harness, AddObject, "add_object", **bad)
        assert not res.success and res.message
    assert call(harness, RemoveObject, "remove_object", object_id="can_copy").success
    assert call(harness, RemoveObject, "remove_object", object_id="can").success
    res = call(harness, RemoveObject, "remove_object", object_id="can")
    assert not res.success and "unknown object" in res.message
    assert list(call(harness, ListObjects, "list_objects").object_ids) == ["box", "mug"]


def test_node_without_templates_starts_empty_and_takes_objects_through_add_object(tmp_path, monkeypatch, capfd):
    from ocdit_msgs.srv import AddObject, ListObjects, RemoveObject

    monkeypatch.setenv("OCDIT_CACHE", str(tmp_path / "cache"))  # where add_object renders without templates_dir
    h = Harness("", namespace="/empty")
    try:
        assert "no objects: templates_dir is unset" in capfd.readouterr().err
        out = h.send_and_wait(h.image(40))
        assert out.header.stamp.sec == 40 and len(out.instances) == 0  # an answer per frame, empty
        wait_for(lambda: any(lab.header.stamp.sec == 40 for lab in h.labels), "the empty label image")
        lab = next(lab for lab in h.labels if lab.header.stamp.sec == 40)
        assert not np.frombuffer(bytes(lab.data), np.uint16).any()

        def svc(srv_type, name, **fields):
            client = h.peer.create_client(srv_type, f"/empty/ocdit/{name}")
            assert client.wait_for_service(timeout_sec=TIMEOUT), name
            fut = client.call_async(srv_type.Request(**fields))
            wait_for(fut.done, name, timeout=60)
            return fut.result()

        assert list(svc(ListObjects, "list_objects").object_ids) == []
        trimesh.creation.box(extents=(0.1, 0.06, 0.04)).export(tmp_path / "crate.ply")
        added = svc(AddObject, "add_object", mesh_path=str(tmp_path / "crate.ply"))
        assert added.success and added.object_id == "crate", added.message
        assert (tmp_path / "cache" / "templates" / "crate.npz").is_file()
        assert list(svc(ListObjects, "list_objects").object_ids) == ["crate"]
        h.set_params(score_threshold=0.0)
        out = h.send_and_wait(h.image(41))
        assert out.header.stamp.sec == 41 and {i.object_id for i in out.instances} <= {"crate"}
        assert out.latency_total_ms > 0  # the pipeline ran this time
        assert svc(RemoveObject, "remove_object", object_id="crate").success  # back to none is allowed
        out = h.send_and_wait(h.image(42))
        assert len(out.instances) == 0 and out.latency_total_ms == 0
    finally:
        h.close()


NEW_KNOBS = {"augmentation_zoom": 0.5, "coarse_grid_scale": 1.5, "min_mask_area": 4, "cluster_iou": 0.6,
             "refine_margin": 0.3, "refine_jitter": 0.2, "max_objects_per_pass": 1, "work_size": 256,
             "coarse.s_churn": 0.5, "refine.s_churn": 1.0}


def test_every_pipeline_knob_is_a_described_ranged_live_parameter(harness):
    from ocdit_ros.pipeline import PipelineConfig
    from ocdit_ros.ros.parameters import PIPELINE_PARAMS, pipeline_range

    names = sorted(PIPELINE_PARAMS)
    fut = harness.describe_client.call_async(DescribeParameters.Request(names=names))
    wait_for(fut.done, "describe_parameters")
    for name, d in zip(names, fut.result().descriptors):
        assert d.description and not d.read_only, name
        rng = pipeline_range(name)
        if rng is None:
            assert isinstance(PipelineConfig().to_flat_dict()[name], bool), name
            continue
        r = d.integer_range[0] if isinstance(rng[0], int) else d.floating_point_range[0]
        assert (r.from_value, r.to_value) == rng, name
    res = harness.set_params(**NEW_KNOBS)
    assert all(r.successful for r in res), [r.reason for r in res]
    flat = harness.node.config.to_flat_dict()
    assert {k: flat[k] for k in NEW_KNOBS} == NEW_KNOBS
    assert not harness.set_params(refine_jitter=0.9)[0].successful  # outside [0, 0.5]
    defaults = PipelineConfig().to_flat_dict()
    assert all(r.successful for r in harness.set_params(**{k: defaults[k] for k in NEW_KNOBS}))


def test_min_mask_area_reaches_the_pipeline(harness):
    """A knob that was not a parameter before, shown to act: every member mask below the area counts
    as 'object absent', so the maximum area leaves no instances where 0 leaves some."""
    from ocdit_msgs.srv import SetActiveObjects

    assert call(harness, SetActiveObjects, "set_active_objects", object_ids=[]).success  # all objects
    assert all(r.successful for r in harness.set_params(score_threshold=0.0, min_mask_area=0))
    assert len(harness.send_and_wait(harness.image(50, seed=9)).instances) > 0
    assert harness.set_params(min_mask_area=1_000_000)[0].successful
    assert len(harness.send_and_wait(harness.image(51, seed=9)).instances) == 0
    assert harness.set_params(min_mask_area=16)[0].successful


def test_pipeline_config_yaml_sets_defaults_and_explicit_parameters_win(templates_dir, tmp_path):
    (tmp_path / "pipeline.yaml").write_text("coarse: {ensemble: 3, s_churn: 0.25}\nmin_mask_area: 40\n"
                                            "cluster_iou: 0.6\nwork_size: 200\n")
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    try:
        node = SegmentNode(context=ctx, parameter_overrides=[
            Parameter("model_config", value="tiny"), Parameter("templates_dir", value=str(templates_dir)),
            Parameter("pipeline_config", value=str(tmp_path / "pipeline.yaml")), Parameter("cluster_iou", value=0.7)])
        try:
            c = node.config
            assert (c.coarse.ensemble, c.coarse.s_churn, c.min_mask_area, c.work_size) == (3, 0.25, 40, 200)
            assert c.cluster_iou == 0.7  # given as a parameter: wins over the YAML
            assert node.get_parameter("min_mask_area").value == 40  # rqt shows the value in use
            assert c.refine.ensemble == 2  # in neither: PipelineConfig's default
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def _state_dicts_equal(model, path):
    from safetensors.torch import load_file

    saved = load_file(str(path))
    own = model.state_dict()
    return set(saved) == set(own) and all(torch_equal(own[k], saved[k]) for k in own)


def torch_equal(a, b):
    import torch

    return torch.equal(a.cpu(), b.cpu())


def test_feature_cache_dir_keeps_template_features_across_restarts(templates_dir, tmp_path):
    cache = tmp_path / "features"
    # A namespace of its own: in "/" the module's harness node would answer these frames too.
    first = Harness(templates_dir, namespace="/cache", feature_cache_dir=str(cache))
    try:
        first.send_and_wait(first.image(70))
        loaded = sorted(first.node.objects)  # box and mug, and objects earlier tests added to the folder
        assert sorted(p.name.split("-")[0] for p in cache.glob("*.safetensors")) == loaded
    finally:
        first.close()
    again = Harness(templates_dir, namespace="/cache", feature_cache_dir=str(cache))
    try:
        again.send_and_wait(again.image(71))
        model = again.node.segmenter.coarse
        assert model.cache_misses == 0 and model.cache_hits >= len(loaded)  # read back, not recomputed
    finally:
        again.close()


def test_node_loads_real_weights_from_a_file_with_their_config(templates_dir, tmp_path):
    """Not random `tiny` weights: a model saved to safetensors with a non-preset config, loaded
    through the weights parameter alone (the config comes from the file)."""
    import torch

    from ocdit_ros.model import OCDiT, save_weights, tiny

    cfg = tiny()
    cfg.diffuser.depth, cfg.diffuser.max_num_classes = 3, 6
    torch.manual_seed(5)
    save_weights(OCDiT.from_config(cfg), tmp_path / "mine.safetensors")
    h = Harness(templates_dir, namespace="/real", model_config="", weights=str(tmp_path / "mine.safetensors"))
    try:
        coarse = h.node.segmenter.coarse
        assert coarse.model.config.diffuser.depth == 3 and coarse.object_capacity == 6
        assert _state_dicts_equal(coarse.model, tmp_path / "mine.safetensors")
        assert h.node.segmenter.refine is coarse  # no refine weights: the coarse model refines
        assert h.send_and_wait(h.image(60)).header.stamp.sec == 60
    finally:
        h.close()


def test_node_without_weights_loads_the_shipped_default_model(templates_dir):
    from ocdit_ros.model.default import default_weights

    coarse_file, refine_file = default_weights()
    h = Harness(templates_dir, namespace="/shipped", model_config="")
    try:
        assert _state_dicts_equal(h.node.segmenter.coarse.model, coarse_file)
        assert refine_file is not None and _state_dicts_equal(h.node.segmenter.refine.model, refine_file)
        assert h.send_and_wait(h.image(61)).header.stamp.sec == 61
    finally:
        h.close()


def test_debug_image_is_the_overlay_of_the_published_instances_and_rate_limited(templates_dir):
    from types import SimpleNamespace

    from ocdit_ros.pipeline.export import overlay

    # mask_threshold 0.01: the random-weight model's soft masks become instances, so the overlay tints.
    h = Harness(templates_dir, namespace="/debug", publish_debug_image=True, debug_rate_hz=0.1, mask_threshold=0.01)
    debug = []
    h.peer.create_subscription(Image, "/debug/ocdit/debug_image", debug.append, 10)
    try:
        frame = h.image(40, seed=8)
        out = h.send_and_wait(frame)
        wait_for(lambda: debug, "a debug image")
        dbg = debug[0]
        assert (dbg.header.stamp.sec, dbg.header.frame_id, dbg.encoding) == (40, "camera_optical", "rgb8")
        got = np.frombuffer(bytes(dbg.data), np.uint8).reshape(dbg.height, dbg.width, 3)
        image = np.frombuffer(bytes(frame.data), np.uint8).reshape(60, 80, 3)
        instances = [SimpleNamespace(mask=np.frombuffer(bytes(i.mask.data), np.uint8).reshape(60, 80) > 0,
                                     bbox=(i.bbox.x_offset, i.bbox.y_offset, i.bbox.x_offset + i.bbox.width,
                                           i.bbox.y_offset + i.bbox.height)) for i in out.instances]
        assert instances, "no instances to draw: the test would not check the tinting"
        assert np.array_equal(got, overlay(image, instances))  # exactly the published instances, drawn
        assert not np.array_equal(got, image)
        # 0.1 Hz: the next frame, a second later, gets its results but no debug image.
        assert h.send_and_wait(h.image(41, seed=9)).header.stamp.sec == 41
        time.sleep(1.0)
        assert [d.header.stamp.sec for d in debug] == [40]
    finally:
        h.close()
