"""Closed-form fields of an interpolant between two isotropic Gaussian mixtures.

For independent x0 ~ sum_i a_i N(mu0_i, v0_i I), x1 ~ sum_j c_j N(mu1_j, v1_j I) and
x_t = alpha x0 + beta x1 + gamma z, conditional on the pair (i, j) x_t is Gaussian with mean
m_ij = alpha mu0_i + beta mu1_j and covariance C_ij I, C_ij = alpha^2 v0_i + beta^2 v1_j + gamma^2
(paper App. A; reference interflow/gmm.py). With posterior pair weights w_ij(x):

* b(t, x) = sum w_ij [m_dot_ij + (C_dot_ij / 2)(x - m_ij) / C_ij]   (Cov(d/dt x_t, x_t | ij) = C_dot/2 I)
* s(t, x) = -sum w_ij (x - m_ij) / C_ij
* E[x0 | x] = sum w_ij [mu0_i + alpha v0_i (x - m_ij) / C_ij], likewise x1 with beta v1_j, z with gamma.

These are exact, so samplers and losses can be tested without learning. For a one-sided
interpolant pass ``rho0 = standard_normal(d)`` (x0 is the latent).
"""
from __future__ import annotations

import math

import torch

from .interpolant import Interpolant, expand_time
from .mixture import GaussianMixture


class MixtureInterpolantFields:
    """Exact b, v, s, eta and log rho_t for ``interpolant`` between ``rho0`` and ``rho1``."""

    def __init__(self, interpolant: Interpolant, rho0: GaussianMixture, rho1: GaussianMixture):
        if not isinstance(interpolant, Interpolant):
            raise TypeError(f"interpolant must be an nde.interpolants.Interpolant, got {type(interpolant).__name__}")
        for name, rho in (("rho0", rho0), ("rho1", rho1)):
            if not isinstance(rho, GaussianMixture):
                raise TypeError(f"{name} must be an nde.interpolants.GaussianMixture, got {type(rho).__name__}")
        if rho0.dim != rho1.dim:
            raise ValueError(f"rho0 and rho1 dimensions differ: {rho0.dim} vs {rho1.dim}")
        self.interpolant, self.rho0, self.rho1 = interpolant, rho0, rho1

    def _pairs(self, t: torch.Tensor, x: torch.Tensor):
        """Per-pair quantities, each ``(B, I, J[, d])``, and the posterior log-weights."""
        t = expand_time(t, x)
        if x.dim() != 2 or x.shape[1] != self.rho0.dim:
            raise ValueError(f"x must have shape (B, {self.rho0.dim}) for these mixtures, got {tuple(x.shape)}")
        it, r0, r1 = self.interpolant, self.rho0.to(x.dtype, x.device), self.rho1.to(x.dtype, x.device)
        a, ad = it.alpha(t)[:, None, None], it.alpha_dot(t)[:, None, None]
        b, bd = it.beta(t)[:, None, None], it.beta_dot(t)[:, None, None]
        g2, ggd = it.gamma(t)[:, None, None] ** 2, it.gamma.gamma_dot_gamma(t)[:, None, None]
        v0, v1 = r0.variances[None, :, None], r1.variances[None, None, :]
        mean = a[..., None] * r0.means[None, :, None] + b[..., None] * r1.means[None, None, :]
        mean_dot = ad[..., None] * r0.means[None, :, None] + bd[..., None] * r1.means[None, None, :]
        cov = a ** 2 * v0 + b ** 2 * v1 + g2
        half_cov_dot = a * ad * v0 + b * bd * v1 + ggd
        resid = x[:, None, None, :] - mean
        d = x.shape[1]
        logw = (r0.weights.log()[None, :, None] + r1.weights.log()[None, None, :]
                - 0.5 * resid.square().sum(-1) / cov - 0.5 * d * torch.log(2 * math.pi * cov))
        return dict(a=a, b=b, v0=v0, v1=v1, mean_dot=mean_dot, cov=cov, half_cov_dot=half_cov_dot,
                    resid=resid, logw=logw, t=t)

    @staticmethod
    def _average(p: dict, per_pair: torch.Tensor) -> torch.Tensor:
        w = torch.softmax(p["logw"].flatten(1), dim=1).reshape(p["logw"].shape)
        return (w[..., None] * per_pair).sum(dim=(1, 2))

    def log_prob(self, t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
        """``(B,)`` log rho_t(x)."""
        return torch.logsumexp(self._pairs(t, x)["logw"].flatten(1), dim=1)

    def velocity(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """b(t, x) = E[d/dt x_t | x_t = x]."""
        p = self._pairs(t, x)
        return self._average(p, p["mean_dot"] + (p["half_cov_dot"] / p["cov"])[..., None] * p["resid"])

    def score(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """s(t, x) = grad log rho_t(x)."""
        p = self._pairs(t, x)
        return self._average(p, -p["resid"] / p["cov"][..., None])

    def x0_posterior_mean(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        p = self._pairs(t, x)
        mu0 = self.rho0.means.to(x)[None, :, None]
        return self._average(p, mu0 + (p["a"] * p["v0"] / p["cov"])[..., None] * p["resid"])

    def x1_posterior_mean(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        p = self._pairs(t, x)
        mu1 = self.rho1.means.to(x)[None, None, :]
        return self._average(p, mu1 + (p["b"] * p["v1"] / p["cov"])[..., None] * p["resid"])

    def denoiser(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """eta(t, x) = E[latent | x_t = x]: E[x0 | x] when one-sided, else E[z | x] = -gamma s."""
        if self.interpolant.one_sided:
            return self.x0_posterior_mean(t, x)
        t = expand_time(t, x)
        return -self.interpolant.gamma(t)[:, None] * self.score(t, x)

    def interpolant_velocity(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """v(t, x) = E[alpha_dot x0 + beta_dot x1 | x_t = x] (Remark 2.10)."""
        t = expand_time(t, x)
        it = self.interpolant
        return (it.alpha_dot(t)[:, None] * self.x0_posterior_mean(t, x)
                + it.beta_dot(t)[:, None] * self.x1_posterior_mean(t, x))
