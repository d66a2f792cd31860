"""Isotropic Gaussian mixtures: sampling, exact log-density and score.

A mixture ``sum_k w_k N(mu_k, v_k I)`` is the closed-form test density used by the
interpolant tests, the f-distill analytic teacher and the exact log-likelihood metric.
Each component has an isotropic covariance ``v_k I`` (``v_k`` a scalar per component).
"""
from __future__ import annotations

import math

import torch

from .._checks import check_generator, finite_tensor, floating_dtype, sample_count


class GaussianMixture:
    """``sum_k weights[k] * N(means[k], variances[k] * I)``.

    Args:
        weights: ``(K,)`` non-negative, normalised to sum 1.
        means: ``(K, d)``.
        variances: ``(K,)`` positive per-component isotropic variances, or a float for all.

    All three must be finite. The mixture's dtype is that of ``means`` if it is floating-point, else the
    promoted floating dtype of the other two (else the default dtype): integer means never truncate them.
    """

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, variances: torch.Tensor | float):
        dtype = floating_dtype(means, weights, variances)
        means = finite_tensor(torch.as_tensor(means).to(dtype), "means")
        if means.dim() != 2:
            raise ValueError(f"means must have shape (K, d), got {tuple(means.shape)}")
        weights = finite_tensor(torch.as_tensor(weights, dtype=dtype, device=means.device), "weights")
        if weights.shape != means.shape[:1] or bool((weights < 0).any()) or float(weights.sum()) <= 0:
            raise ValueError("weights must be a non-negative (K,) tensor with positive sum")
        variances = finite_tensor(torch.as_tensor(variances, dtype=dtype, device=means.device), "variances")
        if variances.dim() > 1 or variances.numel() not in (1, means.shape[0]):
            raise ValueError(f"variances must be a float or a ({means.shape[0]},) tensor (one isotropic variance per "
                             f"component), got shape {tuple(variances.shape)}")
        variances = variances.expand(means.shape[0]).clone()
        if bool((variances <= 0).any()):
            raise ValueError("variances must be positive")
        self.weights = weights / weights.sum()
        self.means = means
        self.variances = variances

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> "GaussianMixture":
        return GaussianMixture(self.weights.to(dtype=dtype, device=device),
                               self.means.to(dtype=dtype, device=device),
                               self.variances.to(dtype=dtype, device=device))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``(n, d)`` samples (``n >= 0``)."""
        n = sample_count(n)
        check_generator(generator)
        if n == 0:  # torch.multinomial refuses to draw no samples
            return self.means.new_zeros(0, self.dim)
        idx = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype, device=self.means.device)
        return self.means[idx] + self.variances[idx].sqrt()[:, None] * noise

    def _promoted(self, x: torch.Tensor) -> tuple[torch.Tensor, "GaussianMixture"]:
        """``x`` checked to be a floating-point ``(n, d)`` tensor, and it and the mixture in their promoted dtype
        on ``x``'s device (a float64 x against a float32 mixture used to fail inside torch.cdist)."""
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.dim or not x.is_floating_point():
            got = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x must be a floating-point (n, {self.dim}) tensor for this mixture, got a {got}")
        dtype = torch.promote_types(x.dtype, self.means.dtype)
        same = dtype == self.means.dtype and x.device == self.means.device
        return x.to(dtype), self if same else self.to(dtype, x.device)

    def component_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, K)``: ``log w_k + log N(x; mu_k, v_k I)`` for ``x`` of shape ``(n, d)``, in the promoted dtype of
        ``x`` and the mixture."""
        x, mix = self._promoted(x)
        sq = torch.cdist(x, mix.means).square()
        return (mix.weights.log() - 0.5 * sq / mix.variances
                - 0.5 * self.dim * torch.log(2 * math.pi * mix.variances))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``(n,)`` exact log-density, in ``x``'s dtype."""
        return torch.logsumexp(self.component_log_probs(x), dim=1).to(x.dtype)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, d)`` exact score ``grad log p(x) = -sum_k w_k(x) (x - mu_k) / v_k``, in ``x``'s dtype."""
        resp = torch.softmax(self.component_log_probs(x), dim=1)
        z, mix = self._promoted(x)
        diff = z[:, None, :] - mix.means[None]
        return -(resp[..., None] * diff / mix.variances[None, :, None]).sum(1).to(x.dtype)

    def mean_distance(self, x: torch.Tensor) -> torch.Tensor:
        """``(n,)``: E|x_i - Y| for Y of this mixture (2-D only), in float64, by the Rice mean of each component.

        For Z ~ N(nu, s^2 I_2), E|Z| = s sqrt(pi / 2) L_{1/2}(-a) with a = |nu|^2 / (2 s^2), i.e.
        s sqrt(pi / 2) ((1 + a) I0e(a / 2) + a I1e(a / 2)) with exponentially scaled Bessel functions (stable for
        all a; tends to |nu| far from the component). Used by :func:`nde.metrics.energy_distance_exact`.
        """
        if self.dim != 2 or x.dim() != 2 or x.shape[1] != 2:
            raise ValueError(f"mean_distance needs a 2-D mixture and x of shape (n, 2), got d={self.dim}, "
                             f"x {tuple(x.shape)}")
        means = self.means.double().to(x.device)
        offsets = torch.cdist(x.double(), means)                             # (n, K)
        std = self.variances.double().sqrt().to(x.device)
        return _rice_mean(offsets, std) @ self.weights.double().to(x.device)

    def self_distance(self) -> float:
        """E|Y - Y'| for independent Y, Y' of this mixture (2-D only): Y_k - Y'_l ~ N(mu_k - mu_l, (v_k + v_l) I)."""
        if self.dim != 2:
            raise ValueError(f"self_distance needs a 2-D mixture, got d={self.dim}")
        means, w = self.means.double(), self.weights.double()
        var = self.variances.double()
        pairwise = _rice_mean(torch.cdist(means, means), (var[:, None] + var[None, :]).sqrt())
        return float(w @ pairwise @ w)

    def diffused(self, alpha: float | torch.Tensor, sigma: float | torch.Tensor) -> "GaussianMixture":
        """Law of ``alpha * x + sigma * z`` with ``x ~ self`` and ``z ~ N(0, I)`` (scalar alpha, sigma)."""
        alpha = torch.as_tensor(alpha, dtype=self.means.dtype, device=self.means.device)
        sigma = torch.as_tensor(sigma, dtype=self.means.dtype, device=self.means.device)
        if alpha.numel() != 1 or sigma.numel() != 1:
            raise ValueError(f"alpha and sigma must be scalars, got shapes {tuple(alpha.shape)} and "
                             f"{tuple(sigma.shape)} (a (d,) alpha broadcast over the means' coordinates)")
        alpha, sigma = alpha.reshape(()), sigma.reshape(())
        return GaussianMixture(self.weights, alpha * self.means, alpha ** 2 * self.variances + sigma ** 2)


def _rice_mean(nu: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """E|Z| for Z ~ N(m, s^2 I_2) with |m| = nu (the Rice distribution's mean), elementwise."""
    a = nu.square() / (2 * s.square())
    return s * math.sqrt(math.pi / 2) * ((1 + a) * torch.special.i0e(a / 2) + a * torch.special.i1e(a / 2))


def ring_mixture(n_modes: int = 8, radius: float = 3.0, variance: float = 0.05,
                 weights: torch.Tensor | None = None, dtype: torch.dtype = torch.float32) -> GaussianMixture:
    """``n_modes`` Gaussians evenly spaced on a circle (the '8 Gaussians' toy when n_modes=8)."""
    if isinstance(n_modes, bool) or not isinstance(n_modes, int) or n_modes < 1:
        raise ValueError(f"n_modes must be a positive int, got {n_modes!r}")
    angles = torch.arange(n_modes, dtype=dtype) * (2 * math.pi / n_modes)
    means = radius * torch.stack([angles.cos(), angles.sin()], dim=1)
    if weights is None:
        weights = torch.ones(n_modes, dtype=dtype)
    return GaussianMixture(torch.as_tensor(weights, dtype=dtype), means, variance)


def standard_normal(dim: int, dtype: torch.dtype = torch.float32) -> GaussianMixture:
    """``N(0, I_dim)`` as a one-component mixture."""
    return GaussianMixture(torch.ones(1, dtype=dtype), torch.zeros(1, dim, dtype=dtype), 1.0)
