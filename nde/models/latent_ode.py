"""Latent ODE with an ODE-RNN encoder (Rubanova et al. 2019, "Latent ODEs for irregularly-
sampled time series", algorithm 1 and section 3).

Encoder: running backwards over the observations, the hidden state h evolves by an ODE
``dh/dt = g(h)`` across each gap and is updated by a GRU cell at each observation;
``q(z0) = N(mu(h), sigma(h)^2)``. Decoder: ``z(t)`` solves ``dz/dt = f(z)`` from ``z0``,
``x(t) ~ N(W z(t), obs_std^2)``. Training maximises the ELBO (Rubanova eq. 5)
``E_q[sum_i log p(x_i | z(t_i))] - KL(q(z0) || N(0, I))``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

import nde
from nde.interpolation.missing import check_finite_or_nan
from nde._checks import number
from nde.models.neural_ode import (NeuralODE, as_time_tensor, check_count, check_series, check_sizes,
                                   check_solver_options)


def _mlp(inp: int, width: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(), nn.Linear(width, out))


class _Field(nn.Module):
    """Autonomous vector field ``(t, y) -> net(y)``."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)


class ODERNNEncoder(nn.Module):
    """ODE-RNN read backwards in time.

    Args:
        input_channels: channels of ``x``. The GRU sees ``[x with NaN -> 0, observed mask]``.
        hidden: size of ``h``.
        out: size of the output ``Linear(h)``.
        width: width of the ODE's MLP.
        **solver_options: for :func:`nde.solve_ode` across each gap.
    """

    def __init__(self, input_channels: int, hidden: int, out: int, width: int = 64, **solver_options):
        super().__init__()
        check_sizes(input_channels=input_channels, hidden=hidden, out=out, width=width)
        check_solver_options(solver_options)
        self.field = _Field(_mlp(hidden, width, hidden))
        self.cell = nn.GRUCell(2 * input_channels, hidden)
        self.out = nn.Linear(hidden, out)
        self.hidden, self.input_channels = hidden, input_channels
        self.solver_options = solver_options

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        """``x``: ``(batch, length, channels)`` (NaN = missing), ``t``: ``(length,)`` -> ``(batch, out)``."""
        check_series(x, "x", self.input_channels)
        check_finite_or_nan(x)
        t = as_time_tensor(t, x, increasing=True)
        if t.shape[0] != x.shape[1]:
            raise ValueError(f"t must have length {x.shape[1]} to match x, got {t.shape[0]}")
        observed = ~torch.isnan(x)
        inputs = torch.cat([torch.where(observed, x, torch.zeros_like(x)), observed.to(x.dtype)], dim=-1)
        any_observed = observed.any(-1, keepdim=True)
        h = x.new_zeros(x.shape[0], self.hidden)
        for i in range(x.shape[1] - 1, -1, -1):
            if i < x.shape[1] - 1:
                gap = torch.stack([t.new_zeros(()), t[i + 1] - t[i]])
                h = nde.solve_ode(self.field, h, gap, **self.solver_options).ys[-1]
            h = torch.where(any_observed[:, i], self.cell(inputs[:, i], h), h)
        return self.out(h)


class LatentODE(nn.Module):
    """Latent ODE model for (irregular, partially observed) time series.

    Args:
        data_dim: channels of the data.
        latent_dim: size of ``z``.
        hidden: ODE-RNN hidden size.
        width: MLP width of both ODEs.
        obs_std: standard deviation of the Gaussian observation model, a positive number.
        **solver_options: for :func:`nde.solve_ode` (encoder and decoder).
    """

    def __init__(self, data_dim: int, latent_dim: int = 4, hidden: int = 32, width: int = 64,
                 obs_std: float = 0.1, **solver_options):
        super().__init__()
        number(obs_std, "obs_std", positive=True)
        check_sizes(data_dim=data_dim, latent_dim=latent_dim, hidden=hidden, width=width)
        check_solver_options(solver_options)
        self.encoder = ODERNNEncoder(data_dim, hidden, 2 * latent_dim, width, **solver_options)
        self.decoder = NeuralODE(_mlp(latent_dim, width, latent_dim), autonomous=True, **solver_options)
        self.project = nn.Linear(latent_dim, data_dim)
        self.latent_dim, self.obs_std = latent_dim, obs_std

    def posterior(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation of ``q(z0 | x)``, each ``(batch, latent_dim)``."""
        mean, raw = self.encoder(x, t).chunk(2, dim=-1)
        return mean, nn.functional.softplus(raw) + 1e-4

    def decode(self, z0: torch.Tensor, t) -> torch.Tensor:
        """``z0`` ``(batch, latent_dim)`` -> predicted means ``(batch, len(t), data_dim)``."""
        return self.project(self.decoder(z0, as_time_tensor(t, z0)))

    def forward(self, x: torch.Tensor, t, t_out=None) -> torch.Tensor:
        """Reconstruct / extrapolate: the decoded posterior mean at ``t_out`` (default ``t``),
        ``(batch, len(t_out), data_dim)``. The posterior is of ``z`` at ``t[0]``, so the decoder
        starts there; ``t_out`` must be strictly increasing from ``t[0]`` or later (e.g. future
        times only, for extrapolation)."""
        mean, _ = self.posterior(x, t)
        if t_out is None:
            return self.decode(mean, t)
        t0 = as_time_tensor(t, x)[:1]
        t_out = as_time_tensor(t_out, x, "t_out", increasing=True)
        if bool(t_out[0] < t0[0]):
            raise ValueError(f"t_out must start at or after t[0] = {float(t0[0]):g}, where the posterior "
                             f"places z0; got t_out[0] = {float(t_out[0]):g}")
        if bool(t_out[0] == t0[0]):
            return self.decode(mean, t_out)
        return self.decode(mean, torch.cat([t0, t_out]))[:, 1:]

    def loss(self, x: torch.Tensor, t) -> torch.Tensor:
        """Negative ELBO per observed value (scalar), one reparameterised sample of ``z0``."""
        mean, std = self.posterior(x, t)
        z0 = mean + std * torch.randn_like(std)
        pred = self.decode(z0, t)
        observed = ~torch.isnan(x)
        err = torch.where(observed, (x - pred) / self.obs_std, torch.zeros_like(x))
        log_lik = -0.5 * err ** 2 - math.log(self.obs_std) - 0.5 * math.log(2 * math.pi)
        log_lik = (log_lik * observed).sum((1, 2))
        kl = (-torch.log(std) + 0.5 * (std ** 2 + mean ** 2) - 0.5).sum(-1)
        return ((kl - log_lik) / observed.sum((1, 2)).clamp(min=1)).mean()

    def sample(self, n: int, t) -> torch.Tensor:
        """``n`` prior trajectories ``(n, len(t), data_dim)`` (predicted means)."""
        check_count(n, "n")
        param = self.project.weight
        z0 = torch.randn(n, self.latent_dim, device=param.device, dtype=param.dtype)
        return self.decode(z0, t)
