"""Loading and saving OC-DiT weights without executing pickles.

Formats:
- a single `.safetensors` file (our config stored in its metadata when we wrote it);
- a `save_pretrained` folder as the official class's hub mixin writes it: `config.json`
  (the five constructor arguments) + `model.safetensors` (or a legacy `pytorch_model.bin`,
  read with `torch.load(weights_only=True)`). We add `ocdit_ros.yaml` with the full config;
  the official loader ignores it.

Weights we trained also record how their training templates were rendered (`model.template_render`,
a plain dict of `templates.RenderSettings` fields, opaque to this layer), so that templates of new
objects are rendered the same way (`RenderSettings.for_model`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from .config import OCDiTConfig
from .ocdit import OCDiT

OFFICIAL_CONFIG = "config.json"
OUR_CONFIG = "ocdit_ros.yaml"
WEIGHTS = "model.safetensors"
LEGACY_WEIGHTS = "pytorch_model.bin"
TEMPLATE_RENDER = "template_render.json"
_METADATA_KEY = "ocdit_ros_config"
_TEMPLATES_KEY = "ocdit_ros_template_render"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.is_dir():
        for name in (WEIGHTS, LEGACY_WEIGHTS):
            if (path / name).is_file():
                return read_state_dict(path / name)
        raise FileNotFoundError(f"{path} has neither {WEIGHTS} nor {LEGACY_WEIGHTS}")
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle with code in it, a truncated file, ...
        raise ValueError(f"cannot read {path} as plain tensors (weights_only=True): {exc}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a state_dict")
    return obj


def load_weights(model: torch.nn.Module, path: str | Path, strict: bool = True) -> None:
    """Load a state_dict file or folder into `model`, explaining mismatches in one message."""
    sd = read_state_dict(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in sd and sd[k].shape != own[k].shape]
    if wrong or (strict and (missing or unexpected)):
        raise ValueError(
            f"weights {path} do not fit this model configuration: {len(wrong)} shape mismatches "
            f"{wrong[:4]}, {len(missing)} missing keys {missing[:4]}, {len(unexpected)} unexpected keys "
            f"{unexpected[:4]}. Use the config the weights were trained with (image_size, template_size, "
            f"embed_dim, depth, num_heads, capacities)."
        )
    model.load_state_dict(sd, strict=strict)


def config_from_file(path: str | Path) -> OCDiTConfig | None:
    """The model config stored with the weights, if any."""
    path = Path(path)
    if path.is_dir():
        if (path / OUR_CONFIG).is_file():
            return OCDiTConfig.from_yaml(path / OUR_CONFIG)
        if (path / OFFICIAL_CONFIG).is_file():
            kw = json.loads((path / OFFICIAL_CONFIG).read_text())
            return _official_config(kw)
        return None
    if path.suffix == ".safetensors" and path.is_file():
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if _METADATA_KEY in meta:
            return OCDiTConfig.from_dict(json.loads(meta[_METADATA_KEY]))
    return None


def template_render_from_file(path: str | Path) -> dict | None:
    """How the templates these weights were trained with were rendered, if the file records it."""
    path = Path(path)
    if path.is_dir():
        record = path / TEMPLATE_RENDER
        return json.loads(record.read_text()) if record.is_file() else None
    if path.suffix == ".safetensors" and path.is_file():
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        if _TEMPLATES_KEY in meta:
            return json.loads(meta[_TEMPLATES_KEY])
    return None


def _official_kwargs(kw: dict) -> dict:
    names = ("image_size", "template_size", "embed_dim", "depth", "num_heads")
    missing = [n for n in names[:2] if n not in kw]
    if missing:
        raise ValueError(f"config.json lacks {missing}; it must hold the OCDiT constructor arguments")
    return {k: kw[k] for k in names if k in kw}


def _official_config(kw: dict) -> OCDiTConfig:
    from .config import DiffuserConfig

    kw = _official_kwargs(kw)
    return OCDiTConfig(
        image_size=kw["image_size"], template_size=kw["template_size"],
        diffuser=DiffuserConfig(hidden_size=kw.get("embed_dim", 1024), depth=kw.get("depth", 12),
                                num_heads=kw.get("num_heads", 16)),
    )


def save_weights(model: OCDiT, path: str | Path) -> None:
    """One `.safetensors` file with the full config (and the template render record) in its metadata."""
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    meta = {_METADATA_KEY: json.dumps(model.config.to_dict())}
    if getattr(model, "template_render", None):
        meta[_TEMPLATES_KEY] = json.dumps(model.template_render, sort_keys=True)
    save_file(sd, str(path), metadata=meta)


def save_pretrained(model: OCDiT, folder: str | Path) -> None:
    """The official hub-mixin layout plus our full config."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    official = {
        "image_size": list(cfg.image_size),
        "template_size": list(cfg.template_size),
        "embed_dim": cfg.diffuser.hidden_size,
        "depth": cfg.diffuser.depth,
        "num_heads": cfg.diffuser.num_heads,
    }
    (folder / OFFICIAL_CONFIG).write_text(json.dumps(official, indent=2))
    cfg.to_yaml(folder / OUR_CONFIG)
    if getattr(model, "template_render", None):
        (folder / TEMPLATE_RENDER).write_text(json.dumps(model.template_render, indent=2, sort_keys=True))
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(sd, str(folder / WEIGHTS), metadata={"format": "pt"})


def load_model(path: str | Path, config: OCDiTConfig | None = None, device: str | torch.device = "cpu") -> OCDiT:
    """Build a model from weights (file or folder); `config` overrides the stored one."""
    cfg = config or config_from_file(path)
    if cfg is None:
        raise ValueError(
            f"{path} carries no model config; pass one (a preset name such as 'tiny' or a YAML file)"
        )
    # The file holds the backbone too: build without fetching backbone.weights (a path of the
    # training machine, or a timm / torch.hub name that needs the network) and keep the record.
    model = OCDiT.from_config(dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, weights=None)))
    model.config = cfg
    model.template_render = template_render_from_file(path)
    load_weights(model, path)
    return model.to(device).eval()
