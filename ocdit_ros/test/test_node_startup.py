"""Start-up errors of the real node process: one FATAL line naming the parameter and the fix,
exit status 2, no traceback. Each case starts `python -m ocdit_ros.segment_node --ros-args ...`
exactly as a user (or `ros2 run`) would.
"""

import subprocess
import sys

import pytest

pytest.importorskip("rclpy", reason="ROS 2 is set up by `make test`")

TIMEOUT = 120


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("startup")
    (d / "garbage.safetensors").write_bytes(b"this is not a safetensors file at all" * 10)
    (d / "empty_weights_dir").mkdir()
    (d / "a_file").write_text("x")
    (d / "bad.yaml").write_text("ocdit:\n  ros__parameters:\n    weights: [unclosed\n")
    (d / "string.yaml").write_text("just a string\n")
    (d / "pipeline_bad.yaml").write_text("coarse:\n  ensemble: 0\n")
    (d / "pipeline_typo.yaml").write_text("score_treshold: 0.4\n")
    tpl = d / "tpl"
    tpl.mkdir()
    import trimesh

    from ocdit_ros.templates import RenderSettings, render_or_load

    box = trimesh.creation.box(extents=(0.1, 0.06, 0.04))
    box.export(d / "box.ply")
    render_or_load(d / "box.ply", tpl, RenderSettings(views=6, template_size=42, render_size=64))
    return d


def start(*ros_args):
    """Run the node with these ROS arguments; it must exit by itself (status, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "ocdit_ros.segment_node", "--ros-args", *ros_args],
                          capture_output=True, text=True, timeout=TIMEOUT)
    return proc.returncode, proc.stdout + proc.stderr


def _cuda_available():
    import torch

    return torch.cuda.is_available()


# (ROS arguments with {d} for the fixture folder, text the one FATAL line must contain)
CASES = {
    "weights missing": (["-p", "weights:={d}/nope.safetensors"], ["parameter 'weights'", "does not exist"]),
    "weights not a model file": (["-p", "weights:={d}/garbage.safetensors"], ["parameter 'weights'", "cannot read"]),
    "weights folder without model": (["-p", "weights:={d}/empty_weights_dir"],
                                     ["parameter 'weights'", "holds neither"]),
    "refine weights missing": (["-p", "refine_weights:={d}/nope.safetensors"],
                               ["parameter 'refine_weights'", "does not exist"]),
    "templates folder missing": (["-p", "model_config:=tiny", "-p", "templates_dir:={d}/no_such_dir"],
                                 ["parameter 'templates_dir'", "does not exist", "add_object"]),
    "templates folder is a file": (["-p", "model_config:=tiny", "-p", "templates_dir:={d}/a_file"],
                                   ["parameter 'templates_dir'", "is not a folder"]),
    "unknown device": (["-p", "device:=tpu"], ["parameter 'device'", "is not a torch device", "use cpu"]),
    "invalid dtype": (["-p", "dtype:=int8"], ["parameter 'dtype'", "float32"]),
    "unknown model config": (["-p", "model_config:=huge"], ["parameter 'model_config'", "preset"]),
    "wrong type": (["-p", "coarse.ensemble:=two"], ["parameter 'coarse.ensemble'", "takes an integer"]),
    "out of range": (["-p", "coarse.ensemble:=100"], ["parameter 'coarse.ensemble'", "outside [1, 64]"]),
    "float out of range": (["-p", "score_threshold:=1.5"], ["parameter 'score_threshold'", "outside [0.0, 1.0]"]),
    "bool expected": (["-p", "refine_enabled:=maybe"], ["parameter 'refine_enabled'", "takes true/false"]),
    "use_sim_time not a bool": (["-p", "use_sim_time:=maybe"], ["parameter 'use_sim_time'", "use_sim_time:=true"]),
    "bad label encoding": (["-p", "label_encoding:=jpeg"], ["parameter 'label_encoding'", "mono16"]),
    "bad image transport": (["-p", "image_transport:=ftp"], ["parameter 'image_transport'", "raw or compressed"]),
    "unknown active object": (["-p", "model_config:=tiny", "-p", "templates_dir:={d}/tpl",
                               "-p", "active_objects:=[mug]"],
                              ["parameter 'active_objects'", "unknown objects ['mug']"]),
    "feature cache is a file": (["-p", "feature_cache_dir:={d}/bad.yaml"],
                                ["parameter 'feature_cache_dir'", "is a file, not a folder"]),
    "params file missing": (["--params-file", "{d}/nope.yaml"], ["--params-file", "does not exist"]),
    "params file not YAML": (["--params-file", "{d}/bad.yaml"], ["--params-file", "not valid YAML"]),
    "params file not a mapping": (["--params-file", "{d}/string.yaml"], ["--params-file", "not a mapping"]),
    "pipeline config missing": (["-p", "pipeline_config:={d}/nope.yaml"],
                                ["parameter 'pipeline_config'", "does not exist"]),
    "pipeline config value out of range": (["-p", "pipeline_config:={d}/pipeline_bad.yaml"],
                                           ["parameter 'pipeline_config'", "coarse.ensemble=0"]),
    "pipeline config typo": (["-p", "pipeline_config:={d}/pipeline_typo.yaml"],
                             ["parameter 'pipeline_config'", "score_treshold"]),
}
if not _cuda_available():  # the decision documented in the README: refused, no silent CPU fallback
    CASES["cuda unavailable"] = (["-p", "device:=cuda"], ["parameter 'device'", "is not available", "cpu"])


@pytest.mark.parametrize("case", sorted(CASES))
def test_misconfiguration_exits_2_with_one_clear_line(files, case):
    args, expected = CASES[case]
    status, out = start(*(a.format(d=files) for a in args))
    assert status == 2, out
    assert "Traceback" not in out, out
    fatal = [line for line in out.splitlines() if "FATAL" in line]
    assert len(fatal) == 1 and "cannot start" in fatal[0], out
    for text in expected:
        assert text in fatal[0], (text, fatal[0])
    assert "[ERROR]" not in out, out  # no second, lower-level account of the same problem


def test_integer_for_a_float_parameter_is_accepted_and_unknown_names_are_reported(files, capfd):
    """`-p score_threshold:=1` means 1.0 (YAML has no float syntax for it), and a misspelt name
    is reported instead of silently ignored."""
    import rclpy
    from rclpy.parameter import Parameter

    from ocdit_ros.pipeline import PipelineConfig
    from ocdit_ros.ros.node import SegmentNode

    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    try:
        node = SegmentNode(context=ctx, parameter_overrides=[
            Parameter("model_config", value="tiny"), Parameter("templates_dir", value=str(files / "tpl")),
            Parameter("score_threshold", value=1), Parameter("coarse.ensembel", value=2)])
        try:
            assert node.config.score_threshold == 1.0 and isinstance(node.get_parameter("score_threshold").value, float)
            assert node.config.coarse.ensemble == PipelineConfig().coarse.ensemble != 2  # the typo set nothing
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=ctx)
    err = capfd.readouterr().err
    assert "'coarse.ensembel' is given but this node has no such parameter" in err


def test_shipped_parameter_file_with_the_node_starts(files, tmp_path):
    """The positive control of the cases above: the same process starts with a valid set and
    stays up until interrupted (Ctrl-C exits 0, no traceback)."""
    import signal
    import time

    from pathlib import Path

    cfg = Path(__file__).resolve().parents[1] / "config" / "ocdit.yaml"
    proc = subprocess.Popen([sys.executable, "-m", "ocdit_ros.segment_node", "--ros-args", "--params-file", str(cfg),
                             "-p", "model_config:=tiny", "-p", f"templates_dir:={files / 'tpl'}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = ""
    try:
        deadline = time.monotonic() + TIMEOUT
        while "ready:" not in out:
            assert time.monotonic() < deadline and proc.poll() is None, out
            out += proc.stdout.readline()
        time.sleep(3)  # "ready" is logged just before the constructor returns and spinning starts
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    out += rest
    assert proc.returncode == 0 and "Traceback" not in out, out
    assert "FATAL" not in out and "[ERROR]" not in out, out
