"""A small time-conditioned MLP for learned fields on low-dimensional toy problems."""
from __future__ import annotations

import math

import torch
from torch import nn


ACTIVATIONS = {"silu": nn.SiLU, "relu": nn.ReLU, "tanh": nn.Tanh}


class TimeConditionedMLP(nn.Module):
    """f(t, x) -> ``(B, out_dim)`` for ``t`` of shape ``(B,)`` and ``x`` of shape ``(B, in_dim)``.

    The time enters through ``n_freq`` sine/cosine features sin(pi 2^k t), cos(pi 2^k t), k < n_freq
    (one-to-one on [0, 1]), concatenated to x. ``activation`` of the hidden layers: "silu" (default),
    "relu" (the stochastic-interpolant paper's and notebooks' choice; piecewise linear, so it resolves
    sharp density edges such as the checkerboard's better, see docs/transport.md) or "tanh".
    """

    def __init__(self, in_dim: int, out_dim: int | None = None, hidden: int = 128, depth: int = 3,
                 n_freq: int = 4, activation: str = "silu"):
        super().__init__()
        if depth < 1 or hidden < 1 or in_dim < 1:
            raise ValueError("in_dim, hidden and depth must be positive")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        out_dim = in_dim if out_dim is None else out_dim
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(n_freq, dtype=torch.float32), persistent=False)
        layers: list[nn.Module] = []
        width = in_dim + 2 * n_freq
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), ACTIVATIONS[activation]()]
            width = hidden
        layers.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        angles = t[:, None] * self.freqs.to(x.dtype)
        return self.net(torch.cat([x, angles.sin(), angles.cos()], dim=1))


class MLP(nn.Module):
    """Unconditioned MLP ``(B, in_dim) -> (B, out_dim)`` with SiLU hidden layers (e.g. a one-step generator)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 128, depth: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
