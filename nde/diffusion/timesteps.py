"""Time-step schedules for sampling: uniform in logSNR, in time, quadratic in time, or EDM's rho-spacing.

Each returns ``steps + 1`` float64 CPU times from ``t_start`` down to ``t_end`` (DPM-Solver, Lu et al.
2022, App. D.1; EDM, Karras et al. 2022, Eq. 5 with rho = 7 applied to the noise level sigma/alpha = e^{-lambda}).
"""
from __future__ import annotations

import math

import torch

from .._checks import number
from .schedules import NoiseSchedule

SKIP_TYPES = ("logSNR", "time_uniform", "time_quadratic", "edm")


def time_interval(schedule: NoiseSchedule, t_start: float | None, t_end: float | None) -> tuple[float, float]:
    """The sampling interval (defaults: the schedule's), checked by :meth:`NoiseSchedule.check_interval`."""
    if not isinstance(schedule, NoiseSchedule):
        raise TypeError(f"schedule must be an nde.diffusion.NoiseSchedule, got {type(schedule).__name__}")
    return schedule.check_interval(schedule.t_start if t_start is None else t_start,
                                   schedule.t_end if t_end is None else t_end)


def time_range(schedule: NoiseSchedule, skip_type: str, t_start: float | None,
               t_end: float | None) -> tuple[float, float]:
    """Checked ``skip_type`` and the sampling interval (see :func:`time_interval`)."""
    if skip_type not in SKIP_TYPES:
        raise ValueError(f"skip_type must be one of {SKIP_TYPES}, got {skip_type!r}")
    return time_interval(schedule, t_start, t_end)


def check_steps(steps: int) -> int:
    """``steps`` if it is a positive int (not a bool), else a ValueError."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    return steps


def check_rho(rho: float) -> float:
    """``rho``, the exponent of EDM's spacing, as a float if it is a finite number > 0, else a ValueError."""
    return number(rho, "rho", positive=True)


def edm_lambda(lam_start: float, lam_end: float, rho: float, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """lambda(u) and dlambda/du of EDM's spacing: (e^{-lambda})^{1/rho} is linear in u in [0, 1].

    Written as lambda(u) = lambda_start - rho log(1 + u expm1((lambda_start - lambda_end)/rho)), which is the
    same map without the powers e^{-lambda/rho}: they overflow for small rho and round to 1 for large rho
    (whose limit is the logSNR spacing).
    """
    ratio = math.expm1((lam_start - lam_end) / rho)
    return lam_start - rho * torch.log1p(u * ratio), -rho * ratio / (1.0 + u * ratio)


def sampling_times(schedule: NoiseSchedule, steps: int, skip_type: str = "logSNR",
                   t_start: float | None = None, t_end: float | None = None, rho: float = 7.0) -> torch.Tensor:
    """(steps + 1,) float64 times, decreasing from ``t_start`` (default ``schedule.t_start``) to ``t_end``.

    ``rho`` (finite, > 0) is the exponent of the ``"edm"`` spacing.
    """
    check_steps(steps)
    rho = check_rho(rho)
    t_start, t_end = time_range(schedule, skip_type, t_start, t_end)
    ends = torch.tensor([t_start, t_end], dtype=torch.float64)
    if skip_type == "time_uniform":
        return torch.linspace(t_start, t_end, steps + 1, dtype=torch.float64)
    if skip_type == "time_quadratic":
        return torch.linspace(t_start**0.5, t_end**0.5, steps + 1, dtype=torch.float64) ** 2
    lam_start, lam_end = schedule.lambda_(ends).tolist()
    if skip_type == "logSNR":
        lam = torch.linspace(lam_start, lam_end, steps + 1, dtype=torch.float64)
    else:
        lam = edm_lambda(lam_start, lam_end, rho, torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64))[0]
    times = schedule.t_of_lambda(lam)
    times[0], times[-1] = t_start, t_end  # remove round-off of the inverse map at the ends
    if not bool((times[1:] < times[:-1]).all()):  # e.g. VPCosine within ~1e-15 of t = 1: t(lambda) rounds together
        raise ValueError(f"steps={steps} {skip_type} steps from t_start={t_start} to t_end={t_end} repeat a time in "
                         f"float64 (the schedule's t(lambda) is too flat there); use fewer steps or another t_start")
    return times
