"""Two-dimensional toy densities used by the examples, tests and benchmarks.

Each sampler returns ``(n, 2)`` samples (``n >= 0``) and takes an optional ``torch.Generator`` so
that runs are reproducible.
"""
from __future__ import annotations

import math

import torch

from .._checks import check_generator, sample_count


def checkerboard(n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform on the 8 black squares of a 4x4 checkerboard on ``[-4, 4]^2`` (squares of side 2)."""
    n = sample_count(n)
    check_generator(generator)
    x1 = torch.rand(n, generator=generator, dtype=dtype) * 4 - 2
    row = torch.rand(n, generator=generator, dtype=dtype) - 2 * torch.randint(0, 2, (n,), generator=generator).to(dtype)
    x2 = row + torch.floor(x1).remainder(2)
    return 2 * torch.stack([x1, x2], dim=1)


def checkerboard_log_prob(x: torch.Tensor) -> torch.Tensor:
    """Exact log-density ``(n,)`` of :func:`checkerboard`: log(1/32) on the 8 black squares, -inf elsewhere.

    The square [2i, 2i + 2) x [2j, 2j + 2) (i, j in -2..1) is black when i + j is even.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(f"x must be a (n, 2) tensor, got {getattr(x, 'shape', type(x))}")
    inside = ((x >= -4) & (x < 4)).all(dim=1)
    black = torch.floor(x / 2).sum(dim=1).remainder(2) == 0
    return torch.where(inside & black, torch.full_like(x[:, 0], -math.log(32.0)), torch.full_like(x[:, 0], -math.inf))


def checkerboard_cell_masses(bins: int = 8, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``(bins, bins)`` exact probability of each cell of a regular grid on [-4, 4)^2 under :func:`checkerboard`
    (``bins`` a multiple of 4, so every cell lies inside one square); for :func:`nde.metrics.grid_mass_tv`."""
    if not isinstance(bins, int) or bins < 4 or bins % 4:
        raise ValueError(f"bins must be a positive multiple of 4, got {bins!r}")
    centres = -4 + (torch.arange(bins, dtype=dtype) + 0.5) * 8 / bins
    grid = torch.stack(torch.meshgrid(centres, centres, indexing="ij"), dim=-1).reshape(-1, 2)
    black = torch.isfinite(checkerboard_log_prob(grid)).to(dtype)
    return (black / black.sum()).reshape(bins, bins)


def two_moons(n: int, generator: torch.Generator | None = None, noise: float = 0.1,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The two interleaving half circles of scikit-learn's ``make_moons``, centred and scaled by 2."""
    n = sample_count(n)
    check_generator(generator)
    upper = torch.rand(n, generator=generator) < 0.5
    theta = torch.rand(n, generator=generator, dtype=dtype) * math.pi
    x = torch.where(upper, theta.cos(), 1 - theta.cos())
    y = torch.where(upper, theta.sin(), 0.5 - theta.sin())
    pts = torch.stack([x - 0.5, y - 0.25], dim=1) * 2
    return pts + noise * 2 * torch.randn(n, 2, generator=generator, dtype=dtype)
