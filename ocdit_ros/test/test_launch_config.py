"""config/ocdit.yaml and launch/segment.launch.py, as far as this machine allows.

There is no `launch`/`launch_ros` here, so the launch file is checked statically (syntax, its
arguments, the executable it starts); the parameter file is loaded by a real node through
`--ros-args --params-file`, exactly as `ros2 launch` passes it.
"""

import ast
import re
from pathlib import Path

import pytest
import yaml

from ocdit_ros.pipeline import PipelineConfig
from ocdit_ros.ros.parameters import NODE_PARAMS, PIPELINE_PARAMS, READ_ONLY, pipeline_range

PKG = Path(__file__).resolve().parents[1]


def _config_file():
    """config/ocdit.yaml's parameters, and the commented-out pipeline lines ("# name: value")."""
    text = (PKG / "config" / "ocdit.yaml").read_text()
    params = yaml.safe_load(text)["/**"]["ros__parameters"]
    commented = {}
    for line in text.splitlines():
        m = re.match(r"\s*# ([a-z_.]+): (\S+)", line)
        if m and m.group(1) in PIPELINE_PARAMS:
            commented[m.group(1)] = yaml.safe_load(m.group(2))
    return params, commented


def test_config_lists_every_parameter_with_valid_defaults():
    params, commented = _config_file()
    # active_objects is documented as a comment: unset = all
    assert set(params) == (set(NODE_PARAMS) | set(READ_ONLY)) - {"active_objects"}
    for name, (default, rng, _) in NODE_PARAMS.items():
        if name in params:
            assert type(params[name]) is type(default) and params[name] == default, name
            if rng:
                assert rng[0] <= params[name] <= rng[1], name
    for name, (default, _) in READ_ONLY.items():
        assert params[name] == getattr(PipelineConfig(), name, default), name


def test_every_pipeline_setting_is_a_parameter_and_the_file_shows_its_default():
    defaults = PipelineConfig().to_flat_dict()
    read_only = {"device", "dtype", "compile", "cuda_graphs"}  # fixed when the model is built
    assert set(PIPELINE_PARAMS) | read_only == set(defaults) and not read_only & set(PIPELINE_PARAMS)
    _, commented = _config_file()
    assert set(commented) == set(PIPELINE_PARAMS)
    for name, value in commented.items():
        assert value == defaults[name] and type(value) is type(defaults[name]), name
        rng = pipeline_range(name)
        assert rng is None or rng[0] <= value <= rng[1], name


def test_launch_file_declares_the_documented_arguments():
    src = (PKG / "launch" / "segment.launch.py").read_text()
    tree = ast.parse(src)
    declared = [node.args[0].value for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "DeclareLaunchArgument"]
    assert declared == ["camera_topic", "config", "weights", "templates_dir", "device", "namespace", "use_sim_time",
                        "lifecycle", "dds_profile"]
    assert ('"segment_lifecycle_node" if lifecycle else "segment_node"' in src
            and '("image", get("camera_topic"))' in src)
    assert "(LifecycleNode if lifecycle else Node)(" in src
    assert 'additional_env={"FASTDDS_DEFAULT_PROFILES_FILE": profile}' in src
    assert '"config", "fastdds_large_frames.xml"' in src
    setup = (PKG / "setup.py").read_text()
    assert "segment_node = ocdit_ros.segment_node:main" in setup
    assert "segment_lifecycle_node = ocdit_ros.segment_lifecycle_node:main" in setup


def test_node_reads_the_parameter_file(tmp_path):
    rclpy = pytest.importorskip("rclpy")
    import numpy as np
    import trimesh

    from ocdit_ros.ros.node import SegmentNode
    from ocdit_ros.templates import RenderSettings, render_or_load

    box = trimesh.creation.box(extents=(0.1, 0.06, 0.04))
    box.export(tmp_path / "box.ply")
    render_or_load(tmp_path / "box.ply", tmp_path / "tpl", RenderSettings(views=12, template_size=42, render_size=96))
    params = yaml.safe_load((PKG / "config" / "ocdit.yaml").read_text())
    params["/**"]["ros__parameters"].update({"model_config": "tiny", "templates_dir": str(tmp_path / "tpl"),
                                             "coarse.ensemble": 3, "score_threshold": 0.25})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx, args=["--ros-args", "--params-file", str(path)])
    try:
        node = SegmentNode(context=ctx)
        assert node.config.coarse.ensemble == 3 and node.config.score_threshold == 0.25
        assert node.get_parameter("label_encoding").value == "mono16"
        assert np.isclose(node.get_parameter("coarse.rho").value, 9.0)
        node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)


def test_shipped_dds_profile_has_a_large_shared_memory_segment():
    """The profile for camera-sized frames (its effect is measured in test_camera_frames.py)."""
    import xml.etree.ElementTree as ET

    ns = {"d": "http://www.eprosima.com"}
    root = ET.parse(PKG / "config" / "fastdds_large_frames.xml").getroot()
    transports = {t.findtext("d:transport_id", namespaces=ns): t
                  for t in root.iterfind(".//d:transport_descriptor", ns)}
    kinds = {t.findtext("d:type", namespaces=ns) for t in transports.values()}
    assert kinds == {"SHM", "UDPv4"}  # the built-in pair, so other machines still connect
    shm = next(t for t in transports.values() if t.findtext("d:type", namespaces=ns) == "SHM")
    assert int(shm.findtext("d:segment_size", namespaces=ns)) >= 1280 * 720 * 3 * 4
    participant = root.find(".//d:participant", ns)
    assert participant.get("is_default_profile") == "true"
    assert participant.findtext(".//d:useBuiltinTransports", namespaces=ns) == "false"
    used = [t.text for t in participant.iterfind(".//d:userTransports/d:transport_id", ns)]
    assert sorted(used) == sorted(transports)
