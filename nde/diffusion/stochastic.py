"""Stochastic samplers: the reverse SDE (first-order exponential integrator) and EDM's churn sampler.

``nde.sdeint`` (the SDE core) has not landed yet, so both are short fixed-step loops here.

- :func:`reverse_sde`: SDE-DPM-Solver++(1) (Lu et al. 2022b, Eq. 9 with the reverse SDE of Song et al.
  2021): exact in the linear drift and the noise, first order in the data prediction,
    x_t = (sigma_t/sigma_s) e^{-h} x_s + alpha_t (1 - e^{-2h}) x0_s + sigma_t sqrt(1 - e^{-2h}) z.
- :func:`edm_sampler`: Karras et al. 2022, Algorithm 2, on y = x/alpha with noise level rho = sigma/alpha
  (dy/drho = eps): raise the noise from rho_i to rho_hat = (1 + gamma) rho_i by adding fresh noise
  ("churn"), then one Heun step from rho_hat to rho_{i+1}. With ``s_churn = 0`` it is the deterministic
  EDM Heun sampler (2 NFE per step).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .dpm_solver import _coefficients
from .models import call_model
from .parameterization import eps_to_x0
from .schedules import NoiseSchedule
from .timesteps import sampling_times


def reverse_sde(model: Callable, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int,
                skip_type: str = "logSNR", t_start: float | None = None, t_end: float | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Sample the reverse SDE with SDE-DPM-Solver++(1); NFE = steps. Deterministic given x_T and ``generator``."""
    times = sampling_times(schedule, steps, skip_type, t_start, t_end)
    lam, alpha, sigma = _coefficients(schedule, times)
    x = x_T
    for i in range(steps):
        x0 = eps_to_x0(call_model(model, x, times[i]), x, alpha[i], sigma[i])
        h = lam[i + 1] - lam[i]
        decay = -math.expm1(-2.0 * h)
        noise = _randn(x, generator)
        x = ((sigma[i + 1] / sigma[i] * math.exp(-h)) * x + alpha[i + 1] * decay * x0
             + sigma[i + 1] * math.sqrt(decay) * noise)
    return x


def edm_sampler(model: Callable, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int, s_churn: float = 0.0,
                s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0, skip_type: str = "edm",
                t_start: float | None = None, t_end: float | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """EDM stochastic sampler (Karras et al. 2022, Algorithm 2); NFE = 2 * steps.

    Args:
        s_churn, s_tmin, s_tmax, s_noise: EDM's churn amount, the noise-level window (in rho = sigma/alpha)
            where churn is applied, and the scale of the added noise.
    """
    if s_churn < 0 or s_noise < 0:
        raise ValueError(f"s_churn and s_noise must be >= 0, got {s_churn}, {s_noise}")
    times = sampling_times(schedule, steps, skip_type, t_start, t_end)
    rhos = torch.exp(-schedule.lambda_(times)).tolist()
    gamma_max = min(s_churn / steps, math.sqrt(2.0) - 1.0)
    y = x_T / float(schedule.alpha(times[0]))
    for i in range(steps):
        rho, rho_next = rhos[i], rhos[i + 1]
        gamma = gamma_max if s_tmin <= rho <= s_tmax else 0.0
        rho_hat = rho * (1.0 + gamma)
        if gamma > 0:
            y = y + math.sqrt(rho_hat**2 - rho**2) * s_noise * _randn(y, generator)
        slope = _eps_at_rho(model, schedule, y, rho_hat)
        y_euler = y + (rho_next - rho_hat) * slope
        y = y + (rho_next - rho_hat) * 0.5 * (slope + _eps_at_rho(model, schedule, y_euler, rho_next))
    return float(schedule.alpha(times[-1])) * y


def _eps_at_rho(model: Callable, schedule: NoiseSchedule, y: torch.Tensor, rho: float) -> torch.Tensor:
    """dy/drho = eps(alpha y, t) at noise level rho = e^{-lambda}."""
    t = schedule.t_of_lambda(torch.tensor(-math.log(rho), dtype=torch.float64))
    return call_model(model, float(schedule.alpha(t)) * y, float(t))


def _randn(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like ``like``, drawn on the generator's device (for reproducibility)."""
    device = generator.device if generator is not None else like.device
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=device).to(like.device)
