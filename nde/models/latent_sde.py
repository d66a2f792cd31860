"""Latent SDE (Li et al. 2020, "Scalable gradients for SDEs", section 5 and eq. 8-9).

Prior:      dz = h(t, z) dt + g(t, z) dW,          z0 ~ p(z0) = N(mu_p, sigma_p^2)
Posterior:  dz = f(t, z, ctx(t)) dt + g(t, z) dW,   z0 ~ q(z0 | x) = N(mu_q, sigma_q^2)

with the diffusion g shared (so the path KL is finite) and diagonal. ``ctx(t)`` is a context
read from the data by a GRU run backwards in time. Training maximises the ELBO

    E_q[sum_i log p(x_i | z(t_i))] - KL(q(z0) || p(z0)) - E_q int 1/2 |(f - h) / g|^2 dt,

where the last term is the KL between the path measures (Girsanov), accumulated by
``nde.sde.sdeint(..., logqp=True)`` along the sampled posterior paths. Itô, diagonal noise.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from nde._checks import flag, number
from nde.models.neural_ode import as_time_tensor, check_count, check_series, check_sizes


class DiagonalDiffusion(nn.Module):
    """``g_i(z_i)``: one small MLP per latent dimension (so the noise is truly diagonal, as the
    Itô Milstein / adjoint conventions require). Batched with grouped weights:
    ``(batch, d)`` -> ``(batch, d)``. Outputs are positive: ``softplus`` by default (unbounded,
    so the latent scale is free), or ``max_scale * sigmoid`` if ``max_scale`` is given (as in
    torchsde's example; bounded, which can starve the noise when the readout is small)."""

    def __init__(self, dim: int, width: int = 16, max_scale: float | None = None):
        super().__init__()
        check_sizes(dim=dim, width=width)
        if max_scale is not None:
            number(max_scale, "max_scale", positive=True)
        self.w1 = nn.Parameter(torch.randn(dim, width) * 0.5)
        self.b1 = nn.Parameter(torch.zeros(dim, width))
        self.w2 = nn.Parameter(torch.randn(dim, width) / math.sqrt(width))
        self.b2 = nn.Parameter(torch.zeros(dim))
        self.max_scale = max_scale

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        hidden = torch.nn.functional.softplus(z.unsqueeze(-1) * self.w1 + self.b1)      # (batch, d, width)
        out = (hidden * self.w2).sum(-1) + self.b2
        if self.max_scale is None:
            return torch.nn.functional.softplus(out)
        return self.max_scale * torch.sigmoid(out)


def _mlp(inp: int, width: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, width), nn.Softplus(), nn.Linear(width, width), nn.Softplus(),
                         nn.Linear(width, out))


class _PosteriorDrift(nn.Module):
    """``f(t, z, ctx) = MLP([z, ctx])``."""

    def __init__(self, latent: int, context: int, width: int):
        super().__init__()
        self.net = _mlp(latent + context, width, latent)

    def forward(self, t: torch.Tensor, z: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([z, ctx], dim=-1))


class _PriorDrift(nn.Module):
    def __init__(self, latent: int, width: int):
        super().__init__()
        self.net = _mlp(latent, width, latent)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class LatentSDE(nn.Module):
    """Latent SDE model for time series ``x`` of shape ``(batch, T, data_dim)`` at times ``ts`` ``(T,)``.

    Args:
        data_dim, latent_dim, context_dim, width: sizes.
        obs_std: standard deviation of the Gaussian observation model ``x ~ N(W z, obs_std^2)``, ``> 0``.
        dt: SDE step; ``method``: an Itô method of :mod:`nde.sde` (default ``"euler"``).
        adjoint: bool, use ``sdeint_adjoint`` (stochastic adjoint) instead of autograd through the steps.
        posterior_drift, prior_drift, diffusion: optional replacement modules, called as
            ``f(t, z, ctx)``, ``h(t, z)``, ``g(t, z)`` with ``z`` ``(batch, latent_dim)``; ``g``
            returns ``(batch, latent_dim)`` (diagonal noise, shared by prior and posterior).

    The module is also the ``sde`` object handed to :func:`nde.sde.sdeint` (methods ``f``, ``g``,
    ``h``), as in torchsde's latent SDE example.
    """

    sde_type = "ito"
    noise_type = "diagonal"

    def __init__(self, data_dim: int, latent_dim: int = 4, context_dim: int = 16, width: int = 64, *,
                 obs_std: float = 0.1, dt: float = 1e-2, method: str = "euler", adjoint: bool = False,
                 posterior_drift: nn.Module | None = None, prior_drift: nn.Module | None = None,
                 diffusion: nn.Module | None = None):
        super().__init__()
        number(obs_std, "obs_std", positive=True)
        flag(adjoint, "adjoint")
        check_sizes(data_dim=data_dim, latent_dim=latent_dim, context_dim=context_dim, width=width)
        self.encoder = nn.GRU(data_dim, width, batch_first=True)
        self.context = nn.Linear(width, context_dim)
        self.qz0 = nn.Linear(context_dim, 2 * latent_dim)
        self.posterior_drift = posterior_drift or _PosteriorDrift(latent_dim, context_dim, width)
        self.prior_drift = prior_drift or _PriorDrift(latent_dim, width)
        self.diffusion = diffusion or DiagonalDiffusion(latent_dim)
        self.project = nn.Linear(latent_dim, data_dim)
        self.pz0_mean = nn.Parameter(torch.zeros(latent_dim))
        self.pz0_logstd = nn.Parameter(torch.zeros(latent_dim))
        self.latent_dim, self.obs_std, self.dt, self.method, self.adjoint = latent_dim, obs_std, dt, method, adjoint
        self._ctx: tuple[torch.Tensor, torch.Tensor] | None = None

    # --- the sde protocol -------------------------------------------------------------------
    def f(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Posterior drift, with the context of the latest observation time ``<= t``."""
        if self._ctx is None:
            raise RuntimeError("the posterior drift needs a context: call forward / posterior_paths")
        ts, ctx = self._ctx
        index = (torch.searchsorted(ts, t.detach().to(ts.dtype).reshape(1), right=True) - 1).clamp(0, ts.shape[0] - 1)
        return self.posterior_drift(t, z, ctx.index_select(1, index).squeeze(1))

    def h(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Prior drift."""
        return self.prior_drift(t, z)

    def g(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Shared diagonal diffusion ``(batch, latent_dim)``."""
        return self.diffusion(t, z)

    # --- model ------------------------------------------------------------------------------
    def _sdeint(self, z0: torch.Tensor, ts: torch.Tensor, **kwargs):
        from nde.sde import sdeint, sdeint_adjoint  # the SDE core
        if not self.adjoint:
            return sdeint(self, z0, ts, dt=self.dt, method=self.method, **kwargs)
        # The adjoint differentiates the SDE's own inputs: the context (whose gradient then flows
        # back into the encoder) and the drift / diffusion parameters.
        params = [*self.posterior_drift.parameters(), *self.prior_drift.parameters(), *self.diffusion.parameters()]
        if self._ctx is not None:
            params.insert(0, self._ctx[1])
        return sdeint_adjoint(self, z0, ts, dt=self.dt, method=self.method, adjoint_params=tuple(params), **kwargs)

    def _check(self, xs: torch.Tensor, ts) -> torch.Tensor:
        check_series(xs, "xs", self.encoder.input_size)
        if not bool(xs.isfinite().all()):
            raise ValueError("xs must be finite: LatentSDE has no missing-value support (NaN) and inf is not data")
        ts = as_time_tensor(ts, xs, "ts", increasing=True)
        if ts.shape[0] != xs.shape[1]:
            raise ValueError(f"ts must have length {xs.shape[1]} to match xs, got {ts.shape[0]}")
        return ts

    def posterior_paths(self, xs: torch.Tensor, ts) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample ``z ~ q(. | xs)`` at ``ts`` and its KL to the prior.

        Returns ``zs`` ``(batch, T, latent_dim)`` and ``kl`` ``(batch,)`` =
        ``KL(q(z0) || p(z0))`` + the path KL estimated on the sampled path (Li et al. eq. 9).
        """
        ts = self._check(xs, ts)
        hidden, _ = self.encoder(xs.flip(1))
        ctx = self.context(hidden.flip(1))                                   # (batch, T, context)
        mean, logstd = self.qz0(ctx[:, 0]).chunk(2, dim=-1)
        std = logstd.exp()
        z0 = mean + std * torch.randn_like(std)
        self._ctx = (ts, ctx)            # kept: an adjoint backward pass evaluates f again
        zs, log_ratio = self._sdeint(z0, ts, logqp=True)
        p_std = self.pz0_logstd.exp()
        kl0 = (self.pz0_logstd - logstd + (std ** 2 + (mean - self.pz0_mean) ** 2) / (2 * p_std ** 2) - 0.5).sum(-1)
        return zs.movedim(0, 1), kl0 + log_ratio.sum(0)

    def forward(self, xs: torch.Tensor, ts) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch means of ``log p(xs | z)`` (summed over time and channels) and of the KL; the
        negative ELBO is ``kl - log_px``."""
        zs, kl = self.posterior_paths(xs, ts)
        err = (xs - self.project(zs)) / self.obs_std
        log_px = (-0.5 * err ** 2 - math.log(self.obs_std) - 0.5 * math.log(2 * math.pi)).sum((1, 2))
        return log_px.mean(), kl.mean()

    def sample(self, n: int, ts, bm=None) -> torch.Tensor:
        """``n`` prior sample paths in data space (noise-free means), ``(n, len(ts), data_dim)``."""
        check_count(n, "n")
        like = self.pz0_mean
        ts = as_time_tensor(ts, like.detach(), "ts")
        z0 = self.pz0_mean + self.pz0_logstd.exp() * torch.randn(n, self.latent_dim, dtype=like.dtype,
                                                                 device=like.device)
        zs = self._sdeint(z0, ts, bm=bm, names={"drift": "h"})
        return self.project(zs.movedim(0, 1))
