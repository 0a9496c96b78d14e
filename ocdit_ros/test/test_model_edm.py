"""EDM formulas, noise schedule and the Heun sampler."""

import math

import pytest
import torch

from ocdit_ros.model import SamplerConfig
from ocdit_ros.model import edm


def test_precondition_matches_closed_form():
    sigma = torch.tensor([0.002, 0.5, 3.0, 80.0], dtype=torch.float64)
    sd = 0.5
    c_skip, c_out, c_in, c_noise = edm.precondition(sigma, sd)
    for i, s in enumerate(sigma.tolist()):
        assert c_skip[i].item() == pytest.approx(sd**2 / (s**2 + sd**2), rel=1e-12)
        assert c_out[i].item() == pytest.approx(s * sd / math.sqrt(s**2 + sd**2), rel=1e-12)
        assert c_in[i].item() == pytest.approx(1 / math.sqrt(s**2 + sd**2), rel=1e-12)
        assert c_noise[i].item() == pytest.approx(math.log(s) / 4, rel=1e-12)
    # D(x; sigma) must reproduce x when F predicts the scaled clean signal: at sigma -> 0, c_skip -> 1.
    assert c_skip[0].item() > 0.9999 and c_out[0].item() < 0.0021


def test_loss_weight_and_learned_uncertainty_loss():
    sigma = torch.tensor([0.1, 2.0]).reshape(2, 1, 1, 1, 1)
    w = edm.loss_weight(sigma, 0.5)
    assert torch.allclose(w.flatten(), torch.tensor([(0.01 + 0.25) / (0.05**2), (4 + 0.25) / 1.0]))
    y = torch.zeros(2, 3, 4, 2, 2)
    d = torch.ones(2, 3, 4, 2, 2)
    u = torch.tensor([0.0, math.log(2.0)]).reshape(2, 1, 1, 1, 1)
    loss = edm.edm_loss(y, d, u, w)
    assert loss[0].item() == pytest.approx(w[0].item() * 1.0)
    assert loss[1].item() == pytest.approx(w[1].item() / 2 + math.log(2.0))


def test_training_sigma_ranges():
    torch.manual_seed(0)
    s = edm.draw_sigma(4096, "uniform", -0.4, 1.2, torch.device("cpu"))
    assert s.shape == (4096, 1, 1, 1, 1)
    assert s.min() >= 0.002 and s.max() <= 80.0
    # log-uniform: the mean of ln(sigma) is the midpoint of the log range.
    assert s.log().mean().item() == pytest.approx((math.log(0.002) + math.log(80)) / 2, abs=0.15)
    t = edm.draw_sigma(4096, "normal_trunc", -0.4, 1.2, torch.device("cpu"))
    assert t.min() >= 0.002 and t.max() <= 80.0
    assert t.log().mean().item() == pytest.approx(-0.4, abs=0.1)
    with pytest.raises(ValueError, match="unknown sigma distribution"):
        edm.draw_sigma(1, "cosine", 0, 1, torch.device("cpu"))


def test_noise_schedule_matches_official_values():
    t = edm.noise_schedule(9, 0.002, 80.0, 9.0)
    expected = [80.0, 35.4412, 14.47875, 5.35758, 1.75195, 0.48878, 0.11037, 0.01854, 0.002, 0.0]
    assert t.dtype == torch.float64 and len(t) == 10
    for got, want in zip(t.tolist(), expected):
        assert got == pytest.approx(want, rel=5e-4, abs=1e-12)  # the note rounds to 5 digits
    # rho shifts steps towards low noise: larger rho -> smaller second step.
    assert edm.noise_schedule(9, 0.002, 80, 9)[1] < edm.noise_schedule(9, 0.002, 80, 3)[1]


def test_sampler_counts_17_evaluations_for_9_steps_and_walks_the_schedule():
    seen = []

    def denoise(x, sigma):
        seen.append(float(sigma))
        return torch.zeros_like(x, dtype=torch.float32)

    out = edm.heun_sample(denoise, torch.randn(1, 2, 3), SamplerConfig(num_steps=9))
    assert len(seen) == edm.num_evaluations(9) == 17
    sched = edm.noise_schedule(9, 0.002, 80, 9).tolist()
    assert seen[0] == pytest.approx(sched[0]) and seen[1] == pytest.approx(sched[1])
    # A denoiser that always predicts 0 drives the sample to exactly 0 at sigma = 0.
    assert torch.allclose(out, torch.zeros_like(out), atol=1e-6)


def test_sampler_converges_at_second_order_on_gaussian_data():
    # For data ~ N(0, s_d^2) the ideal denoiser is D(x; s) = x s_d^2 / (s^2 + s_d^2) and the ODE maps
    # x_T to x_0 = x_T * s_d / sqrt(T^2 + s_d^2). Heun is second order: doubling the steps must
    # cut the error about 4x.
    sd = 0.5
    noise = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    expected = noise.double() * 80 * sd / math.sqrt(80**2 + sd**2)
    errors = []
    for steps in (20, 40, 80):
        out = edm.heun_sample(lambda x, s: x * sd**2 / (s**2 + sd**2), noise, SamplerConfig(num_steps=steps, rho=7))
        errors.append(((out.double() - expected).abs() / expected.abs()).max().item())
    assert 3.0 < errors[0] / errors[1] < 5.5 and 3.0 < errors[1] / errors[2] < 5.5
    assert errors[2] < 3e-3


def test_churn_adds_noise_and_is_seeded():
    cfg = SamplerConfig(num_steps=5, s_churn=10.0)
    den = lambda x, s: 0.5 * x  # noqa: E731
    a = edm.heun_sample(den, torch.ones(8), cfg, generator=torch.Generator().manual_seed(1))
    b = edm.heun_sample(den, torch.ones(8), cfg, generator=torch.Generator().manual_seed(1))
    c = edm.heun_sample(den, torch.ones(8), SamplerConfig(num_steps=5), generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_bad_schedule_arguments():
    with pytest.raises(ValueError, match="num_steps"):
        edm.noise_schedule(0, 0.002, 80, 9)
    with pytest.raises(ValueError, match="sigma_min"):
        edm.noise_schedule(9, 80, 0.002, 9)
