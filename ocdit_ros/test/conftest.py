"""Test-wide safety: DDS stays on this machine and every run uses its own domain.

Runs before any test module imports rclpy (rcl reads both variables when a context starts), and
also covers a bare `pytest` run outside `make test`, which exports the same variables.
"""

import os
import random

# Kilted's default discovery range is SUBNET: multicast would leave the machine.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
# Domains above 101 use UDP ports in Linux's ephemeral range, where they can collide.
if not os.environ.get("ROS_DOMAIN_ID"):
    os.environ["ROS_DOMAIN_ID"] = str(random.randint(1, 101))
