"""Step-size control: PI controller and Hairer's initial step selection.

References: Gustafsson (1991), "Control theoretic techniques for stepsize selection in explicit
Runge–Kutta methods", ACM TOMS 17(4); Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.4 (initial
step) and §IV.2 of its stiff companion (PI control); the stabilised DOPRI5 controller (β = 0.04).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PIController:
    """Proportional–integral step-size controller.

    With ``k = error_order + 1`` and error ratios ``r_n`` (RMS of error/tolerance; accept iff ``r_n ≤ 1``),
    the next step is ``dt·clip(safety · r_n^(−beta1/k) · r_{n−1}^(beta2/k), factor_min, factor_max)``
    after an accepted step. After a rejection the integral part alone is used and the factor is
    capped at 1. ``beta2 = 0`` gives the classical I controller.

    Defaults ``beta2 = 0.2``, ``beta1 = 1 − 0.75·beta2 = 0.85`` are Hairer's stabilised controller of
    DOPRI5 (exponents ``α = 1/k − 0.75β``, ``β = 0.04`` at ``k = 5``, written per ``1/k``). Gustafsson's
    ``beta1 = 0.7, beta2 = 0.4`` (Hairer & Wanner II, eq. IV.2.43c) gives smoother step sequences but
    grows a small step slowly: on Lorenz, Van der Pol and a trained neural ODE it took 0–45% more
    evaluations at the same tolerance, on short solves of an untrained MLP up to 84% more (docs/core.md).
    ``accept_factor_min`` bounds the factor after an accepted step from below: torchdiffeq never shrinks
    after an accepted step (``accept_factor_min = 1``).
    """

    beta1: float = 0.85
    beta2: float = 0.2
    safety: float = 0.9
    factor_min: float = 0.2
    factor_max: float = 10.0
    accept_factor_min: float = 0.2

    def __post_init__(self):
        for name in ("beta1", "beta2", "safety", "factor_min", "factor_max", "accept_factor_min"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"`{name}` must be a finite number, got {value!r}")
        if not (0 < self.safety <= 1):
            raise ValueError(f"`safety` must be in (0, 1], got {self.safety}")
        if not (0 < self.factor_min <= 1 <= self.factor_max):
            raise ValueError("controller factors must satisfy 0 < factor_min <= 1 <= factor_max")
        if not self.beta1 > 0 or self.beta2 < 0:
            raise ValueError(f"need `beta1` > 0 and `beta2` >= 0, got beta1={self.beta1}, beta2={self.beta2}")
        if not (self.factor_min <= self.accept_factor_min <= 1):
            raise ValueError(f"`accept_factor_min` must be in [factor_min, 1], got {self.accept_factor_min}")

    def factor(self, ratio: float, prev_ratio: float, accepted: bool, k: int) -> float:
        """Step multiplier for scalar (shared-step) control; plain Python arithmetic, no tensors."""
        if ratio != ratio or ratio == float("inf"):  # non-finite: shrink as much as allowed
            return self.factor_min
        if ratio == 0.0:
            return self.factor_max
        if accepted:
            fac = self.safety * ratio ** (-self.beta1 / k) * max(prev_ratio, 1e-4) ** (self.beta2 / k)
            return min(self.factor_max, max(self.accept_factor_min, fac))
        return min(1.0, max(self.factor_min, self.safety * ratio ** (-1.0 / k)))

    def factor_tensor(self, ratio: torch.Tensor, prev_ratio: torch.Tensor, accepted: torch.Tensor,
                      k: int) -> torch.Tensor:
        """The same rule elementwise on tensors of shape (batch,), for per-sample control."""
        finite = torch.isfinite(ratio)
        safe = torch.where(finite, ratio, 1.0).clamp_min(torch.finfo(ratio.dtype).tiny)   # 0: factor_max below
        integral = self.safety * safe.pow(-1.0 / k)
        pi = self.safety * safe.pow(-self.beta1 / k) * prev_ratio.clamp_min(1e-4).pow(self.beta2 / k)
        acc = pi.clamp(self.accept_factor_min, self.factor_max)
        rej = integral.clamp(self.factor_min, 1.0)
        fac = torch.where(accepted, acc, rej)
        fac = torch.where(ratio == 0, self.factor_max, fac)
        return torch.where(finite, fac, self.factor_min)


def IController(safety: float = 0.9, factor_min: float = 0.2, factor_max: float = 10.0) -> PIController:
    """The integral controller of torchdiffeq: ``min(ifactor, max(safety·r^(−1/k), dfactor))``,
    never shrinking after an accepted step."""
    return PIController(beta1=1.0, beta2=0.0, safety=safety, factor_min=factor_min,
                        factor_max=factor_max, accept_factor_min=1.0)


def _widened(x: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors in float32 for the step-size norms (y / (atol + rtol·|y|) overflows float16)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def initial_step(func, t0, y0: torch.Tensor, f0: torch.Tensor, error_order: int, rtol, atol,
                 norm) -> torch.Tensor:
    """Hairer's initial step (Hairer, Nørsett & Wanner I, §II.4), in torchdiffeq's form.

    ``norm`` reduces a tensor shaped like ``y0`` to the error norm (a scalar in shared mode, one per
    sample in per-sample mode); ``t0`` is a scalar tensor or a per-sample tensor of shape (batch,).
    Costs one function evaluation. Returns the proposed step, shaped like ``norm``'s output.
    """
    y0_w, f0_w = _widened(y0), _widened(f0)
    scale = atol + rtol * y0_w.abs()
    d0 = norm(y0_w / scale)
    d1 = norm(f0_w / scale)
    small = (d0 < 1e-5) | (d1 < 1e-5)
    h0 = torch.where(small, torch.full_like(d0, 1e-6), 0.01 * d0 / d1.clamp_min(1e-300))
    h0_b = h0.reshape(h0.shape + (1,) * (y0.dim() - h0.dim()))
    f1 = func(t0 + h0.to(t0.dtype) if torch.is_tensor(t0) else t0 + h0, y0 + (h0_b * f0_w).to(y0.dtype))
    d2 = norm((_widened(f1) - f0_w) / scale) / h0
    dmax = torch.maximum(d1, d2)
    h1 = torch.where(dmax <= 1e-15, torch.clamp_min(h0 * 1e-3, 1e-6),
                     (0.01 / dmax.clamp_min(1e-300)) ** (1.0 / (error_order + 1)))
    return torch.minimum(100 * h0, h1)


def initial_step_scalar(func, t0: float, t_tensor, y0: torch.Tensor, f0: torch.Tensor, error_order: int, rtol, atol,
                        norm) -> float:
    """:func:`initial_step` for shared steps in Python floats (three host reads, once per solve); ``norm`` maps a
    tensor shaped like ``y0`` to a Python float."""
    y0_w, f0_w = _widened(y0), _widened(f0)
    scale = atol + rtol * y0_w.abs()
    d0, d1 = norm(y0_w / scale), norm(f0_w / scale)
    h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
    f1 = func(t_tensor + h0, torch.add(y0, f0, alpha=h0))
    d2 = norm((_widened(f1) - f0_w) / scale) / h0
    dmax = max(d1, d2)
    h1 = max(1e-6, h0 * 1e-3) if dmax <= 1e-15 else (0.01 / dmax) ** (1.0 / (error_order + 1))
    return min(100 * h0, h1)
