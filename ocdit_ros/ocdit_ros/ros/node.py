"""ROS 2 node: images in, OC-DiT instances out.

    segment_node --ros-args -p weights:=coarse.safetensors -p templates_dir:=templates/ \
                 -r image:=/camera/image_raw

Subscribes `image` (sensor_msgs/Image, or CompressedImage with image_transport:=compressed)
with reliability BEST_AVAILABLE following the publishers, depth 1 (ros/image_subscription.py;
overridable through qos_overrides parameters). The callback only stores the newest frame in a
one-slot hand-off; one worker thread segments it, so stale frames are dropped (and counted)
instead of queued, and services and parameter changes stay responsive
during a diffusion pass. The node is named `ocdit`, so ~/x is /ocdit/x. Published, stamped
with the input header: ~/instances (ocdit_msgs/InstanceArray, also when empty), ~/detections
(vision_msgs/Detection2DArray, when installed), ~/label_image (instance ids), and on request
~/debug_image (rate-limited), ~/uncertainty, ~/object_masks/<object>; plus /diagnostics.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from ocdit_msgs.msg import InstanceArray
from rclpy.exceptions import ParameterException

try:  # optional message packages: published when the user's ROS has them
    from vision_msgs.msg import Detection2DArray
except ImportError:  # pragma: no cover - depends on the installation
    Detection2DArray = None
try:
    from diagnostic_msgs.msg import DiagnosticArray
except ImportError:  # pragma: no cover
    DiagnosticArray = None

from ..data.objects import default_templates_dir
from ..pipeline.build import ModelFiles, SetupError, load_objects
from ..pipeline.export import overlay
from ..pipeline.retry import segment_with_retry
from . import messages
from .frames import LatestFrame, device_memory
from .image_codec import ImageError, compressed_to_rgb, image_to_rgb
from .image_subscription import ImageSubscription
from .object_services import ObjectServices
from .process import spin, start
from .parameters import (NODE_PARAMS, PIPELINE_PARAMS, builtin_error, check_node_value, declare_all,
                         unknown_overrides)

MSG_TYPES = messages.rclpy_types()


class SegmentCore(ObjectServices):
    """The node's work, shared by the plain node (`SegmentNode`, configured and active from the
    start) and the managed one (`lifecycle.SegmentLifecycleNode`, driven by transitions). Mixed
    into an rclpy Node; the steps map onto the lifecycle transitions:
    `_setup_parameters` (construction), `_configure` (load model and objects, create publishers and
    services), `_activate` (subscribe, start the worker), `_deactivate`, `_cleanup` (free the model)."""

    # -- construction ------------------------------------------------------------------------
    def __init__(self, node_name: str = "ocdit", **kwargs):
        try:  # the rclpy Node (plain or lifecycle) that follows in the MRO
            super().__init__(node_name, **kwargs)
        except ParameterException as exc:  # rclpy's own parameters, e.g. use_sim_time:=maybe
            raise builtin_error(exc) from None

    def _setup_parameters(self) -> None:
        self.frames, self.segmenter, self._worker, self.sub = LatestFrame(), None, None, None
        self.objects: dict = {}
        self._entities: list = []  # publishers and services of the configured state
        self._active_entities: list = []  # subscriptions and timers of the active state
        self._running = False
        self._lock = threading.Lock()
        declared = declare_all(self)
        self.ro = declared.read_only
        self.config = declared.config
        self.node_params = dict(declared.node)
        for name in unknown_overrides(self):
            self.get_logger().warning(f"parameter {name!r} is given but this node has no such parameter (a typo?); "
                                      "it is ignored")
        self.add_on_set_parameters_callback(self._on_set_parameters)
        templates = self.ro["templates_dir"]
        self.templates_dir = Path(templates).expanduser() if templates else default_templates_dir()

    def _make_publisher(self, msg_type, topic, qos):
        """A publisher of the configured state (the managed node makes lifecycle publishers)."""
        pub = self.create_publisher(msg_type, topic, qos)
        self._entities.append(pub)
        return pub

    def _destroy_publisher(self, pub) -> None:
        self.destroy_publisher(pub)

    # -- configure: model, objects, publishers, services ---------------------------------------
    def _configure(self) -> None:
        ro = self.ro
        random_weights = bool(ro["model_config"] and not ro["weights"])
        files = ModelFiles.resolve(ro["weights"], ro["refine_weights"], ro["model_config"], random_weights)
        if random_weights:
            self.get_logger().warning(f"no weights: RANDOM weights of model config {ro['model_config']!r} "
                                      "(testing only)")
        elif files.shipped:
            self.get_logger().info(f"no weights given: the shipped default model {files.weights.name} "
                                   f"(small CPU-trained model, synthetic data; see its MODEL_CARD.md)")
        self.objects = load_objects(ro["templates_dir"], "templates_dir", hint="or leave templates_dir unset and "
                                    "add objects with the ~/add_object service")
        unknown = [o for o in self.node_params["active_objects"] if o and o not in self.objects]
        if unknown:
            raise SetupError("active_objects", f"unknown objects {unknown}; loaded: {sorted(self.objects)}",
                             "name objects of templates_dir, or leave active_objects unset")
        self.segmenter = files.build(self.config, cache_dir=ro["feature_cache_dir"])
        if not self.objects:
            self.get_logger().warning(
                f"no objects: templates_dir is {'unset' if not ro['templates_dir'] else 'empty'}; publishing empty "
                f"results until objects are added with the ~/add_object service (rendered into {self.templates_dir})")

        qos_out = QoSProfile(depth=5)
        self.pub_instances = self._make_publisher(InstanceArray, "~/instances", qos_out)
        self.pub_labels = self._make_publisher(Image, "~/label_image", qos_out)
        self.pub_debug = self._make_publisher(Image, "~/debug_image", qos_out)
        self.pub_uncertainty = self._make_publisher(Image, "~/uncertainty", qos_out)
        self.pub_detections = (self._make_publisher(Detection2DArray, "~/detections", qos_out)
                               if Detection2DArray is not None else None)
        self.pub_diagnostics = (self._make_publisher(DiagnosticArray, "/diagnostics", 10)
                                if DiagnosticArray is not None else None)
        self.pub_object_masks: dict[str, object] = {}
        self._entities.extend(self._create_object_services())
        self._warm_up()

    # -- activate: subscriptions and the worker ------------------------------------------------
    def _activate(self) -> None:
        self.frames = LatestFrame()
        self.processed = 0
        self._last_debug = 0.0
        self.last_stats: dict[str, float] = {}
        self.camera_info = None
        self.camera_info_mismatch = 0
        compressed = self.ro["image_transport"] == "compressed"
        self._decode = compressed_to_rgb if compressed else image_to_rgb
        self.sub = ImageSubscription(self, CompressedImage if compressed else Image, "image", self.frames.put)
        self._active_entities = []
        if self.ro["use_camera_info"]:  # small messages: best effort loses none and matches any publisher
            self._active_entities.append(self.create_subscription(
                CameraInfo, "camera_info", self._on_camera_info,
                QoSProfile(depth=1, reliability=qos_profile_sensor_data.reliability)))
        if self.pub_diagnostics is not None:
            self._active_entities.append(self.create_timer(1.0, self._publish_diagnostics))
        self._running = True
        self._worker = threading.Thread(target=self._work, name="ocdit_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(f"ready: {len(self.objects)} objects {sorted(self.objects)}, "
                               f"device {self.config.device}, listening on {self.sub.topic_name}")

    def _deactivate(self) -> None:
        """Stop listening and let the worker finish its frame; nothing is published afterwards."""
        self._running = False
        if self.frames is not None:
            self.frames.close()
        if self._worker is not None:
            self._worker.join(timeout=60)
            self._worker = None
        if self.sub is not None:
            self.sub.destroy()
        for entity in self._active_entities:
            if hasattr(entity, "cancel"):  # a timer
                entity.cancel()
                self.destroy_timer(entity)
            else:
                self.destroy_subscription(entity)
        self._active_entities, self.sub = [], None

    def _cleanup(self) -> None:
        """Back to unconfigured: publishers and services gone, the model freed."""
        for entity in self._entities + list(getattr(self, "pub_object_masks", {}).values()):
            if hasattr(entity, "publish"):
                self._destroy_publisher(entity)
            else:
                self.destroy_service(entity)
        self._entities, self.pub_object_masks = [], {}
        self.segmenter, self.objects = None, {}
        import gc

        gc.collect()
        if self.config.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    # -- parameters ------------------------------------------------------------------------
    def _on_set_parameters(self, params) -> SetParametersResult:
        changes, node_changes = {}, {}
        for p in params:
            if p.name in PIPELINE_PARAMS:
                changes[p.name] = p.value
            elif p.name in NODE_PARAMS:
                reason = check_node_value(p.name, p.value)
                if reason:
                    return SetParametersResult(successful=False, reason=reason)
                if p.name == "active_objects" and self.segmenter is not None:  # else checked by configure
                    unknown = [o for o in (p.value or []) if o and o not in self.objects]
                    if unknown:
                        return SetParametersResult(successful=False,
                                                   reason=f"unknown objects {unknown}; loaded: {sorted(self.objects)}")
                node_changes[p.name] = p.value
        try:
            new_config = self.config.replace(**changes) if changes else self.config
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        with self._lock:  # applies from the next frame on
            self.config = new_config
            self.node_params.update(node_changes)
        return SetParametersResult(successful=True)

    def _on_camera_info(self, msg) -> None:
        self.camera_info = msg

    def _check_camera_info(self, shape) -> None:
        info = self.camera_info
        if info is not None and (info.height, info.width) != tuple(shape) and info.height and info.width:
            self.camera_info_mismatch += 1
            if self.camera_info_mismatch == 1 or self.camera_info_mismatch % 100 == 0:
                self.get_logger().warning(
                    f"image is {shape[1]}x{shape[0]} but camera_info says {info.width}x{info.height}: "
                    "are image and camera_info remapped to the same camera?")

    # -- processing ------------------------------------------------------------------------
    def _warm_up(self) -> None:
        if not self.objects:
            return
        t0 = time.perf_counter()
        image = np.zeros((64, 64, 3), np.uint8)
        self.segmenter.segment(image, self.active_objects()[:1], config=self.config.replace(
            **{"coarse.ensemble": 1, "coarse.num_steps": 1, "refine_enabled": False}))
        self.get_logger().info(f"warm-up done in {time.perf_counter() - t0:.2f} s")

    def _work(self) -> None:
        while self._running:
            msg = self.frames.take()
            if msg is None:
                continue
            try:
                self.process(msg)
            except ImageError as exc:
                self.get_logger().warning(f"dropped a malformed image: {exc}")
            except Exception as exc:  # a failed frame must not kill the node
                self.get_logger().error(f"segmentation failed on a frame: {type(exc).__name__}: {exc}")

    def process(self, msg) -> InstanceArray:
        image = self._decode(msg)
        self._check_camera_info(image.shape[:2])
        with self._lock:
            config, params = self.config, dict(self.node_params)
        objects = self.active_objects()
        if not objects:  # nothing to look for yet: an empty answer, so consumers still get one per frame
            self.get_logger().warning("no objects loaded: publishing empty results (add some with ~/add_object)",
                                      throttle_duration_sec=30.0)
        if params["publish_coarse_first"] and config.refine_enabled and objects:
            coarse = self._segment(image, objects, config, last_stage="coarse")
            self.pub_instances.publish(messages.instance_array(MSG_TYPES, msg.header, coarse))
        result = self._segment(image, objects, config)
        out = messages.instance_array(MSG_TYPES, msg.header, result)
        self.pub_instances.publish(out)
        if params["publish_label_image"]:
            self.pub_labels.publish(messages.label_image_msg(MSG_TYPES, msg.header, result, params["label_encoding"]))
        if params["publish_detections"] and self.pub_detections is not None:
            self.pub_detections.publish(messages.detection_array(Detection2DArray, msg.header, result))
        if params["publish_object_masks"]:
            self._publish_object_masks(msg.header, result, objects, image.shape[:2])
        if params["publish_uncertainty"]:
            unc = np.zeros(image.shape[:2], np.float32)
            for inst in result.instances:
                np.maximum(unc, inst.uncertainty, out=unc)
            self.pub_uncertainty.publish(messages.image(MSG_TYPES, msg.header, unc, "32FC1"))
        self._record_stats(msg.header, result)
        now = time.monotonic()
        if params["publish_debug_image"] and now - self._last_debug >= 1.0 / params["debug_rate_hz"]:
            self._last_debug = now
            self.pub_debug.publish(messages.image(MSG_TYPES, msg.header, overlay(image, result.instances), "rgb8"))
        self.processed += 1
        return out

    def _publish_object_masks(self, header, result, objects, shape) -> None:
        """One mono8 mask per active object and frame (FoundationPose-style consumers take one
        object per node): its best-scoring instance, or an empty mask so exact-time syncs never starve."""
        best = {}
        for inst in result.instances:  # sorted by score
            best.setdefault(inst.object_id, inst)
        for obj in objects:
            pub = self.pub_object_masks.get(obj.id)
            if pub is None:
                pub = self._make_publisher(Image, f"~/object_masks/{messages.topic_token(obj.id)}", QoSProfile(depth=5))
                self._entities.remove(pub)  # freed with pub_object_masks
                self.pub_object_masks[obj.id] = pub
            mask = best[obj.id].mask if obj.id in best else np.zeros(shape, bool)
            pub.publish(messages.image(MSG_TYPES, header, mask.astype(np.uint8) * 255, "mono8"))

    def _record_stats(self, header, result) -> None:
        stamp = header.stamp.sec + header.stamp.nanosec * 1e-9
        now = self.get_clock().now().nanoseconds * 1e-9
        stats = {f"latency_{k}_ms": v for k, v in result.timings_ms.items()}
        stats["input_age_ms"] = (now - stamp) * 1e3 if stamp > 0 else -1.0
        stats["instances"] = float(len(result.instances))
        self.last_stats = stats

    def _publish_diagnostics(self) -> None:
        if self.pub_diagnostics is None:
            return
        dropped, received = self.frames.dropped, self.frames.received
        values = {"frames_received": received, "frames_dropped": dropped, "frames_processed": self.processed,
                  "camera_info_received": self.camera_info is not None,
                  "camera_info_size_mismatches": self.camera_info_mismatch,
                  **{k: round(v, 2) for k, v in self.last_stats.items()}, **device_memory(self.config.device)}
        self.pub_diagnostics.publish(messages.diagnostic_array(
            DiagnosticArray, self.get_clock().now().to_msg(), f"{self.get_name()}: segmentation",
            self.config.device, ok=bool(self.processed or not received),
            message=f"{self.processed} frames segmented, {dropped} of {received} dropped as stale", values=values))

    def _segment(self, image, objects, config, last_stage="refine"):
        return segment_with_retry(self.segmenter, image, objects, config, last_stage, warn=self.get_logger().warning)


class SegmentNode(SegmentCore, Node):
    """The plain node: configured and active from construction on."""

    def __init__(self, node_name: str = "ocdit", **kwargs):
        super().__init__(node_name, **kwargs)
        try:
            self._setup_parameters()
            self._configure()
            self._activate()
        except BaseException:
            self.destroy_node()  # the context must not hold a half-built node
            raise

    def destroy_node(self):
        if getattr(self, "_running", False) or getattr(self, "_worker", None) is not None:
            self._deactivate()
        return super().destroy_node()


def main(args=None) -> int:
    node, status = start(SegmentNode, args)
    if node is not None:
        spin(node)
    return status
