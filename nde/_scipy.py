"""``odeint(method="scipy_solver")``: torchdiffeq's wrapper around ``scipy.integrate.solve_ivp``.

For drop-in compatibility only: the state is copied to the host as one float64 vector, ``func`` is
called under ``torch.no_grad()`` at every right-hand-side evaluation, and the result carries no
gradient (as in torchdiffeq). Options: ``solver`` (any ``solve_ivp`` method, default ``"LSODA"``),
``min_step``, ``max_step``. Useful for stiff problems (``"LSODA"``, ``"Radau"``, ``"BDF"``), which the
explicit methods of nde do not cover.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

SCIPY_OPTIONS = {"solver", "min_step", "max_step"}


def scipy_odeint(func: Callable, tensors: tuple[torch.Tensor, ...], t: torch.Tensor, rtol, atol,
                 options: dict) -> tuple[torch.Tensor, ...]:
    """Solve on the host with ``solve_ivp``; returns one ``(len(t), *shape)`` tensor per state tensor.

    ``tensors`` and ``t`` are already validated (``t`` strictly monotonic; decreasing integrates backwards).
    """
    from scipy.integrate import solve_ivp  # noqa: PLC0415  (optional dependency)

    unknown = set(options) - SCIPY_OPTIONS
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)} in `options` for method 'scipy_solver'; "
                         f"expected some of {sorted(SCIPY_OPTIONS)}")
    shapes = [tuple(x.shape) for x in tensors]
    sizes = [math.prod(s) for s in shapes]
    dtype, device = tensors[0].dtype, tensors[0].device
    single = len(tensors) == 1

    def to_user(y: np.ndarray):
        parts = torch.split(torch.as_tensor(y, dtype=dtype).to(device), sizes)
        parts = tuple(p.reshape(s) for p, s in zip(parts, shapes))
        return parts[0] if single else parts

    def rhs(time: float, y: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = func(torch.tensor(time, dtype=dtype, device=device), to_user(y))
        outs = (out,) if single else out
        slope = torch.cat([o.reshape(-1) for o in outs]).detach().cpu().double().numpy()
        if not np.isfinite(slope).all():   # solve_ivp would shrink its step on NaN forever
            raise RuntimeError(f"`func` returned non-finite values (NaN or inf) at t={time:.6g} (method 'scipy_solver')")
        return slope

    y0 = torch.cat([x.detach().reshape(-1) for x in tensors]).cpu().double().numpy()
    tol_shape = shapes[0] if single else y0.shape   # a tuple state's tolerance tensor is laid out flat
    times = t.detach().cpu().double().numpy()
    if len(times) == 1:
        ys = y0[None]
    else:
        limits = {key: float(options[key]) for key in ("min_step", "max_step") if key in options}  # min_step: LSODA's
        sol = solve_ivp(rhs, (times[0], times[-1]), y0, method=options.get("solver", "LSODA"), t_eval=times,
                        rtol=_host(rtol, tol_shape), atol=_host(atol, tol_shape), **limits)
        if not sol.success:
            raise RuntimeError(f"scipy.integrate.solve_ivp ({options.get('solver', 'LSODA')}) failed: {sol.message}")
        ys = sol.y.T
    flat = torch.as_tensor(ys, dtype=dtype).to(device)
    return tuple(p.reshape(len(times), *s) for p, s in zip(torch.split(flat, sizes, dim=1), shapes))


def _host(tol, shape: tuple[int, ...]):
    """A tolerance as solve_ivp takes it: a float, or for a per-component tensor (broadcast to a single-tensor
    state's ``shape``, or for a tuple state laid out flat by ``nde.api._per_tensor_tolerance``) a flat float64
    array."""
    if not torch.is_tensor(tol):
        return float(tol)
    return torch.broadcast_to(tol.detach(), shape).cpu().double().reshape(-1).numpy()
