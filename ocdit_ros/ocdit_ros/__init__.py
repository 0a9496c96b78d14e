"""ocdit_ros: OC-DiT instance segmentation from CAD templates, with a ROS 2 node.

The ML core (`ocdit_ros.model`, `ocdit_ros.pipeline`, `ocdit_ros.templates`) never imports
ROS; only the node modules do, lazily.
"""

__version__ = "0.1.0"
