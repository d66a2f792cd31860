"""The probability-flow ODE in exponential-integrator form (no linear term), as ``func(time, y)`` modules.

With y = x/alpha the PF-ODE dx/dlambda = (dlog alpha/dlambda) x - sigma eps loses its linear term
(DPM-Solver, Lu et al. 2022, Eq. 3.4; AdjointDPM, Pan et al. 2024, Eq. 9). Two time variables:
- rho = sigma/alpha = e^{-lambda}:  dy/drho = eps(alpha y, t(rho)); Euler on a rho grid is exactly DDIM;
- lambda:                            dy/dlambda = -e^{-lambda} eps(alpha y, t(lambda)); uniform steps are
                                     the logSNR time-step schedule.
Both take y of shape (B, *state) and a 0-d time tensor, and call ``model(x, t)`` with t of shape (B,).
"""
from __future__ import annotations

from typing import Callable

import torch

from .models import check_model_schedule
from .schedules import NoiseSchedule


class RhoODE(torch.nn.Module):
    """dy/drho = eps(alpha(rho) y, t(rho)), t(rho) = t_of_lambda(-log rho)."""

    def __init__(self, model: Callable, schedule: NoiseSchedule):
        super().__init__()
        check_model_schedule(model, schedule)
        self.model, self.schedule = model, schedule

    def forward(self, rho: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = self.schedule.t_of_lambda(-torch.log(rho))
        return self.model(self.schedule.alpha(t) * y, t.expand(y.shape[0]))


class LambdaODE(torch.nn.Module):
    """dy/dlambda = -e^{-lambda} eps(alpha(lambda) y, t(lambda))."""

    def __init__(self, model: Callable, schedule: NoiseSchedule):
        super().__init__()
        check_model_schedule(model, schedule)
        self.model, self.schedule = model, schedule

    def forward(self, lam: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = self.schedule.t_of_lambda(lam)
        return -torch.exp(-lam) * self.model(self.schedule.alpha(t) * y, t.expand(y.shape[0]))
