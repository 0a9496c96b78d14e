"""ros2 launch ocdit_ros segment.launch.py [camera_topic:=...] [config:=...] [weights:=...]
[templates_dir:=...] [device:=...] [namespace:=...] [use_sim_time:=...] [lifecycle:=true]
[dds_profile:=...]

Launch arguments left empty keep the values of the parameter file. The node gets the Fast DDS
profile for camera-sized frames (config/fastdds_large_frames.xml, a larger shared-memory segment)
unless FASTDDS_DEFAULT_PROFILES_FILE is already set or dds_profile:= names another file;
dds_profile:="" leaves the node's environment as it is. The camera driver's process needs the
profile too (README, "Camera-sized frames").
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
    profile = get("dds_profile")
    return [(LifecycleNode if lifecycle else Node)(
        package="ocdit_ros",
        executable="segment_lifecycle_node" if lifecycle else "segment_node",
        name="ocdit",
        namespace=get("namespace"),
        output="screen",
        parameters=[get("config"), overrides],
        remappings=[("image", get("camera_topic"))],
        additional_env={"FASTDDS_DEFAULT_PROFILES_FILE": profile} if profile else None,
    )]


def generate_launch_description():
    share = get_package_share_directory("ocdit_ros")
    default_config = os.path.join(share, "config", "ocdit.yaml")
    default_profile = os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE") or os.path.join(
        share, "config", "fastdds_large_frames.xml")
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
        DeclareLaunchArgument("dds_profile", default_value=default_profile,
                              description="Fast DDS profile file for the node (empty: keep the environment's)"),
        OpaqueFunction(function=_node),
    ])
