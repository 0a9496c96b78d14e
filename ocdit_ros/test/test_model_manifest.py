"""The default model has exactly the official state_dict: keys, order, shapes, buffers."""

import json
from pathlib import Path

import torch

from ocdit_ros.model import OCDiT

MANIFEST = Path(__file__).parent / "data" / "official_manifest_default.json"


def test_default_model_matches_the_official_manifest():
    ref = json.loads(MANIFEST.read_text())
    with torch.device("meta"):  # shapes only: no 1.4 GB allocation
        model = OCDiT(image_size=(480, 640), template_size=(128, 128))
    buffers = {n for n, _ in model.named_buffers()}
    ours = [{"key": k, "shape": list(v.shape), "kind": "buffer" if k in buffers else "param"}
            for k, v in model.state_dict().items()]
    assert len(ours) == len(ref["entries"]) == 754
    assert ours == ref["entries"]
    assert sum(p.numel() for p in model.parameters()) == ref["num_params"] == 358_730_594
    assert sum(b.numel() for b in model.buffers()) == ref["num_buffer_elements"]
    # The VAE's latent scale is a plain attribute in the official model, never a tensor key.
    assert not any("scale" in e["key"] for e in ref["entries"] if e["key"].startswith("vae."))


def test_trainable_parameters_are_the_diffuser_only_by_default():
    with torch.device("meta"):
        model = OCDiT(image_size=(480, 640), template_size=(128, 128))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == sum(p.numel() for p in model.diffuser.parameters()) == 322_699_425
