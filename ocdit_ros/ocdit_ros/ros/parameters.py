"""ROS parameters of the segmentation node: declarations for rqt_reconfigure and start-up checks.

Pipeline settings use the PipelineConfig names with dots ("coarse.ensemble"), so a change maps
1:1 onto `PipelineConfig.replace`; their defaults and ranges come from PipelineConfig alone (its
defaults, or the YAML named by the `pipeline_config` parameter; `config.RANGES`), so rqt shows
sliders. Settings that need a model reload are read-only. A value a user gave that cannot work
raises `SetupError` naming the parameter, before anything is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..pipeline.build import SetupError, resolve_device
from ..pipeline.config import RANGES, STAGE_RANGES, PipelineConfig

# Every PipelineConfig setting except device, dtype, compile and cuda_graphs (read-only parameters
# below, fixed when the model is built): description.
PIPELINE_PARAMS: dict[str, str] = {
    "coarse.ensemble": "noise seeds per view in the coarse stage",
    "coarse.augmentations": "spatial views in the coarse stage (1 = full image only)",
    "coarse.num_steps": "Heun steps of the coarse sampler (2n-1 network evaluations)",
    "coarse.rho": "noise schedule exponent of the coarse sampler",
    "coarse.s_churn": "stochastic churn of the coarse sampler (0 = deterministic ODE)",
    "refine.ensemble": "noise seeds per refine crop",
    "refine.augmentations": "jittered crops per proposal",
    "refine.num_steps": "Heun steps of the refine sampler",
    "refine.rho": "noise schedule exponent of the refine sampler",
    "refine.s_churn": "stochastic churn of the refine sampler (0 = deterministic ODE)",
    "refine_enabled": "run the refine stage (off: publish coarse proposals)",
    "guided_augmentation": "extra coarse view around the first pass's proposals",
    "augmentation_zoom": "side of the zoomed coarse views relative to the full view",
    "coarse_grid_scale": "coarse canvas relative to the model's full-view grid (>1: finer, slower)",
    "relabel": "refine each proposal against every object and keep the best",
    "mask_threshold": "probability above which a pixel belongs to a mask",
    "min_mask_area": "smallest member mask in input pixels; smaller ones count as 'object absent'",
    "cluster_iou": "ensemble member masks with IoU above this are the same instance",
    "min_support": "fraction of ensemble members that must agree on an instance",
    "proposal_threshold": "coarse confidence needed to refine/report a proposal",
    "score_threshold": "refine score needed to publish an instance (coarse-only results are cut by "
                       "proposal_threshold)",
    "max_instances": "most instances per image",
    "refine_margin": "context around a proposal's box in its refine crop, relative to the box size",
    "refine_jitter": "random scale/shift of the extra refine crops, relative to the box size",
    "max_objects_per_pass": "objects per network pass (0 = the model's object capacity)",
    "work_size": "longest side in pixels of the grid instances are aggregated on",
    "seed": "sampling seed (same seed and image -> same result)",
    "memory_budget_mb": "activation memory one denoiser call or VAE decode chunk may use (MB); batches are sized to it",
    "cache": "reuse the conditioning across sampler evaluations (off: the slower reference path)",
    "sdpa": "fused attention kernels (off: the math kernel, for reference)",
}

# mono16/16UC1: 0 = background, instance ids (contact-graspnet style segmaps);
# 16SC1: -1 = background (v4r grasping convention).
LABEL_ENCODINGS = ("mono16", "16UC1", "16SC1")
IMAGE_TRANSPORTS = ("raw", "compressed")

# name: (default, (min, max) or None, description)
NODE_PARAMS: dict[str, tuple[Any, tuple | None, str]] = {
    "publish_label_image": (True, None, "publish ~/label_image (0 = background, instance ids)"),
    "label_encoding": ("mono16", None, f"label image encoding, one of {', '.join(LABEL_ENCODINGS)}"),
    "publish_debug_image": (False, None, "publish ~/debug_image overlays (rate-limited)"),
    "debug_rate_hz": (2.0, (0.1, 30.0), "most debug images per second"),
    "publish_coarse_first": (False, None, "publish coarse results before the refined ones"),
    "publish_detections": (True, None, "publish ~/detections (vision_msgs/Detection2DArray) when vision_msgs exists"),
    "publish_object_masks": (False, None, "publish ~/object_masks/<object_id> (mono8, best instance, every frame)"),
    "publish_uncertainty": (False, None, "publish ~/uncertainty (32FC1 per-pixel ensemble variance)"),
    "active_objects": ([], None, "object ids to segment; unset or empty = all loaded objects"),
}

READ_ONLY: dict[str, tuple[Any, str]] = {
    "weights": ("", "coarse model weights (.safetensors or save_pretrained folder); empty: the shipped model"),
    "refine_weights": ("", "refine model weights (empty: the shipped refine model, or the coarse model)"),
    "model_config": ("", "model config preset/YAML for weights without a stored config; "
                         "with no weights: random weights of this preset (testing only)"),
    "templates_dir": ("", "folder of template archives (ocdit templates render); empty: start with no objects"),
    "feature_cache_dir": ("", "folder that keeps the templates' backbone features across restarts (keyed by "
                              "template pixels and weights); empty: memory only"),
    "pipeline_config": ("", "pipeline YAML (as for ocdit segment --config): its values replace the "
                            "PipelineConfig defaults; pipeline parameters set explicitly win over it"),
    "device": ("cpu", "torch device: cpu, cuda or cuda:N (an unavailable CUDA device is refused)"),
    "dtype": ("float32", "float32, bfloat16 (autocast on CPU or CUDA) or float16 (CUDA only)"),
    "compile": ("off", "torch.compile the denoiser: off, default, max-autotune or a backend name"),
    "cuda_graphs": (False, "with compile on CUDA: capture the fixed-shape denoiser (reduce-overhead)"),
    "image_transport": ("raw", "raw (sensor_msgs/Image) or compressed (sensor_msgs/CompressedImage)"),
    "use_camera_info": (False, "subscribe camera_info: checks that image and calibration sizes agree "
                               "(a frequent remapping mistake) and reports it in /diagnostics"),
}

# Parameters rclpy itself (or the QoS overriding) declares; never reported as unknown.
_ROS_OWN = ("use_sim_time", "start_type_description_service", "qos_overrides.")


def pipeline_range(name: str) -> tuple | None:
    """The closed range of a numeric pipeline setting (None for true/false settings)."""
    stage, _, leaf = name.rpartition(".")
    return STAGE_RANGES[leaf] if stage else RANGES.get(leaf)


@dataclass
class Declared:
    pipeline: dict[str, Any]
    node: dict[str, Any]
    read_only: dict[str, Any]
    config: PipelineConfig  # pipeline values + device + dtype, validated


def _overrides(node) -> dict:
    # rclpy has no public accessor for the values given on the command line or in a parameter
    # file before a parameter is declared; they are needed to name a wrong value ourselves.
    return getattr(node, "_parameter_overrides", {}) or {}


def _type_name(value) -> str:
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


def _declare(node, name: str, default, rng, desc: str, read_only: bool = False):
    """Declare one parameter; a given value of the wrong type or out of range is a SetupError.
    An integer given for a floating-point parameter (`-p score_threshold:=1`) is taken as 1.0."""
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
    from rclpy.exceptions import ParameterException

    d = ParameterDescriptor(description=desc, read_only=read_only)
    if rng is not None:
        lo, hi = rng
        if isinstance(default, int) and not isinstance(default, bool):
            d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
        else:
            d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
    given = _overrides(node).get(name)
    value, ignore = default, False
    if given is not None:
        value = given.value
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value, ignore = float(value), True
        if type(value) is not type(default) and not (isinstance(default, list) and isinstance(value, list)):
            raise SetupError(name, f"{value!r} is {_type_name(value)}, but this parameter takes {_type_name(default)}",
                             f"give e.g. {name}:={_ros_literal(default)}")
        if rng is not None and not rng[0] <= value <= rng[1]:
            raise SetupError(name, f"{value} is outside [{rng[0]}, {rng[1]}]", f"give a value in [{rng[0]}, {rng[1]}]")
    try:
        return node.declare_parameter(name, value, d, ignore_override=ignore).value
    except ParameterException as exc:  # anything the checks above did not foresee
        raise SetupError(name, str(exc), "see the parameter's description (ros2 param describe)") from None


def _ros_literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value) if value else "''"
    return repr(value)


def declare_all(node) -> Declared:
    from rcl_interfaces.msg import ParameterDescriptor
    from rclpy.exceptions import ParameterUninitializedException
    from rclpy.parameter import Parameter

    check_builtin(node)
    ro = {"pipeline_config": _declare(node, "pipeline_config", "", None, READ_ONLY["pipeline_config"][1], True)}
    base = PipelineConfig()
    if ro["pipeline_config"]:
        try:
            base = PipelineConfig.from_yaml(Path(ro["pipeline_config"]).expanduser())
        except (OSError, ValueError, yaml.YAMLError) as exc:
            problem = " ".join(str(exc).split())
            raise SetupError("pipeline_config", problem,
                             "give a pipeline YAML like ocdit segment --config takes") from None
    for name, (default, desc) in READ_ONLY.items():
        if name != "pipeline_config":  # device and dtype default to the pipeline YAML's
            ro[name] = _declare(node, name, getattr(base, name, default), None, desc, read_only=True)
    defaults = base.to_flat_dict()
    pipeline = {}
    for name, desc in PIPELINE_PARAMS.items():
        rng = pipeline_range(name)
        default = float(defaults[name]) if rng and isinstance(rng[0], float) else defaults[name]
        pipeline[name] = _declare(node, name, default, rng, desc)
    values = {}
    for name, (default, rng, desc) in NODE_PARAMS.items():
        if name == "active_objects":
            # A typed, unset string array (an empty default has no type): unset = all objects.
            given = _overrides(node).get(name)
            if given is not None and not (isinstance(given.value, list)
                                          and all(isinstance(v, str) for v in given.value)):
                raise SetupError(name, f"{given.value!r} is not a list of object ids",
                                 'give e.g. active_objects:="[mug, box]"')
            node.declare_parameter(name, Parameter.Type.STRING_ARRAY, ParameterDescriptor(description=desc))
            try:
                values[name] = list(node.get_parameter(name).value or [])
            except ParameterUninitializedException:
                values[name] = []
        else:
            values[name] = _declare(node, name, default, rng, desc)
        reason = check_node_value(name, values[name])
        if reason:
            raise SetupError(name, reason)
    if ro["image_transport"] not in IMAGE_TRANSPORTS:
        raise SetupError("image_transport", f"{ro['image_transport']!r} is not supported", "use raw or compressed")
    try:
        config = base.replace(**pipeline, device=ro["device"], dtype=ro["dtype"], compile=ro["compile"],
                              cuda_graphs=ro["cuda_graphs"])
    except ValueError as exc:
        setting = str(exc).split("=", 1)[0]
        raise SetupError(setting if setting in READ_ONLY or setting in PIPELINE_PARAMS else "pipeline",
                         str(exc)) from None
    resolve_device(config.device)  # before any file is read: an unusable device is the first thing to say
    return Declared(pipeline, values, ro, config)


def builtin_error(exc) -> SetupError:
    """A SetupError for a parameter rclpy itself rejects while the node is built (use_sim_time:=maybe)."""
    text = str(exc)
    problem, _, name = text.rpartition(": ")
    if name == "use_sim_time":
        return SetupError(name, problem or text, "give use_sim_time:=true or use_sim_time:=false")
    return SetupError(name or "parameters", problem or text, "see the parameter's description (ros2 param describe)")


def check_builtin(node) -> None:
    """rclpy only logs (or ignores) a use_sim_time that is not true/false; refuse it instead."""
    from rclpy.parameter import Parameter

    p = node.get_parameter("use_sim_time")
    if p.type_ != Parameter.Type.BOOL:
        raise SetupError("use_sim_time", f"{p.value!r} is not true or false",
                         "give use_sim_time:=true or use_sim_time:=false")


def unknown_overrides(node) -> list[str]:
    """Names given in a parameter file or on the command line that this node does not have (typos)."""
    return sorted(n for n in _overrides(node) if not node.has_parameter(n) and not n.startswith(_ROS_OWN))


def check_node_value(name: str, value: Any) -> str | None:
    """Reason to reject a node (non-pipeline) parameter value, or None."""
    if name == "label_encoding" and value not in LABEL_ENCODINGS:
        return f"label_encoding must be one of {', '.join(LABEL_ENCODINGS)}, got {value!r}"
    return None
