"""Training: mask VAE, coarse and refine OC-DiT, backbone pretraining, on BOP-format scenes (no ROS)."""

from .config import TrainConfig
from .trainer import EMA, Trainer, build_model, lr_factor

__all__ = ["EMA", "TrainConfig", "Trainer", "build_model", "lr_factor"]
