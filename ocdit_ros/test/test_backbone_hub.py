"""DINOv2 ViT-S/14 weights by timm's and torch.hub's names: layouts, name resolution, offline errors.

Nothing here downloads. The layouts come from test/data/dinov2_vits14_layouts.json, recorded from
the real libraries (timm's `vit_small_patch14_dinov2.lvd142m` and DINOv2's hub `dinov2_vits14`,
both built with pretrained=False); torch.hub runs for real on a hub cache laid out in tmp_path.
"""

import json
import sys
import urllib.request
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ocdit_ros.model import OCDiT, load_model, save_weights, tiny
from ocdit_ros.model import backbone_hub
from ocdit_ros.model.backbone import VisionTransformer, load_backbone_weights
from ocdit_ros.model.backbone_hub import BackboneWeightsError, named_state_dict, resolve_name
from ocdit_ros.model.config import BackboneConfig

LAYOUTS = json.loads((Path(__file__).parent / "data" / "dinov2_vits14_layouts.json").read_text())
SMALL = dict(embed_dim=48, depth=2, num_heads=2, pos_embed_size=112)


def _reference(cfg: BackboneConfig, seed: int = 3) -> VisionTransformer:
    """A ViT with every parameter random (norms and layer scales too), so no key can load wrongly unseen."""
    torch.manual_seed(seed)
    vit = VisionTransformer(cfg).eval()
    with torch.no_grad():
        for p in vit.parameters():
            p.copy_(torch.randn_like(p) * 0.05 + (1.0 if p.dim() == 1 and p.numel() == cfg.embed_dim else 0.0))
    return vit


def _layout(sd):
    return {k: list(v.shape) for k, v in sd.items()}


def test_our_vits14_has_the_hub_layout_and_timm_differs_only_by_the_mask_token():
    ours = _layout(VisionTransformer(BackboneConfig()).state_dict())
    assert ours == LAYOUTS["torch.hub dinov2_vits14"]
    timm = LAYOUTS["timm vit_small_patch14_dinov2.lvd142m"]
    assert timm["pos_embed"] == [1, 1 + 37 * 37, 384]  # CLS position included: no_embed_class is off
    assert {k: v for k, v in ours.items() if k != "mask_token"} == timm


def test_vits14_from_each_source_layout_gives_the_hub_features(tmp_path):
    ref = _reference(BackboneConfig())
    hub = ref.state_dict()
    torch.save({k: hub[k] for k in LAYOUTS["torch.hub dinov2_vits14"]}, tmp_path / "dinov2_vits14_pretrain.pth")
    timm = {k: hub[k].clone() for k in LAYOUTS["timm vit_small_patch14_dinov2.lvd142m"]}
    save_file(timm, str(tmp_path / "model.safetensors"))  # what timm's Hugging Face repo holds
    torch.save(timm, tmp_path / "timm.pth")
    x = torch.rand(1, 3, 56, 70)
    want = ref.patch_tokens(x)
    for name in ("dinov2_vits14_pretrain.pth", "model.safetensors", "timm.pth"):
        vit = VisionTransformer(BackboneConfig())
        load_backbone_weights(vit, tmp_path / name)
        assert torch.equal(vit.patch_tokens(x), want), name


@pytest.mark.parametrize("name, source, entry", [
    ("vit_small_patch14_dinov2.lvd142m", "timm", "vit_small_patch14_dinov2.lvd142m"),
    ("vit_small_patch14_dinov2", "timm", "vit_small_patch14_dinov2.lvd142m"),
    ("timm/vit_small_patch14_dinov2.lvd142m", "timm", "vit_small_patch14_dinov2.lvd142m"),
    ("hf-hub:timm/vit_small_patch14_dinov2.lvd142m", "timm", "vit_small_patch14_dinov2.lvd142m"),
    ("dinov2_vits14", "torch.hub", "dinov2_vits14"),
    (" facebookresearch/dinov2:dinov2_vits14", "torch.hub", "dinov2_vits14"),
])
def test_names_pick_their_library(name, source, entry):
    asked = []

    def loader(kind):
        def load(named):
            asked.append((kind, named.entry))
            return _reference(BackboneConfig(**SMALL))
        return load

    sd = named_state_dict(name, {"timm": loader("timm"), "torch.hub": loader("torch.hub")})
    assert asked == [(source, entry)]
    assert resolve_name(name).source == source
    vit = VisionTransformer(BackboneConfig(**SMALL))
    vit.load_state_dict(sd, strict=True)


def test_unknown_names_are_no_names():
    for name in ("dinov2_vits14_reg", "vit_small_patch14_reg4_dinov2.lvd142m", "vit_small_patch14_dinov2.foo", ""):
        assert resolve_name(name) is None
    with pytest.raises(FileNotFoundError, match=r"not found.*'dinov2_vits14'"):
        load_backbone_weights(VisionTransformer(BackboneConfig(**SMALL)), "dinov2_vitb14")


def _hub_cache(root: Path, checkpoint: dict) -> None:
    """A torch.hub cache as `torch.hub.load("facebookresearch/dinov2", "dinov2_vits14")` leaves it:
    the repo under hub/facebookresearch_dinov2_main, the checkpoint under hub/checkpoints."""
    repo = root / "hub" / "facebookresearch_dinov2_main"
    repo.mkdir(parents=True)
    (root / "hub" / "checkpoints").mkdir()
    torch.save(checkpoint, root / "hub" / "checkpoints" / "dinov2_vits14_pretrain.pth")
    (repo / "hubconf.py").write_text(f"""
import torch
from ocdit_ros.model.backbone import VisionTransformer
from ocdit_ros.model.config import BackboneConfig
dependencies = ["torch"]

def dinov2_vits14(pretrained=True):
    model = VisionTransformer(BackboneConfig(**{SMALL!r}))
    url = "{backbone_hub.HUB_CHECKPOINT_URL}"
    model.load_state_dict(torch.hub.load_state_dict_from_url(url, map_location="cpu"), strict=True)
    return model
""")


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """torch.hub's directory in tmp_path, and every HTTP(S) request sent to a closed loopback port."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    for var in ("no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(urllib.request, "_opener", None)  # rebuilt from the proxy settings above
    assert torch.hub.get_dir() == str(tmp_path / "hub")
    return tmp_path


def test_hub_name_loads_offline_from_the_torch_hub_cache(offline_hub):
    ref = _reference(BackboneConfig(**SMALL))
    _hub_cache(offline_hub, ref.state_dict())
    cfg = tiny()
    cfg.backbone = BackboneConfig(**SMALL, weights="dinov2_vits14")
    m = OCDiT.from_config(cfg)
    x = torch.rand(1, 3, 42, 56)
    assert torch.equal(m.feature_extractor.model.patch_tokens(x), ref.patch_tokens(x))


def test_unreachable_hub_is_one_line_naming_the_fix(offline_hub):
    vit = VisionTransformer(BackboneConfig(**SMALL))
    with pytest.raises(BackboneWeightsError) as info:
        load_backbone_weights(vit, "dinov2_vits14")
    msg = str(info.value)
    assert "\n" not in msg and info.value.__cause__ is None and info.value.__suppress_context__
    assert msg.startswith("backbone.weights='dinov2_vits14' needs torch.hub to reach github.com")
    assert "this machine could not (URLError" in msg
    assert msg.endswith(f"download dinov2_vits14_pretrain.pth from {backbone_hub.HUB_CHECKPOINT_URL} "
                        "on a machine that can and set backbone.weights to the file")
    assert isinstance(info.value, ValueError)  # what the CLI and the node report as one line


def test_timm_names_without_timm_or_offline_say_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm fails, whether installed or not
    with pytest.raises(BackboneWeightsError, match=r"needs timm, which cannot be imported here \(ModuleNotFoundError.*"
                                                   r"pip install timm"):
        named_state_dict("vit_small_patch14_dinov2.lvd142m")

    def no_network(named):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    with pytest.raises(BackboneWeightsError) as info:
        named_state_dict("timm/vit_small_patch14_dinov2.lvd142m", {"timm": no_network})
    msg = str(info.value)
    assert "needs timm to reach huggingface.co; this machine could not (OSError: We couldn't connect" in msg
    assert backbone_hub.TIMM_HF_PAGE in msg and msg.endswith("set backbone.weights to the file")


def test_register_checkpoints_are_refused_by_name(tmp_path):
    sd = _reference(BackboneConfig(**SMALL)).state_dict()
    sd["register_tokens"] = torch.zeros(1, 4, 48)
    torch.save(sd, tmp_path / "reg.pth")
    with pytest.raises(ValueError, match="register tokens.*dinov2_vits14"):
        load_backbone_weights(VisionTransformer(BackboneConfig(**SMALL)), tmp_path / "reg.pth")


def test_saved_models_load_without_fetching_their_backbone_again(tmp_path, monkeypatch):
    def never(named):
        raise AssertionError("fetched")

    monkeypatch.setattr(backbone_hub, "DEFAULT_LOADERS", {"timm": never, "torch.hub": never})
    m = OCDiT.from_config(tiny())
    for weights in ("dinov2_vits14", str(tmp_path / "gone.pth")):
        m.config.backbone.weights = weights  # as if trained on a machine that had it
        save_weights(m, tmp_path / "w.safetensors")
        back = load_model(tmp_path / "w.safetensors")
        assert back.config.backbone.weights == weights
        assert torch.equal(back.feature_extractor.model.pos_embed, m.feature_extractor.model.pos_embed)
