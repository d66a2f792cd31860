"""Adaptive reference solve of the probability-flow ODE with the nde core.

In y = x/alpha and lambda the PF-ODE has no linear term (DPM-Solver, Lu et al. 2022, Eq. 3.4 rewritten):
    dy/dlambda = -e^{-lambda} eps(alpha_lambda y, t(lambda)),
which an adaptive Runge-Kutta method (``nde.solve_ode``) integrates to tight tolerances. This is the
"ground truth" that every fixed-NFE sampler is compared against (research note, section 1.4).
"""
from __future__ import annotations

from typing import Callable

import torch

from .. import solve_ode
from .models import check_x_T
from .pf_ode import LambdaODE, state_dtype
from .schedules import NoiseSchedule
from .timesteps import time_interval


def probability_flow_reference(model: Callable, x_T: torch.Tensor, schedule: NoiseSchedule,
                               t_start: float | None = None, t_end: float | None = None,
                               rtol: float = 1e-9, atol: float = 1e-9, method: str = "dopri8") -> torch.Tensor:
    """x at ``t_end`` from x_T at ``t_start`` by an adaptive solve of the PF-ODE (use float64 for references).

    The times stay float64 and a float16/bfloat16 x_T is integrated in float32 (the model is evaluated in x_T's
    dtype; see :mod:`.pf_ode`).

    Returns:
        (B, *state) endpoint. Raises ``nde.SolverError`` if the solver fails.
    """
    check_x_T(x_T)
    ends = torch.tensor(time_interval(schedule, t_start, t_end), dtype=torch.float64, device=x_T.device)
    dtype = state_dtype(x_T)
    alpha = schedule.alpha(ends).to(dtype)
    sol = solve_ode(LambdaODE(model, schedule, model_dtype=x_T.dtype), x_T.to(dtype) / alpha[0],
                    schedule.lambda_(ends), method=method, rtol=rtol, atol=atol, dense=False, heuristics=False)
    return (alpha[1] * sol.ys[-1]).to(x_T.dtype)
