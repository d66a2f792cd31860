"""DDIM and multistep DPM-Solver++ (2M, 3M): exponential integrators of the data-prediction PF-ODE.

With data prediction x0_theta = (x - sigma eps)/alpha, the PF-ODE has the exact solution
(DPM-Solver++, Lu et al. 2022b, Eq. 8)
    x_t = (sigma_t/sigma_s) x_s + alpha_t int_0^h e^{u-h} x0_theta(lambda_s + u) du,   h = lambda_t - lambda_s.
Expanding x0_theta in a Taylor series around lambda_s gives weights psi_k(h) = int_0^h e^{u-h} u^k/k! du
(psi_0 = 1 - e^{-h}, psi_k = h^k/k! - psi_{k-1}); the derivatives come from the previous model outputs.
- order 1 is DDIM (Song et al. 2021): x_t = (sigma_t/sigma_s) x_s + alpha_t (1 - e^{-h}) x0_s;
- order 2 is DPM-Solver++(2M) (Algorithm 2 of the paper): x0 -> (1 + 1/(2r)) x0_s - 1/(2r) x0_{s-1}, r = h_{s-1}/h;
- order 3 is DPM-Solver++(3M): the quadratic through the last three outputs, integrated exactly.
All multistep samplers spend one model evaluation per step (NFE = steps).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .models import call_model, check_model_schedule, check_x_T
from .parameterization import eps_to_x0
from .schedules import NoiseSchedule
from .timesteps import sampling_times


def ddim(model: Callable, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int, skip_type: str = "logSNR",
         t_start: float | None = None, t_end: float | None = None) -> torch.Tensor:
    """Deterministic DDIM sampling (eta = 0). Shapes: x_T (B, *state) -> (B, *state)."""
    return dpm_solver_pp(model, x_T, schedule, steps, order=1, skip_type=skip_type, t_start=t_start, t_end=t_end)


def dpm_solver_pp(model: Callable, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int, order: int = 2,
                  skip_type: str = "logSNR", t_start: float | None = None, t_end: float | None = None,
                  lower_order_final: bool = True) -> torch.Tensor:
    """Multistep DPM-Solver++ of ``order`` 1, 2 or 3 (DDIM, 2M, 3M).

    Args:
        model: noise prediction ``model(x, t)`` with t (B,).
        x_T: (B, *state) initial noise at ``t_start``.
        steps: number of steps (= NFE).
        lower_order_final: use lower orders in the last steps when steps < 10 (stabilises few-step sampling).
    Returns:
        (B, *state) sample at ``t_end``.
    """
    _check_order(order, (1, 2, 3))
    x = check_x_T(x_T)
    times = sampling_times(schedule, steps, skip_type, t_start, t_end)
    check_model_schedule(model, schedule)
    lam, alpha, sigma = _coefficients(schedule, times)
    history: list[torch.Tensor] = []
    for i in range(steps):
        history = (history + [eps_to_x0(call_model(model, x, times[i]), x, alpha[i], sigma[i])])[-order:]
        step_order = _step_order(order, i, steps, lower_order_final)
        x = _data_prediction_step(x, history[::-1][:step_order], lam[i - step_order + 1:i + 1][::-1],
                                  lam[i + 1], alpha[i + 1], sigma[i + 1], sigma[i])
    return x


def _data_prediction_step(x: torch.Tensor, x0s: list[torch.Tensor], lams: list[float], lam_t: float,
                          alpha_t: float, sigma_t: float, sigma_s: float) -> torch.Tensor:
    """One multistep DPM-Solver++ update; ``x0s`` and ``lams`` are ordered most recent first."""
    h = lam_t - lams[0]
    psi0 = -math.expm1(-h)
    out = (sigma_t / sigma_s) * x + alpha_t * psi0 * x0s[0]
    if len(x0s) == 2:
        r = (lams[0] - lams[1]) / h
        out = out + alpha_t * psi0 / (2 * r) * (x0s[0] - x0s[1])
    elif len(x0s) == 3:
        psi1 = h - psi0
        psi2 = h * h / 2 - psi1
        h0, h1 = lams[0] - lams[1], lams[1] - lams[2]
        dd0, dd1 = (x0s[0] - x0s[1]) / h0, (x0s[1] - x0s[2]) / h1
        second = (dd0 - dd1) / (h0 + h1)            # x0[s, s-1, s-2]: half the second derivative
        first = dd0 + h0 * second                   # derivative of the interpolating quadratic at lambda_s
        out = out + alpha_t * (psi1 * first + 2 * psi2 * second)
    return out


def _coefficients(schedule: NoiseSchedule, times: torch.Tensor) -> tuple[list[float], list[float], list[float]]:
    """lambda, alpha, sigma at the sampling times, as Python floats (computed once, in float64, on the host)."""
    return schedule.lambda_(times).tolist(), schedule.alpha(times).tolist(), schedule.sigma(times).tolist()


def _step_order(order: int, i: int, steps: int, lower_order_final: bool) -> int:
    """Order of step i (0-based): warm up from order 1; optionally lower it in the last steps (few-step runs)."""
    step_order = min(order, i + 1)
    if lower_order_final and steps < 10:
        step_order = min(step_order, steps - i)
    return step_order


def _check_order(order: int, allowed: tuple[int, ...]) -> None:
    if isinstance(order, bool) or not isinstance(order, int) or order not in allowed:
        raise ValueError(f"order must be one of {allowed}, got {order!r}")
