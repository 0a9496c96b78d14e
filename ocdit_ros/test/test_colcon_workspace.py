"""The repository builds in a ROS 2 workspace with the real colcon, and works from the install space.

As a ROS user would: both packages under a workspace's src/, `colcon build` (and, in a second
workspace, `colcon build --symlink-install`), then, in bash, `source install/setup.bash` and:
`ocdit_msgs` imports from the install space, the package's share directory is where the ament
index says and a walk that does not follow folder links (as `ros2 launch` does) finds the launch
and parameter files, and the installed `segment_node` (what `ros2 run ocdit_ros segment_node`
runs) starts with the installed parameter file and answers an image.

The underlay is the venv (`AMENT_PREFIX_PATH=.venv`, its bin/ on PATH), standing in for a sourced
/opt/ros/kilted. The venv also holds make's own build of ocdit_msgs; the sourced PYTHONPATH puts
the workspace's first (checked below), but the ROS wheels' start-up hook orders LD_LIBRARY_PATH
arbitrarily, so the message C libraries may load from either copy (both are built from the same
files). Each build takes 0.5-3 minutes on 2 cores: one per workspace, shared by its tests.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="ROS 2 is set up by `make test`")
from ros_processes import RunningNode, camera, clean_env, make_templates, node_args  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)
COLCON = VENV / "bin" / "colcon"
PACKAGES = ("ocdit_msgs", "ocdit_ros")
SKIP = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache", "build", "install", "log")


def underlay_env() -> dict:
    """The environment before `source install/setup.bash`: the venv as the ROS underlay."""
    return clean_env(AMENT_PREFIX_PATH=str(VENV), CMAKE_PREFIX_PATH=str(VENV),
                     PATH=f"{VENV / 'bin'}{os.pathsep}{os.environ['PATH']}")


def sourced(ws: Path, *cmd) -> list:
    """`cmd` run by bash after sourcing the workspace's install/setup.bash."""
    return ["bash", "-c", 'source "$0/install/setup.bash" && exec "$@"', str(ws), *map(str, cmd)]


@pytest.fixture(scope="module", params=["build", "symlink-install"])
def workspace(request, tmp_path_factory):
    ws = tmp_path_factory.mktemp(f"ws_{request.param}")
    for pkg in PACKAGES:  # the checkout as it is now, without its build outputs
        shutil.copytree(ROOT / pkg, ws / "src" / "ocdit" / pkg, ignore=SKIP, symlinks=True)
    cmd = [str(COLCON), "build", "--base-paths", "src", "--event-handlers", "console_direct+",
           "--cmake-args", "-DBUILD_TESTING=OFF", f"-DPython3_EXECUTABLE={VENV / 'bin' / 'python'}"]
    if request.param == "symlink-install":
        cmd.insert(2, "--symlink-install")
    out = subprocess.run(cmd, cwd=ws, env=underlay_env(), capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-4000:]}\n{out.stderr[-2000:]}"
    assert (ws / "install" / "setup.bash").is_file()
    yield ws
    shutil.rmtree(ws, ignore_errors=True)  # ~60 MB of build outputs each; pytest keeps old tmp dirs


PROBE = """
import json, os, sys
from pathlib import Path
from ament_index_python.packages import get_package_prefix, get_package_share_directory
from rclpy.serialization import deserialize_message, serialize_message
import ocdit_msgs, ocdit_ros
from ocdit_msgs.msg import Instance, InstanceArray
from ocdit_msgs.srv import AddObject, ListObjects

msg = InstanceArray(instances=[Instance(object_id="box", score=0.5)])
back = deserialize_message(serialize_message(msg), InstanceArray)
share = Path(get_package_share_directory("ocdit_ros"))
print(json.dumps({
    "ocdit_msgs": ocdit_msgs.__file__, "ocdit_ros": ocdit_ros.__file__,
    "round_trip": [back.instances[0].object_id, back.instances[0].score],
    "share": str(share), "msgs_share": get_package_share_directory("ocdit_msgs"),
    "prefix": get_package_prefix("ocdit_ros"),
    "walk": sorted(str((Path(d) / f).relative_to(share)) for d, _, fs in os.walk(share) for f in fs),
}))
"""


def test_install_space_has_messages_and_walkable_share_dir(workspace):
    install = workspace / "install"
    out = subprocess.run(sourced(workspace, "python", "-c", PROBE), cwd="/", env=underlay_env(),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["round_trip"] == ["box", 0.5]
    # Imported from this workspace, not from the venv or the checkout.
    assert got["ocdit_msgs"].startswith(str(install / "ocdit_msgs")), got["ocdit_msgs"]
    assert str(Path(got["ocdit_ros"]).resolve()).startswith(str(workspace)), got["ocdit_ros"]
    assert got["share"] == str(install / "ocdit_ros" / "share" / "ocdit_ros")
    assert got["msgs_share"] == str(install / "ocdit_msgs" / "share" / "ocdit_msgs")
    assert got["prefix"] == str(install / "ocdit_ros")
    # What `ros2 launch ocdit_ros segment.launch.py` and the launch file's defaults look for.
    assert {"launch/segment.launch.py", "config/ocdit.yaml", "config/fastdds_large_frames.xml",
            "package.xml"} <= set(got["walk"])


def test_installed_node_answers_an_image(workspace, tmp_path):
    share = workspace / "install" / "ocdit_ros" / "share" / "ocdit_ros"
    exe = workspace / "install" / "ocdit_ros" / "lib" / "ocdit_ros" / "segment_node"  # where `ros2 run` looks
    assert os.access(exe, os.X_OK)
    ns = "/ws_test"
    env = underlay_env()
    args = node_args(share / "config" / "ocdit.yaml", make_templates(tmp_path), ns)
    node = RunningNode(sourced(workspace, exe, *args), env, tmp_path / "node.log")
    try:
        got = camera(sourced(workspace, "python"), "reliable", ns, ["160x120"], 1, env)
        assert got == {"160x120": [1, 1]}, node.log.read_text()[-2000:]
    finally:
        node.stop()
    assert "ready: 1 objects ['box']" in node.log.read_text()
