"""Closed-form fields of the one-sided linear interpolant from N(0, I) to a uniform density on boxes.

For x_t = (1 - t) x0 + t x1 with x0 ~ N(0, I) and x1 uniform on a union of equal-volume, disjoint,
axis-aligned boxes (the checkerboard is 8 such squares), the posterior of x1 given x_t = x is the
prior restricted to each box times N(x1; x / t, (alpha / t)^2 I), alpha = 1 - t: per box and
coordinate a truncated normal, with mass Z = Phi(B) - Phi(A) and mean m + s (phi(A) - phi(B)) / Z
(m = x / t, s = alpha / t, A = (low - m) / s, B = (high - m) / s). Hence

* E[x1 | x] = sum_k w_k mean_k with box weights w_k proportional to prod_i Z_ki,
* eta(t, x) = E[x0 | x] = (x - t E[x1 | x]) / alpha          (the paper's eta_z for a one-sided path),
* b(t, x) = E[x1 - x0 | x] = (x - eta) / t                      (Eq. 4.19 with alpha = 1 - t, beta = t).

Valid for 0 < t < 1; use float64 (Z underflows for points far from every box in float32).
Used to measure how well learned b and eta fit, time by time (benchmarks/transport.py).
"""
from __future__ import annotations

import torch

from ..metrics import UniformBoxes
from .interpolant import expand_time


class BoxUniformFields:
    """Exact eta, b and E[x1 | x_t] for N(0, I) -> uniform on the boxes ``[lows[k], highs[k])``.

    Args:
        lows, highs: ``(K, d)`` box corners; the boxes must have equal volume (equal prior weights).
    """

    def __init__(self, lows: torch.Tensor, highs: torch.Tensor):
        if lows.shape != highs.shape or lows.dim() != 2 or not bool((highs > lows).all()):
            raise ValueError("lows and highs must be (K, d) tensors with highs > lows")
        volumes = (highs - lows).prod(1)
        if not torch.allclose(volumes, volumes[0].expand_as(volumes)):
            raise ValueError("the boxes must have equal volumes")
        self.lows, self.highs = lows, highs

    @classmethod
    def checkerboard(cls) -> "BoxUniformFields":
        """The 8 black 2 x 2 squares of :func:`nde.interpolants.checkerboard` (i + j even)."""
        squares = UniformBoxes.checkerboard()
        return cls(squares.lows, squares.highs)

    def expected_target(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """E[x1 | x_t = x], ``(B, d)``, for ``t`` of shape ``(B,)`` in (0, 1)."""
        t = expand_time(t, x)[:, None, None]
        lows, highs = self.lows.to(x)[None], self.highs.to(x)[None]
        mean, std = x[:, None] / t, (1 - t) / t
        normal = torch.distributions.Normal(torch.zeros((), dtype=x.dtype, device=x.device), 1.0)
        a, b = (lows - mean) / std, (highs - mean) / std
        mass = (normal.cdf(b) - normal.cdf(a)).clamp_min(torch.finfo(x.dtype).tiny)
        box_means = mean + std * (normal.log_prob(a).exp() - normal.log_prob(b).exp()) / mass
        weights = torch.softmax(mass.log().sum(2), dim=1)
        return (weights[:, :, None] * box_means).sum(1)

    def denoiser(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """eta(t, x) = E[x0 | x_t = x], ``(B, d)``."""
        t = expand_time(t, x)[:, None]
        return (x - t * self.expected_target(t[:, 0], x)) / (1 - t)

    def velocity(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """b(t, x) = E[x1 - x0 | x_t = x] = (x - eta) / t, ``(B, d)``."""
        t = expand_time(t, x)
        return (x - self.denoiser(t, x)) / t[:, None]
