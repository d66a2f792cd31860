"""Closed-form fields of the one-sided linear interpolant from N(0, I) to a uniform density on boxes.

For x_t = (1 - t) x0 + t x1 with x0 ~ N(0, I) and x1 uniform on a union of equal-volume, disjoint,
axis-aligned boxes (the checkerboard is 8 such squares), the posterior of x1 given x_t = x is the
prior restricted to each box times N(x1; x / t, (alpha / t)^2 I), alpha = 1 - t: per box and
coordinate a truncated normal, with mass Z = Phi(B) - Phi(A) and mean m + s (phi(A) - phi(B)) / Z
(m = x / t, s = alpha / t, A = (low - m) / s, B = (high - m) / s). Hence

* E[x1 | x] = sum_k w_k mean_k with box weights w_k proportional to prod_i Z_ki,
* eta(t, x) = E[x0 | x] = (x - t E[x1 | x]) / alpha          (the paper's eta_z for a one-sided path),
* b(t, x) = E[x1 - x0 | x] = (x - eta) / t                      (Eq. 4.19 with alpha = 1 - t, beta = t).

Valid for 0 < t < 1. Z and the ratio (phi(A) - phi(B)) / Z are computed in log space (``log_ndtr``), so points
far from every box (off the support, e.g. along a learned sampler's path) get finite, accurate fields.
Used to measure how well learned b and eta fit, time by time (benchmarks/transport.py).
"""
from __future__ import annotations

import math

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
        log_mass, mills = _truncated_normal(((lows - mean) / std), (highs - mean) / std)
        box_means = mean + std * mills
        weights = torch.softmax(log_mass.sum(2), dim=1)
        return (weights[:, :, None] * box_means).sum(1)

    def denoiser(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """eta(t, x) = E[x0 | x_t = x], ``(B, d)``."""
        t = expand_time(t, x)[:, None]
        return (x - t * self.expected_target(t[:, 0], x)) / (1 - t)

    def velocity(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """b(t, x) = E[x1 - x0 | x_t = x] = (x - eta) / t, ``(B, d)``."""
        t = expand_time(t, x)
        return (x - self.denoiser(t, x)) / t[:, None]


def _truncated_normal(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log Z = log(Phi(b) - Phi(a)) and (phi(a) - phi(b)) / Z for a < b, elementwise, in log space.

    An interval above 0 is mirrored to (-b, -a) (same Z, negated ratio), so both cdf values are lower tails, which
    ``log_ndtr`` resolves at any distance; ``Phi(b) - Phi(a)`` in linear space is 0 (float64) already
    8.3 standard deviations from the box, and dividing by it gave box means of order 1e288.
    """
    upper = a > 0
    lo, hi = torch.where(upper, -b, a), torch.where(upper, -a, b)
    log_hi, log_lo = torch.special.log_ndtr(hi), torch.special.log_ndtr(lo)
    log_mass = log_hi + torch.log1p(-torch.exp(log_lo - log_hi))
    log_pdf = -0.5 * math.log(2 * math.pi)
    ratio = torch.exp(log_pdf - 0.5 * lo * lo - log_mass) - torch.exp(log_pdf - 0.5 * hi * hi - log_mass)
    return log_mass, torch.where(upper, -ratio, ratio)
