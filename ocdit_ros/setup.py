"""ocdit_ros: an ament_python ROS 2 package whose ML core also installs with plain pip."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "ocdit_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    description="OC-DiT zero-shot instance segmentation (clean-room PyTorch) with a ROS 2 node",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml")),
    ],
    # The ML core only; rclpy and the messages come from ROS (or `make`), imported lazily.
    install_requires=["torch>=2.1", "numpy>=1.24", "safetensors>=0.4", "pyyaml>=6", "pillow>=9"],
    extras_require={"eval": ["pycocotools>=2.0.7"], "progress": ["tqdm>=4"]},
    python_requires=">=3.10",
    zip_safe=True,
    entry_points={"console_scripts": ["ocdit = ocdit_ros.cli:main"]},
)
