"""Two-stage OC-DiT inference: views, ensembles, instance aggregation, refinement."""

from .config import PipelineConfig, StageConfig
from .mask_model import MaskModel, ObjectSpec, OCDiTMaskModel
from .segmenter import Instance, SegmentationResult, Segmenter

__all__ = ["Instance", "MaskModel", "OCDiTMaskModel", "ObjectSpec", "PipelineConfig", "SegmentationResult",
           "Segmenter", "StageConfig"]
