"""Latent-noise coefficients gamma(t) of a stochastic interpolant.

Albergo, Boffi & Vanden-Eijnden (2023), Def. 2.1 and Table 4: gamma(0) = gamma(1) = 0 and
gamma > 0 on (0, 1). Each choice gives gamma, its derivative and the product gamma * gamma_dot,
which stays finite at the endpoints even where gamma_dot does not (e.g. sqrt(a t (1-t))).
"""
from __future__ import annotations

import math

import torch

GAMMA_KINDS = ("brownian", "bsquared", "sinesquared", "zero")


class Gamma:
    """gamma(t) for ``t`` in [0, 1].

    Kinds:
        ``"brownian"``: sqrt(a t (1-t)) (a = 2 is the paper's Eq. 1.1, a = 1 the reference code's default);
        ``"bsquared"``: a t (1-t); ``"sinesquared"``: a sin^2(pi t); ``"zero"``: 0 (deterministic interpolant).
    """

    def __init__(self, kind: str = "brownian", a: float = 1.0):
        if kind not in GAMMA_KINDS:
            raise ValueError(f"kind must be one of {GAMMA_KINDS}, got {kind!r}")
        if not 0 < a < math.inf:
            raise ValueError(f"a must be positive and finite, got {a}")
        self.kind, self.a = kind, float(a)

    def __repr__(self) -> str:
        return f"Gamma({self.kind!r}, a={self.a})"

    @property
    def is_zero(self) -> bool:
        return self.kind == "zero"

    @property
    def maximum(self) -> float:
        """max of gamma over [0, 1] (at t = 1/2 for every kind)."""
        peak = {"brownian": math.sqrt(self.a / 4), "bsquared": self.a / 4, "sinesquared": self.a, "zero": 0.0}
        return peak[self.kind]

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        if self.kind == "brownian":
            return (self.a * t * (1 - t)).clamp_min(0).sqrt()
        if self.kind == "bsquared":
            return self.a * t * (1 - t)
        if self.kind == "sinesquared":
            return self.a * torch.sin(math.pi * t) ** 2
        return torch.zeros_like(t)

    def dot(self, t: torch.Tensor) -> torch.Tensor:
        """d gamma / dt (infinite at t in {0, 1} for ``"brownian"``: cap t away from the ends)."""
        if self.kind == "brownian":
            return self.a * (1 - 2 * t) / (2 * self(t))
        if self.kind == "bsquared":
            return self.a * (1 - 2 * t)
        if self.kind == "sinesquared":
            return self.a * math.pi * torch.sin(2 * math.pi * t)
        return torch.zeros_like(t)

    def gamma_dot_gamma(self, t: torch.Tensor) -> torch.Tensor:
        """gamma * gamma_dot, finite on all of [0, 1]."""
        if self.kind == "brownian":
            return 0.5 * self.a * (1 - 2 * t)
        return self(t) * self.dot(t)
