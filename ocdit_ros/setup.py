"""ocdit_ros: an ament_python ROS 2 package whose ML core also installs with plain pip."""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "ocdit_ros"
HERE = Path(__file__).resolve().parent


def data_files():
    """The ROS layout: what `colcon build` / `ros2 run` / `ros2 launch` look for under the prefix."""
    files = [
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ]
    # config/: the parameter file and the Fast DDS profile for camera-sized frames.
    for subdir, patterns in [("launch", ["*.launch.py"]), ("config", ["*.yaml", "*.xml"])]:
        # Relative to this file (setuptools wants relative paths), whatever the working directory;
        # an empty directory contributes no entry rather than an empty one.
        matches = sorted(p.relative_to(HERE).as_posix()
                         for pattern in patterns for p in (HERE / subdir).glob(pattern))
        if matches:
            files.append((f"share/{PACKAGE}/{subdir}", matches))
    return files


setup(
    name=PACKAGE,
    version="0.1.0",
    description="OC-DiT zero-shot instance segmentation (clean-room PyTorch) with a ROS 2 node",
    packages=find_packages(exclude=["test", "test.*"]),
    # Same as the default, but said explicitly so that setuptools makes `pip install -e` a plain
    # path entry (a .pth with this directory, as colcon's `setup.py develop` does) rather than an
    # import hook that runs after the path search. With the hook, a run from the repository root
    # (`python -m ocdit_ros.demo`, pytest) finds this *directory* ocdit_ros/ first and imports it
    # as an empty namespace package: `ocdit_ros.__version__` is missing and `from . import` fails.
    package_dir={"": "."},
    data_files=data_files(),
    # The shipped default model, its card and the fixed object split travel with the package.
    package_data={"ocdit_ros": ["weights/*.safetensors", "weights/*.md", "data/splits/*.json"]},
    # The ML core only; rclpy and the messages come from ROS (or `make`), imported lazily.
    install_requires=["torch>=2.1", "numpy>=1.24", "safetensors>=0.4", "pyyaml>=6", "pillow>=9"],
    extras_require={"eval": ["pycocotools>=2.0.7"], "progress": ["tqdm>=4"],
                    "templates": ["trimesh>=4", "scipy"], "bag": ["rosbags>=0.10"],
                    "data": ["trimesh>=4", "scipy", "pybullet>=3.2"], "train": ["tensorboard", "tqdm>=4"]},
    python_requires=">=3.10",
    zip_safe=False,  # the weights and the split are read as files
    entry_points={"console_scripts": ["ocdit = ocdit_ros.cli:main", "segment_node = ocdit_ros.segment_node:main",
                                      "segment_lifecycle_node = ocdit_ros.segment_lifecycle_node:main"]},
)
