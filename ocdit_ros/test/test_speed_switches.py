"""Speed switches (pipeline config) against the float32 reference on the CPU.

Stated tolerances (max |p - p_ref| over member probabilities; probabilities are in [0, 1]):
sdpa off, caching off and torch.compile are the same function (1e-5); bfloat16 autocast keeps
the sampler state, VAE decode and sigmoid in float32, and moves the masks by less than 0.1
(mean < 0.01) on the tiny model.
"""

import pytest
import torch

from ocdit_ros.model import OCDiT, tiny
from ocdit_ros.pipeline import OCDiTMaskModel, PipelineConfig, StageConfig


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(3)
    model = OCDiT.from_config(tiny()).eval()
    with torch.no_grad():  # non-trivial adaLN (fresh models are adaLN-Zero)
        for p in model.diffuser.parameters():
            p.add_(0.05 * torch.randn_like(p))
    mm = OCDiTMaskModel(model)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 112, 112, generator=g)
    templates = torch.rand(2, 3, 2, 3, 42, 42, generator=g)
    return mm, images, templates


def run(setup, **changes):
    mm, images, templates = setup
    cfg = PipelineConfig().replace(**changes)
    mm.configure(cfg)
    assert (mm.model.diffuser._compiled is not None) == (cfg.compile != "off")
    assert mm.model.diffuser.cache == cfg.cache and mm.sdpa == cfg.sdpa
    try:
        feats = mm.image_features(images)
        with torch.inference_mode():
            tf = torch.stack([torch.stack([mm.model.feature_extractor(mm.model.normalize(o)) for o in row])
                              for row in templates])
        return mm.sample(feats, tf, 2, StageConfig(ensemble=2, num_steps=3), torch.Generator().manual_seed(1))
    finally:
        mm.configure(PipelineConfig())


def test_exact_switches_match_the_float32_reference(setup):
    ref = run(setup)
    assert ref.shape == (2, 2, 3, 128, 128) and ref.dtype == torch.float32
    assert ref.std() > 1e-3
    for changes in ({"sdpa": False}, {"cache": False}, {"compile": "aot_eager"}):
        out = run(setup, **changes)
        assert (out - ref).abs().max() < 1e-5, changes


def test_bfloat16_autocast_is_close_and_keeps_float32_masks(setup):
    ref = run(setup)
    out = run(setup, dtype="bfloat16")
    assert out.dtype == torch.float32
    diff = (out - ref).abs()
    assert diff.max() < 0.1 and diff.mean() < 0.01
    assert diff.max() > 0  # it did run in bfloat16


def test_precision_and_graph_settings_are_validated():
    with pytest.raises(ValueError, match="float16 needs a CUDA"):
        PipelineConfig(dtype="float16").validate()
    with pytest.raises(ValueError, match="cuda_graphs needs compile"):
        PipelineConfig(cuda_graphs=True).validate()
    with pytest.raises(ValueError, match="memory_budget_mb"):
        PipelineConfig(memory_budget_mb=1).validate()


def test_the_sampler_starts_from_the_weights_settings_with_the_stage_on_top(setup):
    """sigma_max stored with the weights (sampling_parameters) is used; steps come from the stage."""
    mm = setup[0]
    reference = run(setup)
    stored = dict(mm.model.sampling_parameters)
    try:
        mm.model.sampling_parameters["sigma_max"] = 5.0
        lowered = run(setup)
        mm.model.sampling_parameters["num_steps"] = 40  # the stage's num_steps overrides it
        assert torch.equal(run(setup), lowered)
    finally:
        mm.model.sampling_parameters.clear()
        mm.model.sampling_parameters.update(stored)
    assert (lowered - reference).abs().max() > 1e-3
    assert torch.equal(run(setup), reference)
