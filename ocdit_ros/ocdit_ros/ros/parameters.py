"""ROS parameters of the segmentation node: declarations for rqt_reconfigure and validation.

Numbers carry IntegerRange/FloatingPointRange descriptors (rqt shows sliders); settings that
need a model reload are read-only. Pipeline settings use the PipelineConfig names with dots
("coarse.ensemble"), so a change maps 1:1 onto `PipelineConfig.replace`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# name: (default, (min, max, step) or None, description)
PIPELINE_PARAMS: dict[str, tuple[Any, tuple | None, str]] = {
    "coarse.ensemble": (4, (1, 32, 1), "noise seeds per view in the coarse stage"),
    "coarse.augmentations": (1, (1, 11, 1), "spatial views in the coarse stage (1 = full image only)"),
    "coarse.num_steps": (9, (1, 50, 1), "Heun steps of the coarse sampler (2n-1 network evaluations)"),
    "coarse.rho": (9.0, (1.0, 20.0, 0.0), "noise schedule exponent of the coarse sampler"),
    "refine.ensemble": (2, (1, 32, 1), "noise seeds per refine crop"),
    "refine.augmentations": (3, (1, 11, 1), "jittered crops per proposal"),
    "refine.num_steps": (9, (1, 50, 1), "Heun steps of the refine sampler"),
    "refine.rho": (9.0, (1.0, 20.0, 0.0), "noise schedule exponent of the refine sampler"),
    "refine_enabled": (True, None, "run the refine stage (off: publish coarse proposals)"),
    "guided_augmentation": (False, None, "extra coarse view around the first pass's proposals"),
    "relabel": (False, None, "refine each proposal against every object and keep the best"),
    "mask_threshold": (0.5, (0.0, 1.0, 0.0), "probability above which a pixel belongs to a mask"),
    "min_support": (0.3, (0.0, 1.0, 0.0), "fraction of ensemble members that must agree on an instance"),
    "proposal_threshold": (0.2, (0.0, 1.0, 0.0), "coarse confidence needed to refine/report a proposal"),
    "score_threshold": (0.5, (0.0, 1.0, 0.0), "final score needed to publish an instance"),
    "max_instances": (32, (1, 100, 1), "most instances per image"),
    "seed": (0, (0, 2**31 - 1, 1), "sampling seed (same seed and image -> same result)"),
}

# mono16/16UC1: 0 = background, instance ids (contact-graspnet style segmaps);
# 16SC1: -1 = background (v4r grasping convention).
LABEL_ENCODINGS = ("mono16", "16UC1", "16SC1")

NODE_PARAMS: dict[str, tuple[Any, tuple | None, str]] = {
    "publish_label_image": (True, None, "publish ~/label_image (0 = background, instance ids)"),
    "label_encoding": ("mono16", None, f"label image encoding, one of {', '.join(LABEL_ENCODINGS)}"),
    "publish_debug_image": (False, None, "publish ~/debug_image overlays (rate-limited)"),
    "debug_rate_hz": (2.0, (0.1, 30.0, 0.0), "most debug images per second"),
    "publish_coarse_first": (False, None, "publish coarse results before the refined ones"),
    "publish_detections": (True, None, "publish ~/detections (vision_msgs/Detection2DArray) when vision_msgs exists"),
    "publish_object_masks": (False, None, "publish ~/object_masks/<object_id> (mono8, best instance, every frame)"),
    "publish_uncertainty": (False, None, "publish ~/uncertainty (32FC1 per-pixel ensemble variance)"),
    "active_objects": ([], None, "object ids to segment; unset or empty = all loaded objects"),
}

READ_ONLY: dict[str, tuple[Any, str]] = {
    "weights": ("", "coarse model weights (.safetensors or save_pretrained folder)"),
    "refine_weights": ("", "refine model weights (empty: the coarse model refines)"),
    "model_config": ("", "model config preset/YAML for weights without a stored config; "
                         "with no weights: random weights of this preset (testing only)"),
    "templates_dir": ("", "folder of template archives (ocdit templates render)"),
    "device": ("cpu", "torch device, e.g. cpu or cuda:0"),
    "dtype": ("float32", "float32, bfloat16 or float16 (autocast on CUDA)"),
    "image_transport": ("raw", "raw (sensor_msgs/Image) or compressed (sensor_msgs/CompressedImage)"),
    "use_camera_info": (False, "subscribe camera_info: checks that image and calibration sizes agree "
                               "(a frequent remapping mistake) and reports it in /diagnostics"),
}


@dataclass
class Declared:
    pipeline: dict[str, Any]
    node: dict[str, Any]
    read_only: dict[str, Any]


def declare_all(node) -> Declared:
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

    def descriptor(desc: str, rng, read_only=False):
        d = ParameterDescriptor(description=desc, read_only=read_only)
        if rng is not None:
            lo, hi, step = rng
            if isinstance(lo, int) and isinstance(hi, int) and not isinstance(lo, bool):
                d.integer_range = [IntegerRange(from_value=lo, to_value=hi, step=int(step))]
            else:
                d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=float(step))]
        return d

    values = {}
    for table in (PIPELINE_PARAMS, NODE_PARAMS):
        for name, (default, rng, desc) in table.items():
            if name == "active_objects":
                from rclpy.parameter import Parameter

                from rclpy.exceptions import ParameterUninitializedException

                # A typed, unset string array (an empty default has no type): unset = all objects.
                node.declare_parameter(name, Parameter.Type.STRING_ARRAY, descriptor(desc, None))
                try:
                    values[name] = list(node.get_parameter(name).value or [])
                except ParameterUninitializedException:
                    values[name] = []
            else:
                values[name] = node.declare_parameter(name, default, descriptor(desc, rng)).value
    ro = {name: node.declare_parameter(name, default, descriptor(desc, None, True)).value
          for name, (default, desc) in READ_ONLY.items()}
    return Declared({k: values[k] for k in PIPELINE_PARAMS}, {k: values[k] for k in NODE_PARAMS}, ro)


def check_node_value(name: str, value: Any) -> str | None:
    """Reason to reject a node (non-pipeline) parameter value, or None."""
    if name == "label_encoding" and value not in LABEL_ENCODINGS:
        return f"label_encoding must be one of {', '.join(LABEL_ENCODINGS)}, got {value!r}"
    return None
