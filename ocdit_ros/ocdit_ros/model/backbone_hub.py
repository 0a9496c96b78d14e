"""DINOv2 ViT-S/14 by the names timm and torch.hub users already know.

`backbone.weights` may name the weights instead of a file: timm's `vit_small_patch14_dinov2.lvd142m`
(also without the tag, or as the Hugging Face id `timm/...`) or torch.hub's `dinov2_vits14`
(also `facebookresearch/dinov2:dinov2_vits14`). The library behind the name builds the model,
using its own download cache, and its state_dict is converted like a local checkpoint
(backbone.load_backbone_weights). Nothing runs at import; a failure is one `BackboneWeightsError`
that names the fix (download the file elsewhere, point `backbone.weights` at it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

TIMM = "timm"
TORCH_HUB = "torch.hub"

# With a ref, torch.hub uses a cached repo without first asking GitHub for the default branch;
# "main" is that branch of facebookresearch/dinov2, so the cache a plain
# `torch.hub.load("facebookresearch/dinov2", "dinov2_vits14")` left is used offline.
HUB_REPO = "facebookresearch/dinov2:main"
HUB_CHECKPOINT_URL = "https://dl.fbaipublicfiles.com/dinov2/dinov2_vits14/dinov2_vits14_pretrain.pth"
TIMM_HF_PAGE = "https://huggingface.co/timm/vit_small_patch14_dinov2.lvd142m"


class BackboneWeightsError(ValueError):
    """Named backbone weights could not be obtained; the message says what to do instead."""


@dataclass(frozen=True)
class NamedWeights:
    source: str  # TIMM or TORCH_HUB
    entry: str   # what that library is asked for


_TIMM_VITS14 = NamedWeights(TIMM, "vit_small_patch14_dinov2.lvd142m")
_HUB_VITS14 = NamedWeights(TORCH_HUB, "dinov2_vits14")
NAMES: dict[str, NamedWeights] = {
    "vit_small_patch14_dinov2.lvd142m": _TIMM_VITS14,
    "vit_small_patch14_dinov2": _TIMM_VITS14,  # timm's default (and only) tag is lvd142m
    "timm/vit_small_patch14_dinov2.lvd142m": _TIMM_VITS14,
    "hf-hub:timm/vit_small_patch14_dinov2.lvd142m": _TIMM_VITS14,
    "dinov2_vits14": _HUB_VITS14,
    "facebookresearch/dinov2:dinov2_vits14": _HUB_VITS14,
}


def resolve_name(name: str) -> NamedWeights | None:
    """The library and entry a weights name stands for; None if it is not one of NAMES."""
    return NAMES.get(name.strip())


class LibraryUnusable(Exception):
    """A loader's library cannot be imported (missing, or installed but broken)."""


def _timm_model(named: NamedWeights) -> nn.Module:
    try:
        import timm  # optional: only users of timm's names need it
    except Exception as exc:  # missing, or e.g. a torchvision built for another torch
        raise LibraryUnusable(_cause(exc)) from exc
    return timm.create_model(named.entry, pretrained=True)


def _hub_model(named: NamedWeights) -> nn.Module:
    # trust_repo=True: the user named this repository; "check" would prompt on stdin.
    return torch.hub.load(HUB_REPO, named.entry, trust_repo=True, verbose=False)


DEFAULT_LOADERS: Mapping[str, Callable[[NamedWeights], nn.Module]] = {TIMM: _timm_model, TORCH_HUB: _hub_model}


def _cause(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    text = text if len(text) <= 160 else text[:157] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _fix(named: NamedWeights) -> str:
    if named.source == TIMM:
        return (f"download model.safetensors from {TIMM_HF_PAGE} (or dinov2_vits14_pretrain.pth from "
                f"{HUB_CHECKPOINT_URL}) on a machine that can and set backbone.weights to the file")
    return (f"download dinov2_vits14_pretrain.pth from {HUB_CHECKPOINT_URL} on a machine that can "
            "and set backbone.weights to the file")


def named_state_dict(
    name: str, loaders: Mapping[str, Callable[[NamedWeights], nn.Module]] | None = None
) -> dict[str, torch.Tensor]:
    """The state_dict (in its library's layout) of the model a weights name stands for."""
    named = resolve_name(name)
    if named is None:
        raise BackboneWeightsError(f"backbone.weights={name!r} is not a known weights name; known: {sorted(NAMES)}")
    loader = (loaders or DEFAULT_LOADERS)[named.source]
    try:
        model = loader(named)
    except LibraryUnusable as exc:
        raise BackboneWeightsError(
            f"backbone.weights={name!r} is {named.source}'s name and needs {named.source}, which cannot be "
            f"imported here ({exc}); pip install timm (its torchvision must match torch), or use the "
            f"torch.hub name 'dinov2_vits14', or {_fix(named)}"
        ) from None
    except Exception as exc:  # network, cache and hub errors surface as many types; one message for all
        where = ("huggingface.co" if named.source == TIMM
                 else f"github.com and dl.fbaipublicfiles.com (or find both in its cache {torch.hub.get_dir()})")
        raise BackboneWeightsError(
            f"backbone.weights={name!r} needs {named.source} to reach {where}; this machine could not "
            f"({_cause(exc)}); {_fix(named)}"
        ) from None
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}
