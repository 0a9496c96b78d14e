"""pipeline/retry.py: a frame that runs out of GPU memory is retried with halved ensembles."""

import numpy as np
import pytest
import torch

from ocdit_ros.pipeline import PipelineConfig, StageConfig
from ocdit_ros.pipeline.retry import segment_with_retry
from ocdit_ros.pipeline.segmenter import SegmentationResult


class FitsAt:
    """A segmenter whose frame fits in memory only up to `limit` ensemble members per stage."""

    def __init__(self, limit: int):
        self.limit, self.calls = limit, []

    def segment(self, image, objects, config, last_stage):
        self.calls.append((config.coarse.ensemble, config.refine.ensemble))
        if max(config.coarse.ensemble, config.refine.ensemble) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (test)")
        return SegmentationResult([], tuple(image.shape[:2]), "refined" if last_stage == "refine" else "coarse")


def config(coarse: int, refine: int) -> PipelineConfig:
    return PipelineConfig(coarse=StageConfig(ensemble=coarse), refine=StageConfig(ensemble=refine))


def test_out_of_memory_halves_the_ensembles_until_the_frame_fits():
    seg, warnings = FitsAt(limit=2), []
    result = segment_with_retry(seg, np.zeros((4, 6, 3), np.uint8), ["obj"], config(8, 3), warn=warnings.append)
    assert seg.calls == [(8, 3), (4, 1), (2, 1)] and result.image_size == (4, 6)
    assert warnings == ["GPU out of memory: retrying this frame with ensembles 4/1",
                        "GPU out of memory: retrying this frame with ensembles 2/1"]


def test_out_of_memory_at_single_members_is_raised_and_no_objects_skip_the_model():
    with pytest.raises(torch.OutOfMemoryError):
        segment_with_retry(FitsAt(limit=0), np.zeros((4, 6, 3), np.uint8), ["obj"], config(2, 1), warn=lambda m: None)
    seg = FitsAt(limit=0)
    result = segment_with_retry(seg, np.zeros((4, 6, 3), np.uint8), [], config(2, 2))
    assert seg.calls == [] and result.instances == [] and result.image_size == (4, 6)
    with pytest.raises(ValueError, match="last_stage='refined'"):  # refused with or without objects
        segment_with_retry(seg, np.zeros((4, 6, 3), np.uint8), [], config(2, 2), last_stage="refined")
