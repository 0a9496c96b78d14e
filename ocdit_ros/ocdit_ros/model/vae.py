"""Convolutional beta-VAE for binary masks (latents are 1/16 of the mask size).

Module names reproduce the official checkpoint layout `vae.model.model.{encoder, quant_conv,
post_quant_conv, decoder}` (BinaryMaskVAE -> MasksVAE -> ConvVAE), hence the two thin
`model` wrappers. The latent scale (final_std / raw_std) is a plain attribute, not a buffer,
exactly as in the official state_dict.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import VAEConfig


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.conv_first = nn.Sequential(nn.GroupNorm(groups, cin, eps=1e-6), nn.SiLU(),
                                        nn.Conv2d(cin, cout, 3, padding=1))
        self.conv_second = nn.Sequential(nn.GroupNorm(groups, cout, eps=1e-6), nn.SiLU(),
                                         nn.Conv2d(cout, cout, 3, padding=1))
        self.residual_conv = nn.Conv2d(cin, cout, 1)  # present even when cin == cout (official layout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual_conv(x) + self.conv_second(self.conv_first(x))


class AttentionBlock(nn.Module):
    """Spatial self-attention with a residual; GroupNorm(8) and 8 heads as in the official VAE."""

    def __init__(self, channels: int, num_heads: int = 8, groups: int = 8):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.attention = nn.MultiheadAttention(channels, num_heads, batch_first=True)
        self.linear = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        seq = self.norm(x.reshape(b, c, h * w)).transpose(1, 2)
        # nn.MultiheadAttention's parameters through SDPA: its CPU fast path materialises the
        # (h*w)^2 scores with slow batched matmuls (a third of a decode); same function.
        mha = self.attention
        heads = mha.num_heads
        q, k, v = F.linear(seq, mha.in_proj_weight, mha.in_proj_bias).view(b, h * w, 3, heads, c // heads).unbind(2)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        out = self.linear(mha.out_proj(out.transpose(1, 2).reshape(b, h * w, c)))
        return x + out.transpose(1, 2).reshape(b, c, h, w)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric pad: right/bottom only


# Which 3x3 taps land on which of the two low-resolution rows (or columns) an output pixel of
# phase 0 / 1 reads after a nearest 2x upsampling (rows y-1, y for phase 0; y, y+1 for phase 1).
_PHASE_TAPS = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])


class Upsample(nn.Module):
    """Nearest 2x upsampling then a 3x3 convolution. With many channels it is computed as four
    2x2 convolutions on the low-resolution input (one per output phase): the same function with
    16/36 of the multiply-adds (measured 1.7-1.9x faster at 128-256 channels on the CPU; at 32
    channels the interleaving costs more than it saves, so the plain path is kept there)."""

    SUBPIXEL_MIN_CHANNELS = 64

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, ch, h, w = x.shape
        if ch < self.SUBPIXEL_MIN_CHANNELS:
            return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        taps = _PHASE_TAPS.to(x.device, self.conv.weight.dtype)
        # kernels[a, c] = R_a W R_c^T over the kernel's rows and columns: (2, 2, out, in, 2, 2)
        kernels = torch.einsum("ari,oqij,csj->acoqrs", taps, self.conv.weight, taps).to(x.dtype)
        xp = F.pad(x, (1, 1, 1, 1))
        bias = None if self.conv.bias is None else self.conv.bias.to(x.dtype)
        rows = [torch.stack([F.conv2d(xp[:, :, a:a + h + 1, c:c + w + 1], kernels[a, c], bias) for c in (0, 1)], -1)
                for a in (0, 1)]
        return torch.stack(rows, 3).reshape(b, -1, 2 * h, 2 * w)  # (B, C, H, 2, W, 2) -> (B, C, 2H, 2W)


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch, g = cfg.down_channels, cfg.num_groups
        self.conv_in = nn.Conv2d(1, ch[0], 7, padding=3)
        blocks: list[nn.Module] = []
        cin = ch[0]
        last = len(ch) - 2
        for level, cout in enumerate(ch[1:]):
            for _ in range(cfg.num_blocks):
                blocks.append(ResnetBlock(cin, cout, g))
                cin = cout
            if level == last and not cfg.latent_attention_only:  # attention before the last downsampling ...
                blocks.append(AttentionBlock(cin))
            blocks.append(Downsample(cin))
        blocks.append(AttentionBlock(cin))  # ... and once more at the latent resolution
        self.down_blocks = nn.ModuleList(blocks)
        self.conv_out = nn.Sequential(nn.GroupNorm(g, cin, eps=1e-6), nn.SiLU(),
                                      nn.Conv2d(cin, 2 * cfg.z_channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for block in self.down_blocks:
            x = block(x)
        return self.conv_out(x)


class Decoder(nn.Module):
    ATTENTION_LEVELS = (0, 1)  # the two coarsest decoder levels

    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch, g = cfg.up_channels, cfg.num_groups
        self.conv_in = nn.Conv2d(cfg.z_channels, ch[0], 3, padding=1)
        blocks: list[nn.Module] = []
        cin = ch[0]
        for level, cout in enumerate(ch[1:]):
            for _ in range(cfg.num_blocks + 1):
                blocks.append(ResnetBlock(cin, cout, g))
                cin = cout
            if level in self.ATTENTION_LEVELS and not (cfg.latent_attention_only and level > 0):
                blocks.append(AttentionBlock(cin))
            blocks.append(Upsample(cin))
        self.up_blocks = nn.ModuleList(blocks)
        self.conv_out = nn.Sequential(nn.GroupNorm(g, cin, eps=1e-6), nn.SiLU(), nn.Conv2d(cin, 1, 5, padding=2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(z)
        for block in self.up_blocks:
            x = block(x)
        return self.conv_out(x)


class ConvVAE(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        self.encoder = Encoder(cfg)
        self.quant_conv = nn.Conv2d(2 * cfg.z_channels, 2 * cfg.z_channels, 1)
        self.post_quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, 1)
        self.decoder = Decoder(cfg)

    def moments(self, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance (clamped to [-30, 20])."""
        mean, logvar = self.quant_conv(self.encoder(masks)).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.post_quant_conv(z))


class _Scope(nn.Module):
    """Adds one `model.` level to parameter names (official checkpoint layout)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model


class BinaryMaskVAE(nn.Module):
    """Masks (B, 1, H, W) in [0, 1] <-> scaled latents (B, z, H/16, W/16)."""

    def __init__(self, cfg: VAEConfig | None = None):
        super().__init__()
        self.cfg = cfg or VAEConfig()
        self.model = _Scope(ConvVAE(self.cfg))
        self.model.requires_grad_(self.cfg.trainable)
        # Not a buffer: the official state_dict has no such key.
        self.scale = self.cfg.final_std / self.cfg.raw_std

    @property
    def net(self) -> ConvVAE:
        return self.model.model

    def z_channels(self) -> int:
        return self.cfg.z_channels

    def encode_latents(self, masks: torch.Tensor, sample_posterior: bool = True) -> torch.Tensor:
        self._check_masks(masks)
        mean, logvar = self.net.moments(masks)
        z = mean
        if sample_posterior:
            # CPU generator, then moved: same random stream as the official code on any device.
            eps = torch.randn(mean.shape).to(device=mean.device, dtype=mean.dtype)
            z = mean + torch.exp(0.5 * logvar) * eps
        return z * self.scale

    def decode(self, z: torch.Tensor, apply_sigmoid: bool = False, input_size=None) -> torch.Tensor:
        """Logits (or probabilities) at 16x the latent size. `input_size` is accepted for
        API compatibility and ignored, like in the official code; the pipeline resizes."""
        if z.ndim != 4 or z.shape[1] != self.cfg.z_channels:
            raise ValueError(f"latents must be (B, {self.cfg.z_channels}, h, w), got {tuple(z.shape)}")
        out = self.net.decode(z / self.scale)
        return torch.sigmoid(out) if apply_sigmoid else out

    def kl(self, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(q || N(0, I)) per sample, summed over latent dims (for VAE training)."""
        return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)

    def _check_masks(self, masks: torch.Tensor) -> None:
        f = self.cfg.downsampling
        if masks.ndim != 4 or masks.shape[1] != 1:
            raise ValueError(f"masks must be (B, 1, H, W), got {tuple(masks.shape)}")
        if masks.shape[-2] % f or masks.shape[-1] % f:
            raise ValueError(f"mask size {tuple(masks.shape[-2:])} must be a multiple of {f} (the VAE downsampling)")
