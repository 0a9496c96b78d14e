"""The ROS 2 layer: converts messages and parameters, nothing else. Imports rclpy."""
