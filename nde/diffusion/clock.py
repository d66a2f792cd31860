"""The sampling clock: a time-step schedule as a smooth, increasing map u in [0, 1] -> lambda.

The reverse-time SDEs of :mod:`nde.diffusion.sdes` are integrated by ``nde.solve_sde``, which needs an
increasing time variable. The clock u runs from 0 (``t_start``, most noise) to 1 (``t_end``); ``steps`` equal
steps of du = 1/steps land exactly on :func:`nde.diffusion.sampling_times` ``(schedule, steps, skip_type)``,
because every skip type is uniform in some monotone function of t (DPM-Solver, Lu et al. 2022, App. D.1;
EDM, Karras et al. 2022, Eq. 5 on the noise level rho = sigma/alpha = e^{-lambda}):

- ``"logSNR"``:          lambda(u) = lambda_0 + u (lambda_1 - lambda_0);
- ``"time_uniform"``:    t(u) = t_0 + u (t_1 - t_0);
- ``"time_quadratic"``:  sqrt(t(u)) = sqrt(t_0) + u (sqrt(t_1) - sqrt(t_0));
- ``"edm"``:             rho(u)^{1/r} = rho_0^{1/r} + u (rho_1^{1/r} - rho_0^{1/r}), r = 7.

An SDE in lambda, dx = F dlambda + G dW_lambda, reads dx = F lambda'(u) du + G sqrt(lambda'(u)) dW_u on
the clock (time change of an Ito integral, Oksendal 2003, Sec. 8.5), so an adaptive solver on the clock
also sees the skip type's step density as its natural scale.
"""
from __future__ import annotations

import math

import torch

from .schedules import NoiseSchedule
from .timesteps import check_rho, edm_lambda, time_range


class SamplingClock:
    """Continuous version of :func:`~nde.diffusion.sampling_times` on u in [0, 1].

    Args:
        schedule: the noise schedule.
        skip_type: one of :data:`~nde.diffusion.SKIP_TYPES`.
        t_start, t_end: the time interval (default: the schedule's), ``t_end < t_start``.
        rho: the exponent r of the ``"edm"`` spacing (finite, > 0).

    Calling ``clock(u)`` with a 0-d tensor u returns ``(t, lambda, dlambda/du)``, three float64 0-d tensors
    on u's device (scalar work, so float64 costs nothing and keeps the final steps accurate).
    """

    def __init__(self, schedule: NoiseSchedule, skip_type: str = "logSNR", t_start: float | None = None,
                 t_end: float | None = None, rho: float = 7.0):
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be an nde.diffusion.NoiseSchedule, got {type(schedule).__name__}")
        t_start, t_end = time_range(schedule, skip_type, t_start, t_end)
        self.schedule, self.skip_type, self.rho = schedule, skip_type, check_rho(rho)
        self.t_start, self.t_end = t_start, t_end
        ends = torch.tensor([t_start, t_end], dtype=torch.float64)
        self.lambda_start, self.lambda_end = schedule.lambda_(ends).tolist()

    def __call__(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        u = u.to(torch.float64)
        if self.skip_type == "logSNR":
            lam = self.lambda_start + u * (self.lambda_end - self.lambda_start)
            return self.schedule.t_of_lambda(lam), lam, torch.full_like(u, self.lambda_end - self.lambda_start)
        if self.skip_type == "edm":
            lam, dlam_du = edm_lambda(self.lambda_start, self.lambda_end, self.rho, u)
            return self.schedule.t_of_lambda(lam), lam, dlam_du
        if self.skip_type == "time_uniform":
            t, dt_du = self.t_start + u * (self.t_end - self.t_start), self.t_end - self.t_start
        else:  # time_quadratic
            root_0, root_1 = math.sqrt(self.t_start), math.sqrt(self.t_end)
            root = root_0 + u * (root_1 - root_0)
            t, dt_du = root * root, 2.0 * root * (root_1 - root_0)
        return t, self.schedule.lambda_(t), self.schedule.dlambda_dt(t) * dt_du

    def __repr__(self) -> str:
        return (f"SamplingClock({self.schedule!r}, skip_type={self.skip_type!r}, t_start={self.t_start}, "
                f"t_end={self.t_end})")
