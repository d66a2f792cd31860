"""LatentSDE: the KL term against a Gaussian case in closed form; a short fit; sampling."""
import math

import pytest
import torch
from torch import nn

pytest.importorskip("nde.sde", reason="the SDE core (nde.sde) has not landed")
from nde.models import LatentSDE  # noqa: E402


class OUDrift(nn.Module):
    """Posterior drift -theta z (ignores the context)."""

    def __init__(self, theta):
        super().__init__()
        self.theta = theta

    def forward(self, t, z, ctx):
        return -self.theta * z


class ZeroDrift(nn.Module):
    def forward(self, t, z):
        return torch.zeros_like(z)


class ConstantDiffusion(nn.Module):
    def __init__(self, sigma):
        super().__init__()
        self.sigma = sigma

    def forward(self, t, z):
        return torch.full_like(z, self.sigma)


class FixedPosterior(nn.Module):
    """q(z0) = N(m, s^2) whatever the data."""

    def __init__(self, m, s):
        super().__init__()
        self.m, self.s = m, s

    def forward(self, ctx):
        return torch.cat([torch.full_like(ctx[:, :1], self.m), torch.full_like(ctx[:, :1], math.log(self.s))], -1)


def test_kl_matches_closed_form_for_ou_posterior_and_brownian_prior():
    """Posterior dz = -theta z dt + sigma dW, prior dz = sigma dW, z0 ~ N(m, s^2) vs N(0, 1):
    KL = KL(N(m, s^2) || N(0, 1)) + theta^2 / (2 sigma^2) int_0^T E[z_t^2] dt, with
    E[z_t^2] = (m^2 + s^2) e^{-2 theta t} + sigma^2 (1 - e^{-2 theta t}) / (2 theta)."""
    theta, sigma, m, s, T = 1.5, 0.7, 0.8, 0.5, 1.0
    model = LatentSDE(1, latent_dim=1, context_dim=2, width=4, dt=1e-3, posterior_drift=OUDrift(theta),
                      prior_drift=ZeroDrift(), diffusion=ConstantDiffusion(sigma)).double()
    model.qz0 = FixedPosterior(m, s)
    n = 4000
    ts = torch.linspace(0, T, 3, dtype=torch.float64)
    _, kl = model.posterior_paths(torch.zeros(n, 3, 1, dtype=torch.float64), ts)
    decay = 1 - math.exp(-2 * theta * T)
    second_moment_integral = (m ** 2 + s ** 2) * decay / (2 * theta) + sigma ** 2 * (T / (2 * theta)
                                                                                       - decay / (4 * theta ** 2))
    expected = (-math.log(s) + (s ** 2 + m ** 2) / 2 - 0.5) + theta ** 2 / (2 * sigma ** 2) * second_moment_integral
    stderr = kl.std().item() / math.sqrt(n)
    assert abs(kl.mean().item() - expected) < 4 * stderr + 2e-3 * expected


def test_fit_improves_elbo_and_samples_have_shape():
    torch.manual_seed(0)
    ts = torch.linspace(0, 1, 11)
    xs = torch.exp(-ts).view(1, -1, 1) * torch.randn(32, 1, 1) + 0.05 * torch.randn(32, 11, 1)
    model = LatentSDE(1, latent_dim=2, context_dim=4, width=16, dt=0.1)
    optim = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        log_px, kl = model(xs, ts)
        loss = kl - log_px
        optim.zero_grad()
        loss.backward()
        optim.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])
    assert model.sample(5, ts).shape == (5, 11, 1)


def test_adjoint_gradients_close_to_direct():
    ts = torch.linspace(0, 1, 6, dtype=torch.float64)
    xs = torch.randn(8, 6, 2, dtype=torch.float64)
    grads = []
    for adjoint in (False, True):
        torch.manual_seed(3)
        model = LatentSDE(2, latent_dim=2, context_dim=3, width=8, dt=1e-2, adjoint=adjoint).double()
        log_px, kl = model(xs, ts)
        (kl - log_px).backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0) > 0.99


def test_bad_input():
    model = LatentSDE(2)
    with pytest.raises(ValueError, match="xs must"):
        model(torch.randn(3, 4), torch.linspace(0, 1, 4))
    with pytest.raises(ValueError, match="ts must"):
        model(torch.randn(3, 4, 2), torch.linspace(0, 1, 5))


def test_bad_flags_values_and_counts_raise_naming_them():
    with pytest.raises(TypeError, match="adjoint must be a bool"):
        LatentSDE(2, adjoint="no")
    for obs_std in (0.0, -1.0):
        with pytest.raises(ValueError, match="obs_std"):
            LatentSDE(2, obs_std=obs_std)
    model = LatentSDE(2)
    ts = torch.linspace(0, 1, 4)
    for bad in (float("nan"), float("inf")):
        xs = torch.randn(3, 4, 2)
        xs[0, 2, 1] = bad
        with pytest.raises(ValueError, match="xs must be finite"):
            model(xs, ts)
    with pytest.raises(ValueError, match="ts must be finite and strictly increasing"):
        model(torch.randn(3, 4, 2), ts.flip(0))
    with pytest.raises(ValueError, match="n must be a positive int"):
        model.sample(0, ts)
