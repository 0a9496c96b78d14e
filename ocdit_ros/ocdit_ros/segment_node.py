"""Entry point of the segmentation node (`segment_node`, `python -m ocdit_ros.segment_node`).

The node itself lives in `ocdit_ros.ros.node`; importing this module does not import rclpy.
"""

from __future__ import annotations


def main(args=None) -> int:
    from .ros.node import main as node_main

    return node_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
