"""Test-wide safety: DDS stays on loopback and every run uses its own domain."""

import os
import random

# Before anything imports rclpy: never send discovery traffic off this machine.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 200)))
