"""Two-dimensional toy densities used by the examples, tests and benchmarks.

Each sampler returns ``(n, 2)`` samples and takes an optional ``torch.Generator`` so
that runs are reproducible.
"""
from __future__ import annotations

import math

import torch


def checkerboard(n: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform on the 8 black squares of a 4x4 checkerboard on ``[-4, 4]^2`` (squares of side 2)."""
    x1 = torch.rand(n, generator=generator, dtype=dtype) * 4 - 2
    row = torch.rand(n, generator=generator, dtype=dtype) - 2 * torch.randint(0, 2, (n,), generator=generator).to(dtype)
    x2 = row + torch.floor(x1).remainder(2)
    return 2 * torch.stack([x1, x2], dim=1)


def two_moons(n: int, generator: torch.Generator | None = None, noise: float = 0.1,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The two interleaving half circles of scikit-learn's ``make_moons``, centred and scaled by 2."""
    upper = torch.rand(n, generator=generator) < 0.5
    theta = torch.rand(n, generator=generator, dtype=dtype) * math.pi
    x = torch.where(upper, theta.cos(), 1 - theta.cos())
    y = torch.where(upper, theta.sin(), 0.5 - theta.sin())
    pts = torch.stack([x - 0.5, y - 0.25], dim=1) * 2
    return pts + noise * 2 * torch.randn(n, 2, generator=generator, dtype=dtype)
