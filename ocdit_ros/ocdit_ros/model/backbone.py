"""DINOv2-style ViT backbone that returns spatial patch features.

Parameter names follow the DINOv2 hub model (`cls_token`, `pos_embed`, `mask_token`,
`patch_embed.proj`, flat `blocks.i.*`, `norm`) so a hub checkpoint loads as is; timm's
`vit_small_patch14_dinov2` naming is converted on load, and timm's / torch.hub's names for
DINOv2 ViT-S/14 are fetched through those libraries (backbone_hub.py). The position embedding is resized
exactly like DINOv2 does it (bicubic, scale factor with the +0.1 offset, no antialias), which
is what makes features identical to the official model at any input size.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import BackboneConfig
from .descriptor import patch_descriptor

_INTERPOLATE_OFFSET = 0.1  # DINOv2's historical offset; changes values, so it is kept.


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, embed_dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, layerscale_init: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim, layerscale_init)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layerscale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """ViT with a CLS token and an interpolated absolute position embedding."""

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.patch_size = cfg.patch_size
        self.embed_dim = cfg.embed_dim
        side = cfg.pos_embed_size // cfg.patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, side * side + 1, cfg.embed_dim))
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.embed_dim)
        self.blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio, cfg.layerscale_init) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)
        # Unused by inference; kept so hub checkpoints load with strict=True.
        self.mask_token = nn.Parameter(torch.zeros(1, cfg.embed_dim))
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def position_embedding(self, rows: int, cols: int) -> torch.Tensor:
        n = self.pos_embed.shape[1] - 1
        side = math.isqrt(n)
        if rows * cols == n and rows == cols:
            return self.pos_embed
        pos = self.pos_embed.float()
        grid = pos[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        scale = ((rows + _INTERPOLATE_OFFSET) / side, (cols + _INTERPOLATE_OFFSET) / side)
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
        if grid.shape[-2:] != (rows, cols):  # guards against the float rounding the offset avoids
            raise RuntimeError(f"position embedding resized to {tuple(grid.shape[-2:])}, wanted {(rows, cols)}")
        grid = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
        return torch.cat([pos[:, :1], grid], dim=1).to(self.pos_embed.dtype)

    def patch_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> final-norm patch tokens (B, H/p * W/p, C)."""
        _, _, h, w = images.shape
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.position_embedding(h // self.patch_size, w // self.patch_size).to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)[:, 1:]


class FeatureExtractor(nn.Module):
    """Images with any leading dims (..., 3, H, W), normalised to [-1, 1] -> features (..., C, H/p, W/p).

    C is the ViT width plus the fixed descriptor's channels (`cfg.descriptor`), if any.
    """

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.model = VisionTransformer(cfg)
        self.feature_dim = cfg.feature_dim
        self.descriptor = cfg.descriptor
        self.patch_size = cfg.patch_size
        if cfg.weights:
            load_backbone_weights(self.model, cfg.weights)
        self.model.requires_grad_(cfg.trainable)
        self.model.mask_token.requires_grad_(False)  # never in the graph (see training.build_model)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        *lead, c, h, w = images.shape
        p = self.patch_size
        if c != 3:
            raise ValueError(f"images must have 3 channels (RGB), got shape {tuple(images.shape)}")
        if h % p or w % p:
            raise ValueError(
                f"image size {h}x{w} is not a multiple of the backbone patch size {p}; "
                f"resize or pad to a multiple of {p} (the pipeline does this for you)"
            )
        flat = images.reshape(-1, c, h, w)
        tokens = self.model.patch_tokens(flat)
        feats = tokens.transpose(1, 2).reshape(-1, self.model.embed_dim, h // p, w // p)
        if self.descriptor != "none":
            rgb = flat.detach() * 0.5 + 0.5  # undo OCDiT.normalize: the descriptor bins [0, 1] RGB
            feats = torch.cat([feats, patch_descriptor(rgb, p, self.descriptor).to(feats.dtype)], dim=1)
        return feats.reshape(*lead, self.feature_dim, h // p, w // p)


# -- checkpoints -----------------------------------------------------------------------------
def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "teacher"):  # common training-checkpoint wrappers
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a state_dict (found {type(obj).__name__})")
    return obj


def convert_backbone_state_dict(sd: dict[str, torch.Tensor], like: nn.Module) -> dict[str, torch.Tensor]:
    """Map hub / timm / prefixed checkpoints onto our (hub) names.

    timm's `vit_small_patch14_dinov2` has the hub's names and shapes (pos_embed with the CLS
    position, 1 + 37*37 tokens) but no mask_token; its classifier head, if any, is dropped.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        for prefix in ("feature_extractor.model.", "backbone.", "module.", "model."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        if key.startswith("head."):
            continue  # a classification head is not part of the features
        if key in ("reg_token", "register_tokens"):
            raise ValueError(
                "the checkpoint is a DINOv2 ViT with register tokens (timm '..._reg4_dinov2', hub "
                "'dinov2_vits14_reg'), which this backbone does not implement; use the plain ViT-S/14 "
                "weights ('dinov2_vits14', 'vit_small_patch14_dinov2.lvd142m' or dinov2_vits14_pretrain.pth)"
            )
        out[key] = value
    if "mask_token" not in out:  # timm has none; it is unused for features
        out["mask_token"] = torch.zeros_like(like.mask_token)
    return out


def load_backbone_weights(model: VisionTransformer, weights: str | Path) -> None:
    """Load a local checkpoint file, or the weights timm / torch.hub know by that name."""
    path = Path(weights)
    if path.is_file():
        raw, origin = _read_checkpoint(path), str(path)
    else:
        from .backbone_hub import NAMES, named_state_dict, resolve_name

        if resolve_name(str(weights)) is None:
            raise FileNotFoundError(
                f"backbone weights {weights} not found; pass a local DINOv2 ViT checkpoint "
                f"(hub .pth or timm .safetensors) or one of the names {sorted(NAMES)} "
                "(fetched by timm / torch.hub where this machine reaches them; a file is never downloaded otherwise)"
            )
        raw, origin = named_state_dict(str(weights)), f"{weights!r}"
    sd = convert_backbone_state_dict(raw, model)
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise ValueError(
            f"backbone checkpoint {origin} does not fit this ViT config: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, "
            f"shape mismatches {wrong[:5]}. Check backbone embed_dim/depth/heads/pos_embed_size."
        )
    model.load_state_dict(sd, strict=True)
