"""Gaussian mixtures with exact noisy marginals: the analytic "pretrained model" for verification.

Data q_0 = sum_k pi_k N(mu_k, Sigma_k). Under x_t = alpha_t x_0 + sigma_t eps the marginal is
q_t = sum_k pi_k N(alpha_t mu_k, alpha_t^2 Sigma_k + sigma_t^2 I), so the exact noise prediction is
eps*(x, t) = -sigma_t grad log q_t(x) (research note diffusion.md section 0), a softmax-weighted sum of
per-component terms. With Sigma_k = U_k diag(d_k) U_k^T every covariance of q_t shares U_k, so all
solves are elementwise in the eigenbasis.
"""
from __future__ import annotations

import math

import torch

from .._checks import check_generator, finite_tensor, floating_dtype, sample_count
from .schedules import NoiseSchedule


class GaussianMixture:
    """A D-dimensional Gaussian mixture.

    Args:
        weights: (K,) positive mixture weights (normalised here).
        means: (K, D) component means.
        covariances: (K, D, D) symmetric positive definite matrices, or (K, D) diagonals, or a float
            (isotropic variance shared by all components).

    All three must be finite. The mixture's dtype is that of ``means`` if it is floating-point, else the
    promoted floating dtype of the other two (else the default dtype): integer means never truncate them.
    """

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, covariances: torch.Tensor | float):
        dtype = floating_dtype(means, weights, covariances)
        means = finite_tensor(torch.as_tensor(means).to(dtype), "means")
        if means.dim() != 2:
            raise ValueError(f"means must have shape (K, D), got {tuple(means.shape)}")
        n_comp, dim = means.shape
        weights = finite_tensor(torch.as_tensor(weights, dtype=dtype, device=means.device), "weights")
        if weights.shape != (n_comp,) or bool((weights <= 0).any()):
            raise ValueError(f"weights must be positive with shape ({n_comp},), got {tuple(weights.shape)}")
        self.means = means
        self.log_weights = torch.log(weights / weights.sum())
        self.eigvals, self.eigvecs = _eigen(covariances, n_comp, dim, means)
        if bool((self.eigvals <= 0).any()):
            raise ValueError("covariances must be positive definite")

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> "GaussianMixture":
        out = GaussianMixture.__new__(GaussianMixture)
        out.means = self.means.to(device=device, dtype=dtype)
        out.log_weights = self.log_weights.to(device=device, dtype=dtype)
        out.eigvals = self.eigvals.to(device=device, dtype=dtype)
        out.eigvecs = self.eigvecs.to(device=device, dtype=dtype)
        return out

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, D) samples of q_0 (n >= 0; a CPU ``generator`` or None)."""
        n = sample_count(n)
        check_generator(generator)
        if n == 0:  # torch.multinomial refuses to draw no samples
            return self.means.new_empty(0, self.dim)
        comp = torch.multinomial(self.log_weights.exp().cpu(), n, replacement=True, generator=generator)
        comp = comp.to(self.means.device)
        z = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype).to(self.means.device)
        scaled = (z * self.eigvals[comp].sqrt()).unsqueeze(-1)
        return self.means[comp] + (self.eigvecs[comp] @ scaled).squeeze(-1)

    def component_log_probs(self, x: torch.Tensor, alpha: torch.Tensor | float = 1.0,
                            sigma: torch.Tensor | float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-component log densities of q_t at x and the whitened residuals.

        Args:
            x: (B, D); alpha, sigma: floats or (B,) tensors.
        Returns:
            log_probs (B, K) including log weights; ``r / c`` (B, K, D): C_k^{-1}(x - alpha mu_k) in the eigenbasis.
        """
        alpha = _column(alpha, x)
        sigma = _column(sigma, x)
        n_comp, dim = self.means.shape
        # U_k^T (x - alpha mu_k) for all k with one GEMM: x @ [U_1 ... U_K] - alpha [mu_k^T U_k]_k.
        stacked = self.eigvecs.permute(1, 0, 2).reshape(dim, n_comp * dim)
        rotated_means = (self.means.unsqueeze(1) @ self.eigvecs).squeeze(1)     # (K, D)
        r = (x @ stacked).reshape(-1, n_comp, dim) - alpha.unsqueeze(-1) * rotated_means
        c = alpha.unsqueeze(-1) ** 2 * self.eigvals + sigma.unsqueeze(-1) ** 2  # (B, K, D)
        log_probs = (self.log_weights - 0.5 * (r * r / c).sum(-1) - 0.5 * torch.log(c).sum(-1)
                     - 0.5 * dim * math.log(2 * math.pi))
        return log_probs, r / c

    def log_prob(self, x: torch.Tensor, alpha: torch.Tensor | float = 1.0,
                 sigma: torch.Tensor | float = 0.0) -> torch.Tensor:
        """(B,) log density of the noisy marginal q_t (of q_0 itself with the defaults)."""
        log_probs, _ = self.component_log_probs(x, alpha, sigma)
        return torch.logsumexp(log_probs, dim=-1)

    def score(self, x: torch.Tensor, alpha: torch.Tensor | float, sigma: torch.Tensor | float) -> torch.Tensor:
        """(B, D) exact score grad_x log q_t(x) = -sum_k w_k(x) C_k^{-1}(x - alpha mu_k)."""
        log_probs, whitened = self.component_log_probs(x, alpha, sigma)
        resp = torch.softmax(log_probs, dim=-1)                               # (B, K)
        n_comp, dim = self.means.shape
        stacked = self.eigvecs.permute(1, 0, 2).reshape(dim, n_comp * dim)
        # sum_k w_k U_k C_k^{-1} r_k with one GEMM against [U_1 ... U_K]^T.
        return -(resp.unsqueeze(-1) * whitened).reshape(-1, n_comp * dim) @ stacked.T

    def nearest_component(self, x: torch.Tensor) -> torch.Tensor:
        """(B,) index of the component with the highest responsibility at x (under q_0)."""
        return self.component_log_probs(x)[0].argmax(-1)


class GaussianMixtureNoisePredictor(torch.nn.Module):
    """Exact noise prediction eps*(x, t) = -sigma_t grad log q_t(x) of a Gaussian mixture under a schedule.

    Call as ``model(x, t)`` with x (B, D) and t a scalar or (B,) tensor. It is computed in the mixture's dtype
    and returned in x's (an x of another dtype used to fail inside the matrix product).
    """

    def __init__(self, mixture: GaussianMixture, schedule: NoiseSchedule):
        super().__init__()
        if not isinstance(mixture, GaussianMixture):
            raise TypeError(f"mixture must be an nde.diffusion.GaussianMixture, got {type(mixture).__module__}."
                            f"{type(mixture).__name__}")
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be an nde.diffusion.NoiseSchedule, got {type(schedule).__name__}")
        self.mixture = mixture
        self.schedule = schedule

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        z = x.to(self.mixture.means.dtype)
        t = torch.as_tensor(t, dtype=z.dtype, device=z.device)
        alpha, sigma = self.schedule.alpha(t), self.schedule.sigma(t)
        return (-_column(sigma, z) * self.mixture.score(z, alpha, sigma)).to(x.dtype)


def _column(v: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Broadcast a float or (B,) tensor to shape (B, 1)."""
    v = torch.as_tensor(v, dtype=x.dtype, device=x.device)
    return v.reshape(-1, 1).expand(x.shape[0], 1) if v.dim() > 0 else v.expand(x.shape[0], 1)


def _eigen(covariances, n_comp: int, dim: int, means: torch.Tensor):
    if isinstance(covariances, (int, float)):
        covariances = torch.full((n_comp, dim), float(covariances), dtype=means.dtype, device=means.device)
    cov = finite_tensor(torch.as_tensor(covariances, dtype=means.dtype, device=means.device), "covariances")
    if cov.shape == (n_comp, dim):
        eye = torch.eye(dim, dtype=means.dtype, device=means.device).expand(n_comp, dim, dim)
        return cov.clone(), eye.clone()
    if cov.shape == (n_comp, dim, dim):
        vals, vecs = torch.linalg.eigh(0.5 * (cov + cov.transpose(-1, -2)))
        return vals, vecs
    raise ValueError(f"covariances must be a float, (K, D) or (K, D, D); got shape {tuple(cov.shape)}")


def ring_mixture(n_modes: int = 8, radius: float = 3.0, variance: float = 0.05,
                 dtype: torch.dtype = torch.float64) -> GaussianMixture:
    """2-D mixture of ``n_modes`` equal-weight isotropic Gaussians on a circle (the "8 Gaussians" toy)."""
    if isinstance(n_modes, bool) or not isinstance(n_modes, int) or n_modes < 1:
        raise ValueError(f"n_modes must be a positive int, got {n_modes!r}")
    angle = torch.arange(n_modes, dtype=dtype) * (2 * math.pi / n_modes)
    means = radius * torch.stack([angle.cos(), angle.sin()], dim=1)
    return GaussianMixture(torch.ones(n_modes, dtype=dtype), means, variance)


def random_mixture(dim: int, n_modes: int, generator: torch.Generator | None = None, scale: float = 2.0,
                   dtype: torch.dtype = torch.float64) -> GaussianMixture:
    """A random D-dimensional mixture with random weights, means ~ N(0, scale^2 I) and random full covariances."""
    weights = 0.5 + torch.rand(n_modes, generator=generator, dtype=dtype)
    means = scale * torch.randn(n_modes, dim, generator=generator, dtype=dtype)
    factors = torch.randn(n_modes, dim, dim, generator=generator, dtype=dtype) / math.sqrt(dim)
    cov = 0.1 * (factors @ factors.transpose(-1, -2)) + 0.02 * torch.eye(dim, dtype=dtype)
    return GaussianMixture(weights, means, cov)
