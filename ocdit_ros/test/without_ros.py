"""`python without_ros.py -m MODULE ARGS...` (or `- < script`): run with the packages the lent GPU
machine lacks (ROS, pybullet, trimesh, pycocotools, rosbags) unimportable, so a test on this
machine shows that the GPU path does not need them."""

import importlib.abc
import runpy
import sys

MISSING_ON_THE_GPU = ("rclpy", "rosidl_runtime_py", "ocdit_msgs", "vision_msgs", "sensor_msgs", "cv_bridge",
                      "pybullet", "pybullet_data", "trimesh", "pycocotools", "rosbags")


class _Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in MISSING_ON_THE_GPU:
            raise ModuleNotFoundError(f"No module named {name!r} (not installed on the GPU machine)")
        return None


sys.meta_path.insert(0, _Missing())
if sys.argv[1] == "-m":
    module, sys.argv = sys.argv[2], [sys.argv[2], *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
elif sys.argv[1] == "-":
    sys.argv = sys.argv[1:]
    exec(compile(sys.stdin.read(), "<stdin>", "exec"), {"__name__": "__main__"})
else:
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")
