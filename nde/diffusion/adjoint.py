"""AdjointDPM (Pan et al., ICLR 2024): gradients through the probability-flow ODE with memory independent of steps.

Exponential-integrator reparameterisation: with y = x/alpha and rho = sigma/alpha = e^{-lambda} the PF-ODE
becomes linear-term free,
    dy/drho = eps_theta(alpha(rho) y, z, t(rho)),                              (AdjointDPM Eq. 9)
integrated from rho_T (noise) down to rho_0. Euler on this ODE is exactly DDIM. Gradients w.r.t. x_T,
the conditioning z and the weights theta come from the continuous adjoint of this ODE solved backwards
together with y (``nde`` backsolve): a_y(rho_0) = alpha_0 dL/dx_0, dL/dx_T = a_y(rho_T)/alpha_T, and
dL/dz, dL/dtheta = -int a_y^T d eps/d(z, theta) drho. For comparison, ``gradient="discrete"`` gives the
exact gradient of the same discretisation (checkpointed) and ``"direct"`` backpropagates through it.

Time variable: ``variable="rho"`` is the paper's form (Euler = DDIM); the solver returns the state at
every grid time, so the backsolve keeps one state per step. ``variable="lambda"`` integrates the same
ODE in lambda = -log rho with uniform steps (the logSNR schedule) and only two output times, so the
saved memory of the backsolve is independent of the number of steps.

Precision: the time grid (rho or lambda) stays float64, and the ODE is integrated in a state of at least
float32: the time-dependent factors (alpha, e^{-lambda}) and the steps act on the state in its dtype, and a
float16 or bfloat16 state would quantise them (relative errors of 1e-2 to NaN against the float32 run). The
model is still evaluated in x_T's dtype, and x_0 is returned in it.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .. import solve_ode
from .models import check_x_T
from .pf_ode import LambdaODE, RhoODE, state_dtype
from .schedules import NoiseSchedule
from .timesteps import check_steps, sampling_times, time_interval

GRADIENTS = ("backsolve", "discrete", "direct")
FIXED_METHODS = ("euler", "midpoint", "rk4")


def adjoint_sample(model: Callable, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int | None = 20,
                   method: str = "rk4", gradient: str = "backsolve", params: Sequence[torch.Tensor] = (),
                   skip_type: str = "logSNR", t_start: float | None = None, t_end: float | None = None,
                   rtol: float = 1e-6, atol: float = 1e-6, adjoint_rtol: float | None = None,
                   adjoint_atol: float | None = None, variable: str = "rho") -> torch.Tensor:
    """Sample x_0 from x_T by the exponential-integrator PF-ODE; ``x_0.backward()`` runs the chosen gradient mode.

    Args:
        model: noise prediction ``model(x, t)``; its parameters (if an ``nn.Module``) receive gradients.
        x_T: (B, *state) initial noise; give it ``requires_grad=True`` for dL/dx_T.
        steps: fixed steps on the ``skip_type`` grid (mapped to rho) for ``method`` in euler/midpoint/rk4,
            or None for an adaptive ``method`` (e.g. "dopri5") with ``rtol``/``atol``.
        gradient: "backsolve" (AdjointDPM: continuous adjoint, memory constant in steps), "discrete"
            (exact gradient of the discretisation) or "direct" (backprop through the solver).
        params: further tensors the model closes over that need gradients, e.g. the conditioning z (listing
            the model's own parameters here too is harmless: each tensor is counted once).
        variable: "rho" (any skip_type) or "lambda" (fixed steps need skip_type="logSNR"); see the module doc.
    Returns:
        (B, *state) x_0 at ``t_end``.
    """
    check_x_T(x_T)
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
    if steps is not None:
        check_steps(steps)
    if steps is None and method in FIXED_METHODS:
        raise ValueError(f"method={method!r} is fixed-step: give steps, or use an adaptive method with steps=None")
    if steps is not None and method not in FIXED_METHODS:
        raise ValueError(f"steps={steps} needs a fixed-step method {FIXED_METHODS}; use steps=None for {method!r}")
    if variable not in ("rho", "lambda"):
        raise ValueError(f"variable must be 'rho' or 'lambda', got {variable!r}")
    if variable == "lambda" and steps is not None and skip_type != "logSNR":
        raise ValueError("variable='lambda' steps uniformly in lambda: use skip_type='logSNR' (or variable='rho')")
    if steps is None or variable == "lambda":
        times = torch.tensor(time_interval(schedule, t_start, t_end), dtype=torch.float64)
    else:
        times = sampling_times(schedule, steps, skip_type, t_start, t_end)
    lam = schedule.lambda_(times)
    ode = RhoODE if variable == "rho" else LambdaODE
    func = ode(model, schedule, model_dtype=x_T.dtype)
    grid = (torch.exp(-lam) if variable == "rho" else lam).to(device=x_T.device)  # float64
    step_size = None
    if variable == "lambda" and steps is not None:
        step_size = float(lam[1] - lam[0]) / steps * (1 + 1e-12)  # guards the grid against a round-off extra step
    dtype = state_dtype(x_T)
    alpha = schedule.alpha(times).to(device=x_T.device, dtype=dtype)
    adjoint_params = None
    if gradient != "direct":
        # Once each: a tensor listed twice (a model weight also passed in params) gets its gradient twice.
        found = tuple(p for p in func.parameters() if p.requires_grad) + tuple(params)
        adjoint_params = tuple({id(p): p for p in found}.values())
    sol = solve_ode(func, x_T.to(dtype) / alpha[0], grid, method=method, step_size=step_size, rtol=rtol, atol=atol,
                    adjoint=gradient, adjoint_params=adjoint_params, adjoint_rtol=adjoint_rtol,
                    adjoint_atol=adjoint_atol,
                    dense=False, heuristics=False)
    return (alpha[-1] * sol.ys[-1]).to(x_T.dtype)
