"""OC-DiT transformer blocks: per-object cross-attention, joint self-attention, MLP.

Each sub-layer is LayerNorm -> adaLN shift/scale from the noise embedding -> op -> gated
residual. While sampling, every row shares one noise level, so `forward_shared` computes the
modulation once per evaluation, folds shift/scale into the LayerNorm's affine and the gate into
one fused multiply-add (same function, fewer passes over the activations); `forward` keeps
per-row modulation. Queries are held as (B*E, N, P, D): B images, E ensemble members, N objects,
P = h*w patches. Cross-attention folds the ensemble into the query sequence,
(B*N, E*P, D), so every member of object (b, n) attends to that object's template tokens,
whose keys/values are projected once per image and reused for all steps and members.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class PackedAttention(nn.Module):
    """Multi-head attention with nn.MultiheadAttention's parameter names (packed q,k,v rows)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        return x.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)

    def project(self, x: torch.Tensor, which: int) -> torch.Tensor:
        """which: 0 = query, 1 = key, 2 = value; (B, L, D) -> (B, heads, L, D/heads)."""
        d = x.shape[-1]
        rows = slice(which * d, (which + 1) * d)
        return self._heads(F.linear(x, self.in_proj_weight[rows], self.in_proj_bias[rows]))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        out = F.scaled_dot_product_attention(q, k, v)
        b, h, n, hd = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, h * hd))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = x.shape[-1]
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).split(d, dim=-1)
        return self.attend(self._heads(q), self._heads(k), self._heads(v))


def shared_norm(x: torch.Tensor, norm: nn.LayerNorm, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """modulate(norm(x), shift, scale) for (D,) shift/scale shared by all rows, in one pass:
    (n w + b)(1 + s) + h is a LayerNorm with affine w (1 + s), b (1 + s) + h."""
    s1 = 1 + scale
    return F.layer_norm(x, norm.normalized_shape, norm.weight * s1, torch.addcmul(shift, norm.bias, s1), norm.eps)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Modulated(nn.Module):
    """norm + op + adaLN; `module` is a ModuleDict so keys read `<name>.module.<op_name>.*`."""

    def __init__(self, dim: int, op_name: str, op: nn.Module):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.module = op if op_name == "" else nn.ModuleDict({op_name: op})
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * dim))
        self.op_name = op_name

    @property
    def op(self) -> nn.Module:
        return self.module if self.op_name == "" else self.module[self.op_name]

    def modulation(self, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.adaLN_modulation(t).chunk(3, dim=-1)

    def shared_modulation(self, silu_t1: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """shift, scale, gate (D,) for a single noise embedding; takes SiLU(t1) (1, D)."""
        return self.adaLN_modulation[1](silu_t1)[0].chunk(3)


class OCDiTBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.cross_attn = Modulated(dim, "cross_attn", PackedAttention(dim, num_heads))
        self.self_attn = Modulated(dim, "self_attn", PackedAttention(dim, num_heads))
        self.mlp = Modulated(dim, "", Mlp(dim, int(dim * mlp_ratio)))

    def template_kv(self, template_tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, L, D) template tokens -> keys, values (B*N, heads, L, D/heads)."""
        mem = template_tokens.flatten(0, 1)
        attn = self.cross_attn.op
        return attn.project(mem, 1), attn.project(mem, 2)

    def forward(self, x: torch.Tensor, t: torch.Tensor, t_cross: torch.Tensor,
                kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """x (B*E, N, P, D); t (B*E, D); t_cross (B*E, N, D) noise embedding per cross-attn row."""
        return self.joint(self.cross(x, t_cross, kv), t)

    def cross(self, x: torch.Tensor, t_cross: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Each object's queries (all ensemble members) attend to that object's templates only."""
        bx, n, p, d = x.shape
        b = kv[0].shape[0] // n
        e = bx // b
        shift, scale, gate = self.cross_attn.modulation(t_cross)
        h = modulate(self.cross_attn.norm(x), shift[:, :, None], scale[:, :, None])
        h = h.view(b, e, n, p, d).transpose(1, 2).reshape(b * n, e * p, d)
        attn = self.cross_attn.op
        out = attn.attend(attn.project(h, 0), *kv)
        out = out.view(b, n, e, p, d).transpose(1, 2).reshape(bx, n, p, d)
        return x + gate[:, :, None] * out

    def joint(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Self-attention over all objects' tokens of one image (per member), then the MLP."""
        bx, n, p, d = x.shape
        x = x.reshape(bx, n * p, d)
        shift, scale, gate = self.self_attn.modulation(t)
        x = x + gate[:, None] * self.self_attn.op(modulate(self.self_attn.norm(x), shift[:, None], scale[:, None]))
        shift, scale, gate = self.mlp.modulation(t)
        x = x + gate[:, None] * self.mlp.op(modulate(self.mlp.norm(x), shift[:, None], scale[:, None]))
        return x.reshape(bx, n, p, d)


    # -- one noise level for all rows (sampling) -----------------------------------------
    def forward_shared(self, x: torch.Tensor, silu_t1: torch.Tensor,
                       kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """`forward` when every row's noise embedding is the same t1; takes SiLU(t1) (1, D)."""
        bx, n, p, d = x.shape
        b = kv[0].shape[0] // n
        e = bx // b
        # Cross-attention: queries of member (b, e), object n attend to keys/values row (b, n),
        # broadcast over members (no transposes of the activations).
        shift, scale, gate = self.cross_attn.shared_modulation(silu_t1)
        attn = self.cross_attn.op
        q = attn.project(shared_norm(x, self.cross_attn.norm, shift, scale).view(bx * n, p, d), 0)
        k, v = (_expand_members(t, b, e, n) for t in kv)
        out = attn.attend(q, k, v).view(bx, n, p, d)
        x = torch.addcmul(x, out, gate)
        # Self-attention over all objects' tokens of one member, then the MLP.
        x = x.view(bx, n * p, d)
        shift, scale, gate = self.self_attn.shared_modulation(silu_t1)
        x = torch.addcmul(x, self.self_attn.op(shared_norm(x, self.self_attn.norm, shift, scale)), gate)
        shift, scale, gate = self.mlp.shared_modulation(silu_t1)
        x = torch.addcmul(x, self.mlp.op(shared_norm(x, self.mlp.norm, shift, scale)), gate)
        return x.view(bx, n, p, d)


def _expand_members(t: torch.Tensor, b: int, e: int, n: int) -> torch.Tensor:
    """(B*N, ...) per-object keys/values -> (B*E*N, ...) rows ordered (image, member, object)."""
    return t.view(b, 1, n, *t.shape[1:]).expand(b, e, n, *t.shape[1:]).reshape(b * e * n, *t.shape[1:])


class Decoder(nn.Module):
    def __init__(self, dim: int, num_heads: int, depth: int, mlp_ratio: float):
        super().__init__()
        self.blocks = nn.ModuleList(OCDiTBlock(dim, num_heads, mlp_ratio) for _ in range(depth))


class FinalLayer(nn.Module):
    """LayerNorm -> adaLN (shift, scale) -> Linear-GELU-Linear-GELU-Linear to latent channels."""

    def __init__(self, dim: int, out_channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.linear = nn.Sequential(
            nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, out_channels)
        )
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """(B, N, P, D) -> latents (B, N, z, h, w)."""
        b, n, p, d = x.shape
        shift, scale = self.adaLN_modulation(t).chunk(2, dim=-1)
        x = modulate(self.norm(x.reshape(b, n * p, d)), shift[:, None], scale[:, None])
        x = self.linear(x)
        return x.view(b, n, grid[0], grid[1], -1).permute(0, 1, 4, 2, 3)

    def forward_shared(self, x: torch.Tensor, silu_t1: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """`forward` with one noise embedding for all rows; takes SiLU(t1) (1, D)."""
        b, n, p, d = x.shape
        shift, scale = self.adaLN_modulation[1](silu_t1)[0].chunk(2)
        x = self.linear(shared_norm(x.reshape(b, n * p, d), self.norm, shift, scale))
        return x.view(b, n, grid[0], grid[1], -1).permute(0, 1, 4, 2, 3)
