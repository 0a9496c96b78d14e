"""Segmenting a frame without dying on GPU out-of-memory: the node and benchmarks/gpu_check.py share it."""

from __future__ import annotations

from typing import Callable, Sequence

from .config import PipelineConfig
from .segmenter import SegmentationResult, Segmenter, check_last_stage


def segment_with_retry(segmenter: Segmenter, image, objects: Sequence, config: PipelineConfig,
                       last_stage: str = "refine", warn: Callable[[str], None] = print) -> SegmentationResult:
    """`segmenter.segment`, retried with halved ensembles after a CUDA out-of-memory error (until
    both are 1, then the error is raised); each retry is reported through `warn`. No objects give
    an empty result without running the model."""
    import torch

    check_last_stage(last_stage)  # also when there is nothing to segment
    if not objects:
        refined = last_stage == "refine" and config.refine_enabled
        return SegmentationResult([], tuple(image.shape[:2]), "refined" if refined else "coarse")
    while True:
        try:
            return segmenter.segment(image, objects, config=config, last_stage=last_stage)
        except torch.OutOfMemoryError:
            if config.coarse.ensemble == 1 and config.refine.ensemble == 1:
                raise
            torch.cuda.empty_cache()
            config = config.replace(**{"coarse.ensemble": max(1, config.coarse.ensemble // 2),
                                       "refine.ensemble": max(1, config.refine.ensemble // 2)})
            warn(f"GPU out of memory: retrying this frame with ensembles "
                 f"{config.coarse.ensemble}/{config.refine.ensemble}")
