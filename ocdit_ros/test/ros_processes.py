"""Helpers for tests that run the node and a camera as separate processes (not a test module).

The node is started the way segment.launch.py starts it: the package's parameter file, then
overrides (here: the tiny random model and small ensembles, so answers come fast on 2 cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FAST = {"model_config": "tiny", "coarse.ensemble": 1, "coarse.num_steps": 2, "refine.ensemble": 1,
        "refine.augmentations": 1, "refine.num_steps": 2}
# Variables of the environment a test runs in that must not leak into a process with another set-up:
# the wheels' start-up guard (with it, a fresh interpreter skips setting its library path) and
# what a sourced workspace sets.
NOT_INHERITED = ("_ROS_WHEELS_BOOTSTRAP_COMPLETE", "LD_LIBRARY_PATH", "PYTHONPATH", "AMENT_PREFIX_PATH",
                 "CMAKE_PREFIX_PATH", "COLCON_PREFIX_PATH", "FASTDDS_DEFAULT_PROFILES_FILE")


def wait_for(cond, what, timeout=30.0):
    """Poll `cond` until it is true; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    env.update(extra)
    return env


def make_templates(d: Path) -> Path:
    """One rendered box object (12 views) in `d`."""
    import trimesh

    from ocdit_ros.templates import RenderSettings, render_or_load

    mesh = trimesh.creation.box(extents=(0.1, 0.06, 0.04))
    mesh.visual.face_colors = np.tile([200, 40, 40, 255], (len(mesh.faces), 1))
    mesh.export(d / "box.ply")
    render_or_load(d / "box.ply", d, RenderSettings(views=12, template_size=42, render_size=96))
    return d


def node_args(params_file, templates_dir, namespace) -> list:
    """The node's ROS arguments: the parameter file first, then the overrides (as launch does)."""
    args = ["--ros-args", "-r", f"__ns:={namespace}", "--params-file", str(params_file),
            "-p", f"templates_dir:={templates_dir}"]
    for name, value in FAST.items():
        args += ["-p", f"{name}:={value}"]
    return args


class RunningNode:
    """A node process; ready once it logged `ready:`. `log` is its combined output."""

    def __init__(self, cmd, env, log: Path, timeout=180.0):
        self.log = log
        self.proc = subprocess.Popen(cmd, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
        end = time.monotonic() + timeout
        while "ready:" not in log.read_text():
            if self.proc.poll() is not None:
                raise AssertionError(f"node exited with {self.proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > end:
                self.stop()
                raise AssertionError(f"node not ready after {timeout} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def camera(prefix, reliability, namespace, sizes, frames, env, timeout=20.0) -> dict:
    """Runs camera_client.py after the command `prefix` (e.g. [python]); {size: [answered, sent]}."""
    cmd = [*map(str, prefix), str(HERE / "camera_client.py"), reliability, namespace, *sizes,
           "--frames", str(frames), "--timeout", str(timeout)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    assert out.returncode == 0 and lines, f"camera client failed:\n{out.stdout}\n{out.stderr[-3000:]}"
    return json.loads(lines[-1])
