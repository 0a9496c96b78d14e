"""Weights I/O: safetensors, the official save_pretrained folder, backbone checkpoints, errors."""

import json
import pickle

import pytest
import torch

from ocdit_ros.model import OCDiT, load_model, load_weights, save_pretrained, save_weights, tiny
from ocdit_ros.model.backbone import VisionTransformer, load_backbone_weights
from ocdit_ros.model.config import BackboneConfig


def _model(seed=0):
    torch.manual_seed(seed)
    return OCDiT.from_config(tiny()).eval()


def _sample(m):
    g = torch.Generator().manual_seed(0)
    images, templates = torch.rand(1, 3, 112, 112, generator=g), torch.rand(1, 2, 3, 3, 42, 42, generator=g)
    return m.generate_segmentations(images, templates, 2, generator=torch.Generator().manual_seed(1))


def test_safetensors_round_trip_carries_config(tmp_path):
    m = _model()
    save_weights(m, tmp_path / "w.safetensors")
    back = load_model(tmp_path / "w.safetensors")
    assert back.config == m.config
    for (k, a), (k2, b) in zip(m.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert torch.equal(_sample(m), _sample(back))


def test_save_pretrained_folder_matches_official_layout(tmp_path):
    m = _model()
    save_pretrained(m, tmp_path / "ckpt")
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert cfg == {"image_size": [112, 112], "template_size": [42, 42], "embed_dim": 64, "depth": 2, "num_heads": 4}
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    back = load_model(tmp_path / "ckpt")
    assert torch.equal(_sample(m), _sample(back))


def test_official_config_json_alone_builds_the_official_architecture(tmp_path):
    with torch.device("meta"):
        m = OCDiT(image_size=(224, 224), template_size=(70, 70), embed_dim=64, depth=1, num_heads=4)
    folder = tmp_path / "official"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"image_size": [224, 224], "template_size": [70, 70],
                                                    "embed_dim": 64, "depth": 1, "num_heads": 4}))
    from ocdit_ros.model.weights import config_from_file

    assert config_from_file(folder) == m.config


def test_legacy_bin_loads_with_weights_only_and_pickles_with_code_are_refused(tmp_path):
    m = _model()
    torch.save(m.state_dict(), tmp_path / "pytorch_model.bin")
    other = _model(seed=1)
    load_weights(other, tmp_path / "pytorch_model.bin")
    assert torch.equal(_sample(m), _sample(other))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"x": Evil()}))
    with pytest.raises(ValueError, match="weights_only=True"):
        load_weights(other, tmp_path / "evil.pt")


def test_mismatched_weights_name_the_problem(tmp_path):
    save_weights(_model(), tmp_path / "w.safetensors")
    cfg = tiny()
    cfg.diffuser.depth = 3
    with pytest.raises(ValueError, match=r"missing keys \['diffuser.decoder.blocks.2"):
        load_weights(OCDiT.from_config(cfg), tmp_path / "w.safetensors")
    cfg = tiny()
    cfg.image_size = (224, 224)
    with pytest.raises(ValueError, match=r"shape mismatches.*pe_patches"):
        load_weights(OCDiT.from_config(cfg), tmp_path / "w.safetensors")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_weights(_model(), tmp_path / "nope.safetensors")
    with pytest.raises(ValueError, match="carries no model config"):
        torch.save(_model().state_dict(), tmp_path / "plain.pt")
        load_model(tmp_path / "plain.pt")


def _hub_like_state_dict():
    torch.manual_seed(2)
    return VisionTransformer(BackboneConfig(embed_dim=48, depth=2, num_heads=2, pos_embed_size=112)).state_dict()


def test_backbone_loads_hub_and_timm_naming(tmp_path):
    from safetensors.torch import save_file

    cfg = BackboneConfig(embed_dim=48, depth=2, num_heads=2, pos_embed_size=112)
    hub = _hub_like_state_dict()
    torch.save(hub, tmp_path / "hub.pth")
    vit = VisionTransformer(cfg)
    load_backbone_weights(vit, tmp_path / "hub.pth")
    assert torch.equal(vit.blocks[1].ls2.gamma, hub["blocks.1.ls2.gamma"])

    timm = {k: v for k, v in hub.items() if k != "mask_token"}  # timm has no mask_token
    timm["head.weight"] = torch.zeros(10, 48)
    save_file(timm, str(tmp_path / "timm.safetensors"))
    vit2 = VisionTransformer(cfg)
    load_backbone_weights(vit2, tmp_path / "timm.safetensors")
    x = torch.rand(1, 3, 70, 84)
    torch.testing.assert_close(vit.patch_tokens(x), vit2.patch_tokens(x))

    cfg_s = tiny()
    cfg_s.backbone.weights = str(tmp_path / "hub.pth")
    m = OCDiT.from_config(cfg_s)
    assert torch.equal(m.feature_extractor.model.pos_embed, hub["pos_embed"])

    wrong = BackboneConfig(embed_dim=48, depth=3, num_heads=2, pos_embed_size=112)
    with pytest.raises(ValueError, match="does not fit this ViT config"):
        load_backbone_weights(VisionTransformer(wrong), tmp_path / "hub.pth")
    with pytest.raises(FileNotFoundError, match="not found; pass a local DINOv2 ViT checkpoint"):
        load_backbone_weights(VisionTransformer(cfg), tmp_path / "missing.pth")


def test_position_embedding_is_identity_at_native_size_and_bicubic_elsewhere():
    vit = VisionTransformer(BackboneConfig(embed_dim=48, depth=1, num_heads=2, pos_embed_size=112))
    assert vit.position_embedding(8, 8) is vit.pos_embed
    pe = vit.position_embedding(5, 11)
    assert pe.shape == (1, 1 + 55, 48)
    assert torch.equal(pe[:, 0], vit.pos_embed[:, 0])  # CLS embedding untouched
