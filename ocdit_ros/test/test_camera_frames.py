"""Camera-sized frames (640x480, 1280x720 rgb8) reach the node and are answered, one by one.

Three processes, as on a robot: the node, started the way segment.launch.py starts it (the
installed config/ocdit.yaml as parameter file, FASTDDS_DEFAULT_PROFILES_FILE set to the shipped
profile), and a camera process (test/camera_client.py) that publishes and listens for the answers.
A reliable camera needs nothing; a best-effort camera needs the shipped profile in its own process
(the publisher's shared-memory segment is the one that counts). Without either, most frames of
these sizes are lost in DDS on this machine (measured: 0-9 of 20 at 640x480).

The tiny random model keeps each answer fast; only the counts matter here.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 is set up by `make test`")
import trimesh  # noqa: E402

from ocdit_ros.templates import RenderSettings, render_or_load  # noqa: E402

HERE = Path(__file__).resolve().parent
SHARE = Path(sys.prefix) / "share" / "ocdit_ros"  # the installed layout (make / colcon)
BIN = Path(sys.executable).parent
PROFILE = SHARE / "config" / "fastdds_large_frames.xml"
SIZES = ["640x480", "1280x720"]
FRAMES = 5
NAMESPACE = "/frames_test"
# Kept small so each answer takes well under a second on 2 CPU cores.
FAST = {"model_config": "tiny", "coarse.ensemble": 1, "coarse.num_steps": 2, "refine.ensemble": 1,
        "refine.augmentations": 1, "refine.num_steps": 2}


def node_command(segment_node, params_file, templates_dir, namespace):
    """What segment.launch.py runs: the parameter file, then the launch overrides."""
    cmd = [str(segment_node), "--ros-args", "-r", f"__ns:={namespace}", "--params-file", str(params_file),
           "-p", f"templates_dir:={templates_dir}"]
    for name, value in FAST.items():
        cmd += ["-p", f"{name}:={value}"]
    return cmd


def make_templates(d: Path) -> Path:
    mesh = trimesh.creation.box(extents=(0.1, 0.06, 0.04))
    mesh.visual.face_colors = np.tile([200, 40, 40, 255], (len(mesh.faces), 1))
    mesh.export(d / "box.ply")
    render_or_load(d / "box.ply", d, RenderSettings(views=12, template_size=42, render_size=96))
    return d


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "FASTDDS_DEFAULT_PROFILES_FILE"}
    env.update(extra)
    return env


def camera(python, reliability, namespace, env, cwd=HERE, timeout=20.0):
    """Runs camera_client.py; returns {size: [answered, sent]}."""
    cmd = [str(python), str(HERE / "camera_client.py"), reliability, namespace, *SIZES, "--frames", str(FRAMES),
           "--timeout", str(timeout)]
    out = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    assert out.returncode == 0 and lines, f"camera client failed:\n{out.stdout}\n{out.stderr[-3000:]}"
    return json.loads(lines[-1])


class RunningNode:
    def __init__(self, cmd, env, log: Path):
        self.log = log
        self.proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
        end = time.monotonic() + 120
        while "ready:" not in log.read_text():
            assert self.proc.poll() is None, f"node exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < end, f"node not ready:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    assert (SHARE / "config" / "ocdit.yaml").is_file() and PROFILE.is_file(), "run `make venv` first"
    tmp = tmp_path_factory.mktemp("frames")
    tpl = make_templates(tmp)
    running = RunningNode(node_command(BIN / "segment_node", SHARE / "config" / "ocdit.yaml", tpl, NAMESPACE),
                          clean_env(FASTDDS_DEFAULT_PROFILES_FILE=str(PROFILE)), tmp / "node.log")
    yield running
    running.stop()


def test_reliable_camera_every_frame_answered(node):
    got = camera(sys.executable, "reliable", NAMESPACE, clean_env())
    assert got == {size: [FRAMES, FRAMES] for size in SIZES}, node.log.read_text()[-2000:]


def test_best_effort_camera_with_the_shipped_profile_every_frame_answered(node):
    got = camera(sys.executable, "best_effort", NAMESPACE, clean_env(FASTDDS_DEFAULT_PROFILES_FILE=str(PROFILE)))
    assert got == {size: [FRAMES, FRAMES] for size in SIZES}, node.log.read_text()[-2000:]
    assert "now subscribed best_effort" in node.log.read_text()
