"""Both ROS packages are well-formed, `import ocdit_ros` stays light, and the install is usable.

These run in the venv `make test` sets up (sys.prefix is that venv).
"""

import ast
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import ocdit_ros

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.mark.parametrize("pkg,build_type", [("ocdit_ros", "ament_python"), ("ocdit_msgs", "ament_cmake")])
def test_package_xml(pkg, build_type):
    from catkin_pkg.package import parse_package

    p = parse_package(str(ROOT / pkg))  # validates against the format's rules
    assert p.package_format == 3 and p.name == pkg
    assert p.version == ocdit_ros.__version__
    assert [e.content for e in p.exports if e.tagname == "build_type"] == [build_type]
    if pkg == "ocdit_ros":
        assert {d.name for d in p.exec_depends} >= {"rclpy", "std_msgs", "sensor_msgs", "ocdit_msgs"}
        assert "python3-pytest" in {d.name for d in p.test_depends}
    else:
        assert "rosidl_interface_packages" in [g.name for g in p.member_of_groups]
        assert {d.name for d in p.buildtool_depends} == {"ament_cmake", "rosidl_default_generators"}
        assert {d.name for d in p.build_depends} >= {"std_msgs", "sensor_msgs"}
        assert "rosidl_default_runtime" in {d.name for d in p.exec_depends}


def _modules_after(code: str) -> set:
    """Names in sys.modules after running `code` in a fresh interpreter."""
    out = subprocess.run([sys.executable, "-c", code + "; import sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_import_ocdit_ros_pulls_in_neither_ros_nor_torch():
    mods = _modules_after("import ocdit_ros")
    assert not {"rclpy", "torch", "sensor_msgs", "ocdit_msgs"} & mods


def test_ml_core_does_not_import_ros():
    mods = _modules_after("import ocdit_ros.model, ocdit_ros.pipeline")
    assert "torch" in mods  # the check itself works
    assert not {"rclpy", "sensor_msgs", "ocdit_msgs"} & mods


def test_console_script_in_venv_reports_version():
    exe = BIN / "ocdit"
    assert exe.is_file(), f"ocdit console script missing from {BIN}"
    out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"ocdit {ocdit_ros.__version__}"


def test_python_m_from_repo_root_gets_the_real_package():
    """The ROS package directory ocdit_ros/ must not shadow the Python package (see setup.py)."""
    out = subprocess.run([sys.executable, "-m", "ocdit_ros.cli", "--version"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"ocdit {ocdit_ros.__version__}"
    assert Path(ocdit_ros.__file__) == ROOT / "ocdit_ros" / "ocdit_ros" / "__init__.py"


def test_ros_layout_in_venv_is_found_through_the_ament_index():
    """`make` links ocdit_ros into the venv as colcon would (pip's editable install skips data_files)."""
    code = ("from ament_index_python.packages import get_package_prefix, get_package_share_directory as s; "
            "print(s('ocdit_ros')); print(s('ocdit_msgs')); print(get_package_prefix('ocdit_ros'))")
    env = dict(os.environ, AMENT_PREFIX_PATH=sys.prefix)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    share_ros, share_msgs, prefix = out.stdout.split()
    assert Path(prefix) == Path(sys.prefix)
    assert (Path(share_ros) / "package.xml").resolve() == (ROOT / "ocdit_ros" / "package.xml").resolve()
    assert (Path(share_msgs) / "msg" / "InstanceArray.msg").is_file()
    # Where `ros2 run ocdit_ros <script>` looks: every console script, not only `ocdit`.
    scripts = {e.name for e in metadata.distribution("ocdit_ros").entry_points if e.group == "console_scripts"}
    assert "ocdit" in scripts
    for name in scripts:
        assert os.access(Path(sys.prefix) / "lib" / "ocdit_ros" / name, os.X_OK), name


def test_ros_layout_files_exist():
    for rel in ["ocdit_ros/resource/ocdit_ros", "ocdit_ros/setup.cfg", "ocdit_ros/launch", "ocdit_ros/config",
                "ocdit_msgs/CMakeLists.txt", "ocdit_msgs/msg/Instance.msg", "ocdit_msgs/msg/InstanceArray.msg"]:
        assert (ROOT / rel).exists(), rel
    assert (ROOT / "ocdit_ros" / "resource" / "ocdit_ros").stat().st_size == 0


def share_files(prefix) -> set:
    """Files under PREFIX/share/ocdit_ros as `ros2 launch ocdit_ros <file>` finds them: ros2launch
    walks the share directory with os.walk, which does not descend into links to folders."""
    share = Path(prefix) / "share" / "ocdit_ros"
    return {(Path(d) / f).relative_to(share).as_posix() for d, _, files in os.walk(share) for f in files}


def setup_data_files() -> set:
    """What setup.py installs to share/ocdit_ros (relative paths), from setup.py itself."""
    code = ("import runpy, setuptools; args = {}; setuptools.setup = lambda **kw: args.update(kw); "
            "runpy.run_path('setup.py'); print(repr(args['data_files']))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "ocdit_ros", capture_output=True, text=True,
                         check=True).stdout
    data = ast.literal_eval(out)
    return {f"{dest[len('share/ocdit_ros'):].strip('/')}/{Path(f).name}".lstrip("/")
            for dest, files in data if dest.startswith("share/ocdit_ros") for f in files}


def test_venv_share_dir_is_walkable_like_colcon_install():
    """`ros2 launch ocdit_ros segment.launch.py` resolves by package name in the layout `make` gives."""
    found = share_files(sys.prefix)
    assert {"launch/segment.launch.py", "config/ocdit.yaml", "package.xml"} <= found
    assert found == setup_data_files()
    for rel in found:  # each entry is the live source file (editable install)
        assert (Path(sys.prefix) / "share" / "ocdit_ros" / rel).resolve() == (ROOT / "ocdit_ros" / rel).resolve()


# rosdep keys of setup.py's install_requires, as listed in rosdistro's rosdep/python.yaml (checked
# there by hand); None: no key, installed with pip as the README's "In a ROS 2 workspace" says.
ROSDEP_KEYS = {"torch": "python3-torch", "numpy": "python3-numpy", "pyyaml": "python3-yaml", "pillow": "python3-pil",
               "safetensors": None}


def test_every_python_dependency_has_a_rosdep_key_or_a_pip_line():
    import re

    from catkin_pkg.package import parse_package

    code = ("import runpy, setuptools; args = {}; setuptools.setup = lambda **kw: args.update(kw); "
            "runpy.run_path('setup.py'); print(repr(args['install_requires']))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "ocdit_ros", capture_output=True, text=True,
                         check=True).stdout
    required = {re.split(r"[<>=!\[ ]", r, maxsplit=1)[0].lower() for r in ast.literal_eval(out)}
    assert required == set(ROSDEP_KEYS), "new dependency in setup.py: add its rosdep key here and in package.xml"
    exec_deps = {d.name for d in parse_package(str(ROOT / "ocdit_ros")).exec_depends}
    assert {k for k in ROSDEP_KEYS.values() if k} <= exec_deps
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## In a ROS 2 workspace", 1)[1].split("\n## ", 1)[0]
    pip_lines = [line for line in section.splitlines() if line.startswith("pip install")]
    for name, key in ROSDEP_KEYS.items():
        if key is None or key == "python3-torch":  # torch: its key is skipped (see package.xml)
            assert any(f"'{name}>=" in line for line in pip_lines), name
    assert "--skip-keys python3-torch" in section
