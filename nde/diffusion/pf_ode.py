"""The probability-flow ODE in exponential-integrator form (no linear term), as ``func(time, y)`` modules.

With y = x/alpha the PF-ODE dx/dlambda = (dlog alpha/dlambda) x - sigma eps loses its linear term
(DPM-Solver, Lu et al. 2022, Eq. 3.4; AdjointDPM, Pan et al. 2024, Eq. 9). Two time variables:
- rho = sigma/alpha = e^{-lambda}:  dy/drho = eps(alpha y, t(rho)); Euler on a rho grid is exactly DDIM;
- lambda:                            dy/dlambda = -e^{-lambda} eps(alpha y, t(lambda)); uniform steps are
                                     the logSNR time-step schedule.
Both take y of shape (B, *state) and a 0-d time tensor, and call ``model(x, t)`` with t of shape (B,).

Precision: every time-dependent factor (alpha, e^{-lambda}) acts on the state in the state's dtype (and
``odeint`` passes the time itself in it). A float16 or bfloat16 state would quantise them (NaN for VPCosine
near t = 1); so integrate such a state in float32 and give ``model_dtype`` (the dtype the
model is evaluated in, as :func:`~nde.diffusion.adjoint_sample` and
:func:`~nde.diffusion.probability_flow_reference` do): x and t are cast to it at each call,
the output back to the state's dtype.
"""
from __future__ import annotations

from typing import Callable

import torch

from .models import call_model, check_model_schedule
from .schedules import NoiseSchedule


def state_dtype(x_T: torch.Tensor) -> torch.dtype:
    """The dtype to integrate x_T's ODE in: x_T's, raised to float32 for float16 and bfloat16."""
    return torch.promote_types(x_T.dtype, torch.float32)


class _ExponentialODE(torch.nn.Module):
    """Shared parts: the checked model and schedule, and the model call in ``model_dtype``."""

    def __init__(self, model: Callable, schedule: NoiseSchedule, model_dtype: torch.dtype | None = None):
        super().__init__()
        check_model_schedule(model, schedule)
        self.model, self.schedule, self.model_dtype = model, schedule, model_dtype

    def _eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """eps(x, t) from the model evaluated in ``model_dtype`` (default: x's), returned in x's dtype."""
        dtype = self.model_dtype or x.dtype
        return call_model(self.model, x.to(dtype), t.to(dtype)).to(x.dtype)


class RhoODE(_ExponentialODE):
    """dy/drho = eps(alpha(rho) y, t(rho)), t(rho) = t_of_lambda(-log rho).

    Args:
        model, schedule: the noise prediction and its schedule.
        model_dtype: the dtype the model is called in (default: the state's); see the module docstring.
    """

    def forward(self, rho: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = self.schedule.t_of_lambda(-torch.log(rho))
        return self._eps(self.schedule.alpha(t) * y, t)


class LambdaODE(_ExponentialODE):
    """dy/dlambda = -e^{-lambda} eps(alpha(lambda) y, t(lambda)); arguments as :class:`RhoODE`."""

    def forward(self, lam: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = self.schedule.t_of_lambda(lam)
        return -torch.exp(-lam) * self._eps(self.schedule.alpha(t) * y, t)
