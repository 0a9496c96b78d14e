"""Starting and serving a node process: one-line start-up errors, --params-file checks, Ctrl-C.

Shared by the plain node (node.py) and the lifecycle node (lifecycle.py).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import rclpy
from rclpy.exceptions import InvalidHandle

from ..pipeline.build import SetupError


def start(node_class, args=None):
    """rclpy.init + the node, or (None, exit status 2) after one FATAL line naming what to fix."""
    problem = check_params_files(sys.argv if args is None else args)
    if problem:
        print(f"[FATAL] [ocdit]: cannot start: {problem}", file=sys.stderr)
        return None, 2
    try:
        rclpy.init(args=args)
    except Exception as exc:  # noqa: BLE001 - rclpy raises RCLError for bad --ros-args / --params-file
        detail = " ".join(str(exc).split())
        print(f"[FATAL] [ocdit]: cannot start: the ROS arguments are invalid ({detail}); check --params-file "
              "(a YAML file with <node name or /**>: ros__parameters: {...}) and -p name:=value", file=sys.stderr)
        return None, 2
    try:
        return node_class(), 0
    except SetupError as exc:
        message = exc.render(f"parameter '{exc.setting}'")
    except KeyboardInterrupt:
        rclpy.try_shutdown()
        return None, 130
    rclpy.logging.get_logger("ocdit").fatal(f"cannot start: {message}")
    rclpy.try_shutdown()
    return None, 2


def check_params_files(argv) -> str | None:
    """Why a --params-file cannot be used, or None. rcl accepts some broken files silently (a
    plain string) and reports others in two lines of parser internals; this says it in one."""
    import yaml

    for flag, value in zip(argv, argv[1:]):
        if flag != "--params-file":
            continue
        path = Path(value).expanduser()
        fix = "give a YAML file like config/ocdit.yaml: <node name or /**>: ros__parameters: {name: value}"
        if not path.is_file():
            return f"--params-file {value} does not exist; {fix}"
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            return f"--params-file {value} is not valid YAML ({' '.join(str(exc).split())}); {fix}"
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            return f"--params-file {value} is not a mapping of node names to ros__parameters; {fix}"
    return None


def run_executor(executor, until=None) -> None:
    """executor.spin() (or spin_until_future_complete(until)), kept alive through rclpy's
    destroy-while-waiting race.

    rclpy (Kilted's included, ros2/rclpy#1284) lists a node's waitables before entering them, so
    the event handler of a subscription destroyed by another thread in between (our image
    subscription is recreated by a timer, a lifecycle deactivation drops subscriptions) raises
    InvalidHandle while the wait set is built, and spin() ends: a node that no longer answers
    anything. The next wait set no longer lists the destroyed entity, so spinning on is safe.
    """
    while executor.context.ok():
        try:
            if until is None:
                executor.spin()
            else:
                executor.spin_until_future_complete(until)
            return
        except InvalidHandle:
            continue


def spin(node, until=None) -> None:
    """Serve `node` (until the future `until` completes, if given); Ctrl-C ends it quietly."""
    executor = rclpy.executors.MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        run_executor(executor, until)
        if until is not None:
            time.sleep(0.5)  # a shutdown service's response is still being sent by an executor thread
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    except Exception:
        # Ctrl-C between two waits: rclpy's handler has already shut the context down and the
        # executor fails to build its wait set (RCLError) instead of raising the exception above.
        if executor.context.ok():
            raise
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
