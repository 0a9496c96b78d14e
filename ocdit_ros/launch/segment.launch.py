"""ros2 launch ocdit_ros segment.launch.py [camera_topic:=...] [config:=...] [weights:=...]
[templates_dir:=...] [device:=...] [namespace:=...] [use_sim_time:=...] [lifecycle:=true]

Launch arguments left empty keep the values of the parameter file.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node

OVERRIDABLE = ("weights", "templates_dir", "device")


def _node(context):
    get = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    overrides = {name: get(name) for name in OVERRIDABLE if get(name)}
    sim = get("use_sim_time")
    # true/false as a bool; anything else goes through as given, so the node refuses it (exit 2)
    # instead of quietly running on wall time.
    overrides["use_sim_time"] = {"true": True, "false": False}.get(sim.lower(), sim)
    lifecycle = get("lifecycle").lower() == "true"  # the managed node starts unconfigured
    return [(LifecycleNode if lifecycle else Node)(
        package="ocdit_ros",
        executable="segment_lifecycle_node" if lifecycle else "segment_node",
        name="ocdit",
        namespace=get("namespace"),
        output="screen",
        parameters=[get("config"), overrides],
        remappings=[("image", get("camera_topic"))],
    )]


def generate_launch_description():
    default_config = os.path.join(get_package_share_directory("ocdit_ros"), "config", "ocdit.yaml")
    return LaunchDescription([
        DeclareLaunchArgument("camera_topic", default_value="/camera/image_raw",
                              description="sensor_msgs/Image (or CompressedImage) topic to segment"),
        DeclareLaunchArgument("config", default_value=default_config, description="parameter file"),
        DeclareLaunchArgument("weights", default_value="", description="model weights (.safetensors / folder)"),
        DeclareLaunchArgument("templates_dir", default_value="", description="folder of template archives"),
        DeclareLaunchArgument("device", default_value="", description="cpu, cuda, cuda:1, ..."),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replay)"),
        DeclareLaunchArgument("lifecycle", default_value="false",
                              description="true: the managed node segment_lifecycle_node (configure/activate "
                                          "it with ros2 lifecycle set /ocdit configure, then activate)"),
        OpaqueFunction(function=_node),
    ])
