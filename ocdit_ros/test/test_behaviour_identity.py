"""One digest per stream a refactor must leave unchanged: the training examples of every stage (the
examples' pixels, masks, latents' noise and labels), the diffusion sampler's masks from seeded random
weights, and the shipped model's pipeline output on a fixed image.

A refactor (moving, renaming, merging code) keeps these digests; a change that is meant to alter
behaviour updates the digest in the same commit and says why (docs/testing.md). One thread, so
float reductions run in one order on every 2-core CI machine."""

import hashlib

import numpy as np
import pytest
import torch

from ocdit_ros.model import OCDiT, tiny
from ocdit_ros.pipeline.build import build_segmenter
from ocdit_ros.pipeline.config import PipelineConfig
from ocdit_ros.pipeline.segmenter import Segmenter
from ocdit_ros.training.examples import ExampleSource, load_template_bank

from test_training import _cfg, data  # noqa: F401 - the fixture

EXAMPLES = {
    "backbone": "3c4b6e5a52a23290860a98039fd68f3e5791d6bee7ecbeee96968f92de46dafc",
    "coarse": "0c72a95876319fdf88a6feb8ea2b4734ad47969189eea2e5e6a4297e7f131975",
    "refine": "f5e1e33daff4e356a15077ffd676252e1763975fe4eeb69c553a7144e55f1465",
    "vae": "1b5448daed96c055a5b21a2cd6ec892f4cac96fe794d39bb9ff089434de2702e",
}
SAMPLER = "06985e75003e2709a7e7e79322a3749bfaa1034870f6907c7366c38d5b0873a3"
SHIPPED = "4da061805caa46cb75ef60172b355e5820707622cb7d577876f0dc63c7174936"  # template-foreground rule (moment share)


def _digest(*values) -> str:
    """sha256 over tensors' and arrays' dtype, shape and bytes, and the repr of anything else."""
    h = hashlib.sha256()

    def add(v):
        if isinstance(v, dict):
            for k in sorted(v):
                h.update(str(k).encode())
                add(v[k])
        elif isinstance(v, (list, tuple)):
            for x in v:
                add(x)
        elif isinstance(v, torch.Tensor):
            add(v.detach().cpu().numpy())
        elif isinstance(v, np.ndarray):
            h.update(f"{v.dtype}{v.shape}".encode())
            h.update(np.ascontiguousarray(v).tobytes())
        else:
            h.update(repr(v).encode())

    add(values)
    return h.hexdigest()


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("stage", sorted(EXAMPLES))
def test_training_example_stream_is_unchanged(stage, data, tmp_path, one_thread):  # noqa: F811
    cfg = _cfg(stage, data, tmp_path)
    src = ExampleSource(cfg, tiny(), load_template_bank(cfg.templates))
    assert _digest([src.example(i) for i in range(6)]) == EXAMPLES[stage]


def _scene():
    """A fixed 96x128 image with a red disc and a green block, and their templates (6 views of 42 px
    whose silhouettes cut patches at many fractions, so template-foreground rules show)."""
    image = np.full((96, 128, 3), 90, np.uint8)
    yy, xx = np.mgrid[:96, :128]
    image[(yy - 40) ** 2 + (xx - 36) ** 2 < 20**2] = (220, 40, 40)
    image[40:88, 72:120] = (40, 220, 40)
    from ocdit_ros.templates.archive import ObjectTemplates

    objects = []
    ty, tx = np.mgrid[:42, :42]
    for name, colour in (("red", (220, 40, 40)), ("green", (40, 220, 40))):
        rgb = np.zeros((6, 42, 42, 3), np.uint8)
        for v in range(6):
            r = 9 + 2 * v  # one disc size per view
            inside = (ty - 21) ** 2 + (tx - 20) ** 2 < r * r if name == "red" else \
                (abs(ty - 21) < r) & (abs(tx - 22) < r - 3)
            rgb[v][inside] = colour
        objects.append(ObjectTemplates(name, name, rgb, rgb[..., 0] > 0))
    return image, objects


def _result_digest(result) -> str:
    return _digest(result.stage, [(i.object_id, i.mask, round(float(i.score), 4), i.bbox) for i in result.instances])


def test_sampler_stream_from_seeded_random_weights_is_unchanged(one_thread):
    torch.manual_seed(0)
    segmenter = Segmenter(OCDiT.from_config(tiny()), None, PipelineConfig(
        proposal_threshold=0.0, score_threshold=0.0, min_support=0.0))
    image, objects = _scene()
    assert _result_digest(segmenter.segment(image, objects)) == SAMPLER


def test_shipped_model_pipeline_output_is_unchanged(one_thread):
    image, objects = _scene()
    result = build_segmenter(config=PipelineConfig(proposal_threshold=0.0, score_threshold=0.0,
                                                   min_support=0.0)).segment(image, objects)
    assert result.instances  # thresholds at zero: the digest covers real masks
    assert _result_digest(result) == SHIPPED
