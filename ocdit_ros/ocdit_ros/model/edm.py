"""EDM (Karras et al. 2022) pieces as small functions: preconditioning, training noise
levels and loss weight, the rho noise schedule and the Heun sampler with optional churn.

The random draws happen in the same order, shape, dtype and device as in the official
OC-DiT code, so a `torch.manual_seed` reproduces its samples bit for bit.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .config import SamplerConfig

SIGMA_MIN_TRAIN, SIGMA_MAX_TRAIN = 0.002, 80.0


def precondition(sigma: torch.Tensor,
                 sigma_data: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """c_skip, c_out, c_in (shaped like sigma) and c_noise = ln(sigma) / 4 (flat)."""
    c_skip = sigma_data**2 / (sigma**2 + sigma_data**2)
    c_out = sigma * sigma_data / (sigma**2 + sigma_data**2).sqrt()
    c_in = 1 / (sigma_data**2 + sigma**2).sqrt()
    c_noise = sigma.flatten().log() / 4
    return c_skip, c_out, c_in, c_noise


def loss_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma * sigma_data)^2."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def sigma_from_uniform(u: torch.Tensor, distribution: str, p_mean: float, p_std: float) -> torch.Tensor:
    """The training noise-level law, as a function of uniform draws u in (0, 1) (shape kept).

    uniform: log-uniform on [SIGMA_MIN_TRAIN, SIGMA_MAX_TRAIN] (the paper); normal: EDM's
    log-normal exp(p_mean + p_std z); normal_trunc: the same restricted to the training range.
    """
    lo, hi = math.log(SIGMA_MIN_TRAIN), math.log(SIGMA_MAX_TRAIN)
    if distribution == "uniform":
        return ((lo - hi) * u + hi).exp()  # the official draw's arithmetic, so draw_sigma is exact
    if distribution in ("normal", "normal_trunc"):
        u = u.clamp(1e-6, 1 - 1e-6)
        if distribution == "normal_trunc":
            a, b = (torch.special.ndtr(torch.tensor((x - p_mean) / p_std, dtype=torch.float64)).item()
                    for x in (lo, hi))
            u = a + (b - a) * u
        return _log_normal(torch.special.ndtri(u), p_mean, p_std)
    raise ValueError(f"unknown sigma distribution {distribution!r}: use uniform, normal or normal_trunc")


def _log_normal(z: torch.Tensor, p_mean: float, p_std: float) -> torch.Tensor:
    return (z * p_std + p_mean).exp()


def draw_sigma(batch: int, distribution: str, p_mean: float, p_std: float, device: torch.device,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Training noise levels, shape (batch, 1, 1, 1, 1), drawn like the official code.

    The law is `sigma_from_uniform`'s; the log-normal ones draw Gaussians (and the truncated one
    redraws until inside the training range) to keep the official random stream.
    """
    shape = (batch, 1, 1, 1, 1)
    if distribution == "uniform":
        return sigma_from_uniform(torch.rand(shape, device=device, generator=generator), "uniform", p_mean, p_std)
    if distribution not in ("normal", "normal_trunc"):
        raise ValueError(f"unknown sigma distribution {distribution!r}: use uniform, normal or normal_trunc")
    sigma = _log_normal(torch.randn(shape, device=device, generator=generator), p_mean, p_std)
    if distribution == "normal_trunc":
        bad = (sigma < SIGMA_MIN_TRAIN) | (sigma > SIGMA_MAX_TRAIN)
        while bad.any():
            redraw = _log_normal(torch.randn(shape, device=device, generator=generator), p_mean, p_std)
            sigma = torch.where(bad, redraw, sigma)
            bad = (sigma < SIGMA_MIN_TRAIN) | (sigma > SIGMA_MAX_TRAIN)
    return sigma


def edm_loss(target: torch.Tensor, denoised: torch.Tensor, logvar: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-sample loss with learned uncertainty (EDM2): mean of w/e^u * (y - D)^2 + u."""
    per_element = weight / logvar.exp() * (target - denoised) ** 2 + logvar
    return per_element.flatten(1).mean(1)


def noise_schedule(num_steps: int, sigma_min: float, sigma_max: float, rho: float,
                   device: torch.device | None = None) -> torch.Tensor:
    """sigma_i = (s_max^(1/rho) + i/(n-1) (s_min^(1/rho) - s_max^(1/rho)))^rho, then 0; float64."""
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    i = torch.arange(num_steps, dtype=torch.float64, device=device)
    frac = i / max(num_steps - 1, 1)
    sigmas = (sigma_max ** (1 / rho) + frac * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([sigmas, torch.zeros_like(sigmas[:1])])


def num_evaluations(num_steps: int) -> int:
    """Network evaluations of the Heun sampler: one Euler + one correction per step, no
    correction on the last step (it ends at sigma = 0)."""
    return 2 * num_steps - 1


Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def heun_sample(denoise: Denoiser, noise: torch.Tensor, cfg: SamplerConfig,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """EDM Algorithm 2. `denoise(x, sigma)` returns D(x; sigma); `noise` is N(0, I).

    With s_churn = 0 this is the deterministic Heun ODE solver; an epsilon is still drawn
    every step (and multiplied by 0) so the random stream matches the official sampler.
    """
    t_steps = noise_schedule(cfg.num_steps, cfg.sigma_min, cfg.sigma_max, cfg.rho, noise.device)
    x_next = noise * t_steps[0]
    for i, (t_cur, t_next) in enumerate(zip(t_steps[:-1], t_steps[1:])):
        x_cur = x_next
        gamma = min(cfg.s_churn / cfg.num_steps, math.sqrt(2) - 1) if cfg.s_min <= t_cur <= cfg.s_max else 0.0
        t_hat = t_cur + gamma * t_cur
        eps = _randn_like(x_cur, generator)
        x_hat = x_cur + (t_hat**2 - t_cur**2).sqrt() * cfg.s_noise * eps

        d_cur = (x_hat - denoise(x_hat, t_hat).to(torch.float64)) / t_hat
        x_next = x_hat + (t_next - t_hat) * d_cur
        if i < cfg.num_steps - 1:
            d_prime = (x_next - denoise(x_next, t_next).to(torch.float64)) / t_next
            x_next = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)
    return x_next.to(torch.float32)


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None:
        return torch.randn_like(x)
    return torch.randn(x.shape, dtype=x.dtype, generator=generator, device=generator.device).to(x.device)
