"""One generic explicit Runge–Kutta step for every tableau in :mod:`nde.tableaus`.

Shapes: in shared-step mode ``y`` has any shape and ``dt`` is a Python float; in per-sample mode
``y`` is ``(batch, d)`` and ``dt`` a tensor ``(batch,)``. Stage combinations are one add per nonzero
coefficient on the CPU (Python-float weights, per-sample steps scaled by each row's step at the end: fewer
operations than stacking), and one matrix product over the stacked stages on a GPU (fewer kernel launches).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch

from .tableaus import ButcherTableau, hermite_weights


@dataclass
class Coefficients:
    """A tableau's coefficients as tensors of one dtype/device, cached per solve."""

    tableau: ButcherTableau
    a_rows: list[torch.Tensor]          # row i: (1, i+1)
    b_row: torch.Tensor                 # (1, s)
    err_row: torch.Tensor | None        # (1, s)
    dense: torch.Tensor | None          # (s, m)
    c: torch.Tensor                     # (s,) in the time dtype
    # The same rows as (stage, coefficient) pairs without the zeros, for shared steps (float dt).
    a_terms: list[list[tuple[int, float]]]
    b_terms: list[tuple[int, float]]
    err_terms: list[tuple[int, float]] | None

    @classmethod
    def build(cls, tab: ButcherTableau, dtype: torch.dtype, t_dtype: torch.dtype,
              device: torch.device) -> "Coefficients":
        """Cached per (method, dtypes, device): solves reuse the same small coefficient tensors."""
        key = (tab.name, dtype, t_dtype, torch.device(device))
        if key not in _CACHE:
            _CACHE[key] = cls._build(tab, dtype, t_dtype, device)
        return _CACHE[key]

    @classmethod
    def _build(cls, tab, dtype, t_dtype, device) -> "Coefficients":
        def row(values):
            return torch.tensor([list(values)], dtype=dtype, device=device)

        return cls(
            tableau=tab,
            a_rows=[row(r) for r in tab.a],
            b_row=row(tab.b),
            err_row=None if tab.b_error is None else row(tab.b_error),
            dense=None if tab.dense is None else torch.tensor(tab.dense, dtype=dtype, device=device),
            c=torch.tensor(tab.c, dtype=t_dtype, device=device),
            a_terms=[_terms(r) for r in tab.a],
            b_terms=_terms(tab.b),
            err_terms=None if tab.b_error is None else _terms(tab.b_error),
        )


_CACHE: dict[tuple, Coefficients] = {}


def _terms(row) -> list[tuple[int, float]]:
    return [(j, float(c)) for j, c in enumerate(row) if c != 0]


class Step(NamedTuple):
    """Result of one RK step from ``(t, y)`` with step ``dt``.

    ``ks``: the stage derivatives (list of tensors shaped like ``y``); for FSAL methods the last one is
    ``f(t+dt, y1)``. ``stages``: the stage inputs ``g_i`` that the stiffness estimate needs (only the
    two declared ones are kept). ``error``: embedded error estimate shaped like ``y`` or ``None``.
    """

    y1: torch.Tensor
    ks: list[torch.Tensor]
    error: torch.Tensor | None
    stiff_inputs: tuple[torch.Tensor, torch.Tensor] | None


def _by_terms(y: torch.Tensor) -> bool:
    """Steps on the CPU sum stages term by term (shared or per-sample); elsewhere one matrix product per stage
    (on a GPU every add is a kernel launch, and the stacked product is fewer launches; not yet measured)."""
    return y.is_cpu


def _sum_terms(start: torch.Tensor | None, ks: list[torch.Tensor], terms: list[tuple[int, float]],
               dt) -> torch.Tensor:
    """start + dt·Σ c_j k_j over the nonzero ``terms`` (``start`` None: 0), one add per term.

    ``dt``: a float (shared steps), or a (batch, 1) column (per-sample steps on rows of shape (batch, d): the sum
    is scaled by each row's step once, at the end). On the small states of neural ODEs each tensor operation costs
    its dispatch, and one add per nonzero coefficient is fewer operations than stacking the stages for a matrix
    product (dopri5: 20 adds per step, against 24 operations in 6 stack-reshape-addmm-view groups)."""
    if not terms:
        return torch.zeros_like(ks[0]) if start is None else start
    per_row = not isinstance(dt, float)   # the column scales the sum once, after the terms
    h = 1.0 if per_row else dt
    (j, c), rest = terms[0], terms[1:]
    acc = torch.mul(ks[j], c * h) if start is None or per_row else torch.add(start, ks[j], alpha=c * h)
    for j, c in rest:
        acc = acc.add_(ks[j], alpha=c * h)
    if not per_row:
        return acc
    return acc * dt if start is None else torch.addcmul(start, dt, acc)


def _combine(y: torch.Tensor, ks: list[torch.Tensor], row: torch.Tensor, dt) -> torch.Tensor:
    """y + dt·Σ_j row[j]·k_j as one matrix product over the stacked stages (on an accelerator, where each
    operation is a kernel launch), with ``dt`` a float (shared steps) or a (batch,) tensor (per-sample steps)."""
    n = row.shape[1]
    stacked = torch.stack(ks[:n]).reshape(n, -1)
    if isinstance(dt, float):
        return torch.addmm(y.reshape(1, -1), row, stacked, alpha=dt).view(y.shape)
    comb = torch.mm(row, stacked).view(y.shape)
    return torch.addcmul(y, dt.unsqueeze(-1), comb)


def _weighted(ks: list[torch.Tensor], row: torch.Tensor, dt, like: torch.Tensor) -> torch.Tensor:
    """dt·Σ_j row[j]·k_j (the error estimate) as one matrix product; ``dt`` as in :func:`_combine`."""
    comb = torch.mm(row, torch.stack(ks).reshape(len(ks), -1)).view(like.shape)
    return comb * dt if isinstance(dt, float) else comb * dt.unsqueeze(-1)


def host_tensor(values, dtype: torch.dtype | None, device) -> torch.Tensor:
    """``torch.tensor(values)`` on ``device`` without a stream synchronisation.

    Built on the host and copied with ``non_blocking=True``: ``torch.tensor(..., device=cuda)`` is a
    blocking copy that waits for every queued kernel, which in the step loop would add a second
    synchronisation per step to the error ratio's one."""
    host = torch.tensor(values, dtype=dtype)
    return host if torch.device(device).type == "cpu" else host.to(device, non_blocking=True)


def stage_times(t, dt, coeffs: Coefficients, t_dtype: torch.dtype, device) -> list:
    """Times t + c_i·dt of every stage: 0-d tensors (shared) or (batch,) tensors (per-sample)."""
    if isinstance(dt, float):
        tab = coeffs.tableau
        return list(host_tensor([t + ci * dt for ci in tab.c], t_dtype, device).unbind(0))
    return list(torch.addcmul(t.unsqueeze(0), coeffs.c.unsqueeze(1), dt.unsqueeze(0)).unbind(0))


def rk_step(func: Callable, t, dt, y: torch.Tensor, k1: torch.Tensor, coeffs: Coefficients,
            times: list, want_stiffness: bool = False, error_grad: bool = True) -> Step:
    """Take one explicit RK step. ``k1 = f(t, y)`` is given (FSAL reuse or computed by the caller).

    ``error_grad=False``: the error estimate is computed without autograd (it only sizes the next step
    unless a regulariser differentiates it), which keeps its operations out of the graph."""
    tab = coeffs.tableau
    ks = [k1]
    pair = tab.stiffness_pair if want_stiffness else None
    inputs = {0: y}  # stage inputs g_i kept for the stiffness estimate
    g = y
    by_terms = _by_terms(y)
    if by_terms and torch.is_tensor(dt):
        dt = dt.unsqueeze(-1)   # per-sample sums by terms take each row's step as one (batch, 1) column
    for i in range(1, tab.stages):
        g = _sum_terms(y, ks, coeffs.a_terms[i - 1], dt) if by_terms else _combine(y, ks, coeffs.a_rows[i - 1], dt)
        if pair is not None and i in pair:
            inputs[i] = g
        ks.append(func(times[i], g))
    if tab.fsal:
        y1 = g  # last stage input is the solution
    else:
        y1 = _sum_terms(y, ks, coeffs.b_terms, dt) if by_terms else _combine(y, ks, coeffs.b_row, dt)
    if coeffs.err_row is None:
        error = None
    elif error_grad or not torch.is_grad_enabled():   # no grad mode to switch (a context manager costs)
        error = _error(ks, coeffs, dt, y, by_terms)
    else:
        with torch.no_grad():
            error = _error(ks, coeffs, dt, y, by_terms)
    stiff_inputs = None if pair is None else (inputs[pair[0]], inputs[pair[1]])
    return Step(y1, ks, error, stiff_inputs)


def _error(ks: list[torch.Tensor], coeffs: Coefficients, dt, y: torch.Tensor, by_terms: bool) -> torch.Tensor:
    """The embedded error estimate dt·Σ b_error[i]·k_i (``dt`` as :func:`_sum_terms` takes it when ``by_terms``)."""
    return _sum_terms(None, ks, coeffs.err_terms, dt) if by_terms else _weighted(ks, coeffs.err_row, dt, y)


def stiffness_estimate(step: Step, coeffs: Coefficients, reduce: Callable) -> torch.Tensor | None:
    """Dominant-eigenvalue estimate ρ = ‖k_i − k_j‖ / ‖g_i − g_j‖ (Hairer & Wanner II, §IV.2).

    ``reduce`` maps a tensor shaped like y to its norm (scalar or per-sample).
    """
    if step.stiff_inputs is None:
        return None
    i, j = coeffs.tableau.stiffness_pair
    num = reduce(step.ks[j] - step.ks[i])
    den = reduce(step.stiff_inputs[1] - step.stiff_inputs[0])
    return num / den.clamp_min(torch.finfo(den.dtype).tiny)


def interpolate(step: Step, y0: torch.Tensor, dt, theta, coeffs: Coefficients,
                k_next: torch.Tensor | None = None) -> torch.Tensor:
    """Dense output at ``t + θ·dt`` within a step.

    ``theta``: float (shared) or (batch,) tensor (per-sample). Uses the method's own continuous
    extension when it has one, otherwise cubic Hermite through (y0, f0, y1, f1) with the step's first stage
    as f0 and as f1 the next step's first stage: the last stage of a method that carries it (FSAL:
    f(t+dt, y1); torchdiffeq's stage reuse: the stage it reuses, as torchdiffeq's interpolant does), else
    ``k_next``.
    """
    if isinstance(theta, float) and theta == 1.0:
        return step.y1
    if coeffs.dense is not None:
        if isinstance(theta, float):
            if _by_terms(y0):
                return _sum_terms(y0, step.ks, _dense_terms(coeffs.tableau.dense, theta), dt)
            weights = [0.0] * len(coeffs.tableau.dense)
            for i, w in _dense_terms(coeffs.tableau.dense, theta):
                weights[i] = w
            return _combine(y0, step.ks, host_tensor([weights], y0.dtype, y0.device), dt)
        exps = torch.arange(1, coeffs.dense.shape[1] + 1, device=y0.device, dtype=y0.dtype)
        powers = theta.to(y0.dtype).unsqueeze(-1) ** exps                      # (batch, m)
        weights = powers @ coeffs.dense.T                                     # (batch, s)
        stacked = torch.stack(step.ks, dim=1)                                 # (batch, s, d)
        comb = torch.bmm(weights.unsqueeze(1), stacked).squeeze(1)
        return torch.addcmul(y0, dt.unsqueeze(-1), comb)
    return hermite_interpolate(step, y0, dt, theta, coeffs, k_next)


def hermite_interpolate(step: Step, y0: torch.Tensor, dt, theta, coeffs: Coefficients,
                        k_next: torch.Tensor | None = None) -> torch.Tensor:
    """Cubic Hermite through (y0, f0, y1, f1) at ``t + θ·dt`` (``theta`` and ``dt`` as in :func:`interpolate`), f1 as
    there: the method's carried last stage, else ``k_next``."""
    f0 = step.ks[0]
    f1 = step.ks[-1] if coeffs.tableau.carries_last_stage else k_next
    if f1 is None:
        raise RuntimeError("cubic Hermite interpolation needs f(t1, y1)")
    if isinstance(theta, float):
        h00, h10, h01, h11 = hermite_weights(theta)
        return h00 * y0 + h01 * step.y1 + (h10 * dt) * f0 + (h11 * dt) * f1
    th = theta.to(y0.dtype).unsqueeze(-1)
    t2, t3 = th * th, th * th * th
    d = dt.to(y0.dtype).unsqueeze(-1)
    return ((2 * t3 - 3 * t2 + 1) * y0 + (-2 * t3 + 3 * t2) * step.y1
            + (t3 - 2 * t2 + th) * d * f0 + (t3 - t2) * d * f1)


def _dense_terms(dense: tuple[tuple[float, ...], ...], theta: float) -> list[tuple[int, float]]:
    """(stage i, Σ_m dense[i][m]·θ^(m+1)) for the stages whose weight is nonzero, by Horner's rule."""
    terms = []
    for i, row in enumerate(dense):
        weight = 0.0
        for b in reversed(row):
            weight = weight * theta + b
        if weight != 0.0:
            terms.append((i, weight * theta))
    return terms


def interpolant_slope(step: Step, y0: torch.Tensor, dt: float, theta: float, kind: str, coeffs: Coefficients,
                      k_next: torch.Tensor | None = None) -> torch.Tensor:
    """d/dt of the dense output of a shared step at ``t + θ·dt``: the derivative of the interpolant that
    :func:`nde._integrate.output_value` evaluates for ``kind`` ("dense", "cubic", "linear")."""
    if kind == "linear":
        return (step.y1 - y0) / dt
    if kind == "dense" and coeffs.dense is not None:
        weights = [sum((m + 1) * b * theta ** m for m, b in enumerate(row)) for row in coeffs.tableau.dense]
        return _sum_terms(None, step.ks, [(i, w) for i, w in enumerate(weights) if w != 0], 1.0)
    f0 = step.ks[0]
    f1 = step.ks[-1] if coeffs.tableau.carries_last_stage else k_next
    t2 = theta * theta
    return ((6 * t2 - 6 * theta) * (y0 - step.y1) / dt + (3 * t2 - 4 * theta + 1) * f0
            + (3 * t2 - 2 * theta) * f1)


def linear_interpolate(y0: torch.Tensor, y1: torch.Tensor, theta) -> torch.Tensor:
    """Linear interpolation between grid values (torchdiffeq's default for fixed-grid solvers)."""
    if isinstance(theta, float):
        return torch.lerp(y0, y1, theta)
    return torch.lerp(y0, y1, theta.to(y0.dtype).unsqueeze(-1))
