"""OC-DiT model: a clean-room re-implementation, state_dict- and output-compatible with the
official DLR-RM/oc-dit classes (see docs/model.md)."""

from .config import (
    BackboneConfig,
    DiffuserConfig,
    OCDiTConfig,
    SamplerConfig,
    VAEConfig,
    load_config,
    official_coarse,
    official_refine,
    small,
    small16,
    tiny,
)
from .diffuser import Condition, Diffuser
from .ocdit import OCDiT
from .weights import load_model, load_weights, save_pretrained, save_weights

__all__ = [
    "BackboneConfig", "Condition", "DiffuserConfig", "Diffuser", "OCDiT", "OCDiTConfig", "SamplerConfig",
    "VAEConfig", "load_config", "load_model", "load_weights", "official_coarse", "official_refine",
    "save_pretrained", "save_weights", "small", "small16", "tiny",
]
