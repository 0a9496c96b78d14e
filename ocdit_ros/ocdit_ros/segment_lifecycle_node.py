"""Entry point of the managed segmentation node (`segment_lifecycle_node`,
`python -m ocdit_ros.segment_lifecycle_node`); the node lives in `ocdit_ros.ros.lifecycle`."""

from __future__ import annotations


def main(args=None) -> int:
    from .ros.lifecycle import main as node_main

    return node_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
