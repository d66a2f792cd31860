"""UniPC (Zhao et al. 2023): unified predictor-corrector for the data-prediction PF-ODE, variants bh1 / bh2.

Both parts start from the first-order term of the exact solution (see :mod:`.dpm_solver`)
    x_t = (sigma_t/sigma_s) x_s + alpha_t psi_0(h) x0_s + alpha_t B(h) sum_m a_m D_m / r_m,
with D_m = x0_m - x0_s at lambda_m = lambda_s + r_m h. Matching the Taylor terms of order k = 1..p gives
the linear system sum_m a_m r_m^{k-1} = k! psi_k(h) / (h^k B(h)) (UniPC Eq. 9, written for data prediction),
with B(h) = h (bh1) or 1 - e^{-h} (bh2). UniP (predictor) uses the previous outputs; UniC (corrector)
adds the output at the new point (r = 1), which is evaluated anyway for the next step, so the
corrector costs no extra NFE. As in the paper, a_1 = 1/2 for the order-2 predictor and the order-1 corrector.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .dpm_solver import _check_order, _coefficients, _step_order
from .models import call_model, check_model_schedule, check_x_T
from .parameterization import eps_to_x0
from .schedules import NoiseSchedule
from .timesteps import sampling_times

VARIANTS = ("bh1", "bh2")


def unipc(model: Callable, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int, order: int = 3,
          variant: str = "bh2", skip_type: str = "logSNR", t_start: float | None = None,
          t_end: float | None = None, lower_order_final: bool = True, use_corrector: bool = True) -> torch.Tensor:
    """Multistep UniPC of ``order`` 1-3 (UniP-p + UniC). Shapes: x_T (B, *state) -> (B, *state); NFE = steps."""
    _check_order(order, (1, 2, 3))
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    x = check_x_T(x_T)
    times = sampling_times(schedule, steps, skip_type, t_start, t_end)
    check_model_schedule(model, schedule)
    lam, alpha, sigma = _coefficients(schedule, times)
    x0s = [eps_to_x0(call_model(model, x, times[0]), x, alpha[0], sigma[0])]
    lams = [lam[0]]
    for i in range(steps):
        p = _step_order(order, i, steps, lower_order_final)
        prev_x0, prev_lam = x0s[::-1][:p], lams[::-1][:p]
        h = lam[i + 1] - lam[i]
        base = (sigma[i + 1] / sigma[i]) * x - alpha[i + 1] * math.expm1(-h) * prev_x0[0]
        b_h = h if variant == "bh1" else -math.expm1(-h)
        diffs = [(m - prev_x0[0]) / ((lm - prev_lam[0]) / h) for m, lm in zip(prev_x0[1:], prev_lam[1:])]
        ratios = [(lm - prev_lam[0]) / h for lm in prev_lam[1:]]
        x = base + alpha[i + 1] * b_h * _combine(diffs, _predictor_weights(ratios, h, b_h))
        if i == steps - 1:
            break  # the output at t_end is never needed: no final evaluation, no final correction
        x0_new = eps_to_x0(call_model(model, x, times[i + 1]), x, alpha[i + 1], sigma[i + 1])
        if use_corrector:
            weights = _corrector_weights(ratios, h, b_h)
            x = base + alpha[i + 1] * b_h * _combine(diffs + [x0_new - prev_x0[0]], weights)
        x0s, lams = (x0s + [x0_new])[-order:], (lams + [lam[i + 1]])[-order:]
    return x


def _rhs(n: int, h: float, b_h: float) -> list[float]:
    """k! psi_k(h) / (h^k B(h)) for k = 1..n, with psi_k = h^k/k! - psi_{k-1} (stable in float64 for h >~ 1e-3)."""
    psi = -math.expm1(-h)
    out = []
    for k in range(1, n + 1):
        psi = h**k / math.factorial(k) - psi
        out.append(math.factorial(k) * psi / (h**k * b_h))
    return out


def _solve(ratios: list[float], rhs: list[float]) -> list[float]:
    """Solve sum_m a_m r_m^{k-1} = rhs_k, k = 1..len(ratios)."""
    mat = torch.tensor([[r ** k for r in ratios] for k in range(len(ratios))], dtype=torch.float64)
    return torch.linalg.solve(mat, torch.tensor(rhs, dtype=torch.float64)).tolist()


def _predictor_weights(ratios: list[float], h: float, b_h: float) -> list[float]:
    if not ratios:
        return []
    if len(ratios) == 1:
        return [0.5]
    return _solve(ratios, _rhs(len(ratios), h, b_h))


def _corrector_weights(ratios: list[float], h: float, b_h: float) -> list[float]:
    if not ratios:
        return [0.5]
    return _solve(ratios + [1.0], _rhs(len(ratios) + 1, h, b_h))


def _combine(diffs: list[torch.Tensor], weights: list[float]):
    total = 0.0
    for d, w in zip(diffs, weights):
        total = total + w * d
    return total
