"""Synthetic BOP-format data: object library, scene generator, BOP reader (no ROS)."""
