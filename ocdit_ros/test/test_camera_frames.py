"""Camera-sized frames (640x480, 1280x720 rgb8) reach the node and are answered, one by one.

Three processes, as on a robot: the node, started the way segment.launch.py starts it (the
installed config/ocdit.yaml as parameter file, FASTDDS_DEFAULT_PROFILES_FILE set to the shipped
profile), and a camera process (test/camera_client.py) that publishes and listens for the answers.
A reliable camera needs nothing; a best-effort camera needs the shipped profile in its own process
(the publisher's shared-memory segment is the one that counts). Without either, most frames of
these sizes are lost in DDS on this machine (measured: 0-9 of 20 at 640x480).

The tiny random model keeps each answer fast; only the counts matter here.
"""

import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="ROS 2 is set up by `make test`")
from ros_processes import RunningNode, camera, clean_env, make_templates, node_args  # noqa: E402

SHARE = Path(sys.prefix) / "share" / "ocdit_ros"  # the installed layout (make)
BIN = Path(sys.executable).parent
PROFILE = SHARE / "config" / "fastdds_large_frames.xml"
SIZES = ["640x480", "1280x720"]
FRAMES = 5
NAMESPACE = "/frames_test"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    assert (SHARE / "config" / "ocdit.yaml").is_file() and PROFILE.is_file(), "run `make venv` first"
    tmp = tmp_path_factory.mktemp("frames")
    cmd = [str(BIN / "segment_node"), *node_args(SHARE / "config" / "ocdit.yaml", make_templates(tmp), NAMESPACE)]
    running = RunningNode(cmd, clean_env(FASTDDS_DEFAULT_PROFILES_FILE=str(PROFILE)), tmp / "node.log")
    yield running
    running.stop()


def test_reliable_camera_every_frame_answered(node):
    got = camera([sys.executable], "reliable", NAMESPACE, SIZES, FRAMES, clean_env())
    assert got == {size: [FRAMES, FRAMES] for size in SIZES}, node.log.read_text()[-2000:]


def test_best_effort_camera_with_the_shipped_profile_every_frame_answered(node):
    env = clean_env(FASTDDS_DEFAULT_PROFILES_FILE=str(PROFILE))
    got = camera([sys.executable], "best_effort", NAMESPACE, SIZES, FRAMES, env)
    assert got == {size: [FRAMES, FRAMES] for size in SIZES}, node.log.read_text()[-2000:]
    assert "now subscribed best_effort" in node.log.read_text()
