"""Both ROS packages are well-formed and the ML core imports without ROS."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("pkg,build_type", [("ocdit_ros", "ament_python"), ("ocdit_msgs", "ament_cmake")])
def test_package_xml(pkg, build_type):
    parse_package = pytest.importorskip("catkin_pkg.package").parse_package
    p = parse_package(str(ROOT / pkg))
    assert p.package_format == 3 and p.name == pkg
    assert [e.content for e in p.exports if e.tagname == "build_type"] == [build_type]
    if pkg == "ocdit_msgs":
        assert "rosidl_interface_packages" in [g.name for g in p.member_of_groups]


def test_ml_core_imports_without_ros_or_torch_side_effects():
    code = ("import sys, ocdit_ros, ocdit_ros.model, ocdit_ros.pipeline; "
            "print('rclpy' in sys.modules, 'sensor_msgs' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
    code = "import sys, ocdit_ros; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_console_script_reports_version():
    exe = Path(sys.executable).parent / "ocdit"
    assert exe.is_file(), "ocdit console script missing from the venv"
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "ocdit 0.1.0"


def test_ros_layout_files_exist():
    for rel in ["ocdit_ros/resource/ocdit_ros", "ocdit_ros/setup.cfg", "ocdit_msgs/CMakeLists.txt",
                "ocdit_msgs/msg/Instance.msg", "ocdit_msgs/msg/InstanceArray.msg", ".ci/run", "Makefile"]:
        assert (ROOT / rel).exists(), rel
