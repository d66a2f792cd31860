"""The result of :func:`nde.solve_ode`."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ._integrate import output_value, step_index
from ._rk import Coefficients, interpolant_slope
from .errors import Status


@dataclass
class Solution:
    """Solution of an ODE solve.

    Attributes:
        ts: output times, ``(T,)`` or per-sample ``(batch, T)``.
        ys: states at ``ts``, ``(T, *y0.shape)`` (a tuple of such tensors for tuple states).
        stats: ``nfe`` (function evaluations; per sample in per-sample mode, where one evaluation
            of one row counts once), ``n_accepted``, ``n_rejected``; tensors.
        status: :class:`nde.Status` codes, ``()`` or ``(batch,)``; 0 is success.
        heuristics: per accepted step, ``t`` (its start), ``dt`` (its signed size: step j ends at
            ``t_j + dt_j``, and ``dt < 0`` when ``ts`` decreases), ``error_ratio`` (the scaled local error estimate
            EEst, accept iff ≤ 1) and ``stiffness`` (dominant-eigenvalue estimate ρ); shape
            ``(steps,)``, or ``(steps, batch)`` with NaN where a sample did not accept a step.
        regularization: the differentiable regulariser requested with ``regularize=`` (else None).
        event_t: with ``event_fn``, the event time, ``()`` or per sample ``(batch,)``, NaN where the
            solve reached ``t[-1]`` first; differentiable (implicit function theorem). Else None.
    """

    ts: torch.Tensor
    ys: torch.Tensor | tuple
    stats: dict[str, torch.Tensor]
    status: torch.Tensor
    heuristics: dict[str, torch.Tensor] = field(default_factory=dict)
    regularization: torch.Tensor | None = None
    event_t: torch.Tensor | None = None
    _dense: list = field(default_factory=list, repr=False)
    _coeffs: Coefficients | None = field(default=None, repr=False)
    _unflatten: object = field(default=None, repr=False)
    _time_sign: float = field(default=1.0, repr=False)
    _grad_mode: str = field(default="direct", repr=False)

    @property
    def success(self) -> bool:
        return bool((self.status == int(Status.SUCCESS)).all())

    def evaluate(self, t) -> torch.Tensor:
        """Dense output: the state at time(s) ``t`` anywhere in the solved interval, ``[ts[0], ts[-1]]`` (either
        direction of time; with ``event_fn``, up to the event), else a ``ValueError``.

        ``t``: float, 0-d or 1-d tensor. Returns ``(*y0.shape)`` or ``(len(t), *y0.shape)`` (a tuple of
        such for tuple states). The interpolant is the method's own, cubic Hermite, or for fixed-step
        methods the solve's ``interp``. A ``t`` that requires grad gets ``∂y/∂t``, the interpolant's slope.
        Available for shared-step solves with ``dense=True`` (the default of ``solve_ode``). Its gradient with
        respect to ``y0`` and parameters needs ``adjoint="direct"``: the other gradient modes record no graph of
        the dense output, so a backward pass through it raises (it used to drop that part of the gradient).
        """
        if not self._dense:
            raise ValueError("no dense output stored: solve with dense=True and shared steps "
                             "(per_sample=False) to use Solution.evaluate")
        if not torch.is_tensor(t) and not isinstance(t, (int, float)) or isinstance(t, bool):
            raise TypeError(f"`t` must be a number or a 0-d or 1-d tensor, got {type(t).__name__}")
        if torch.is_tensor(t) and (t.dim() > 1 or t.numel() == 0):
            raise ValueError(f"`t` must be a number or a non-empty 0-d or 1-d tensor, got shape {tuple(t.shape)}")
        scalar = not torch.is_tensor(t) or t.dim() == 0
        queries = t.reshape(-1) if torch.is_tensor(t) else [t]
        interval = (float(self.ts[0]), self._end_time())
        values = [self._value_at(tq, interval) for tq in queries]
        out = self._no_gradient_unless_direct(torch.stack(values))
        if self._unflatten is not None:
            out = self._unflatten(out)
            return tuple(part[0] for part in out) if scalar else out
        return out[0] if scalar else out

    def _no_gradient_unless_direct(self, out: torch.Tensor) -> torch.Tensor:
        """``out`` plus a zero whose backward raises, where the solve is differentiable (its ``ys`` require grad)
        but its gradient mode (backsolve, discrete) kept no graph of the dense output."""
        ys = self.ys if torch.is_tensor(self.ys) else self.ys[0]
        if self._grad_mode == "direct" or not (torch.is_grad_enabled() and ys.requires_grad):
            return out
        return out + _NoGradient.apply(ys, out.detach(), self._grad_mode)

    def _end_time(self) -> float:
        """The solved interval's end in user time: ``ts[-1]``, or the event time where an event ended the solve.
        The last step may reach past it (methods that interpolate their outputs), but the solve is only
        defined up to it, as torchdiffeq's interpolation is."""
        if self.event_t is not None and not bool(torch.isnan(self.event_t)):
            return float(self.event_t.detach())
        return float(self.ts[-1])

    def _value_at(self, tq, interval: tuple[float, float]) -> torch.Tensor:
        """The flat state at one query time (a float or a 0-d tensor, differentiable in time if it is) in the
        solved ``interval`` (user time)."""
        starts = [d[0] for d in self._dense]
        t_start, t_end = interval
        lo, hi = starts[0], self._time_sign * t_end
        value_t = float(tq.detach()) if torch.is_tensor(tq) else float(tq)
        s = self._time_sign * value_t
        slack = max(1e-12, torch.finfo(self.ts.dtype).eps)   # the ends rounded to the dtype of ts
        if not (lo - slack * max(1.0, abs(lo)) <= s <= hi + slack * max(1.0, abs(hi))):
            raise ValueError(f"`t`={value_t} is outside the solved interval [{t_start}, {t_end}]")
        t0, dt, y0, step, kind, f1 = self._dense[step_index(starts, s)]
        theta = min(max((s - t0) / dt, 0.0), 1.0)
        value = output_value(step, y0, dt, theta, kind, self._coeffs, f1)
        if torch.is_tensor(tq) and tq.requires_grad:   # zero-valued term with d/dt = the interpolant's slope
            slope = self._time_sign * interpolant_slope(step, y0, dt, theta, kind, self._coeffs, f1)
            value = value + (tq - tq.detach()).to(value.dtype) * slope
        return value


class _NoGradient(torch.autograd.Function):
    """Zero shaped like ``like``, attached to ``anchor`` (the solve's outputs); its backward raises."""

    @staticmethod
    def forward(ctx, anchor: torch.Tensor, like: torch.Tensor, mode: str) -> torch.Tensor:
        ctx.mode = mode
        return torch.zeros_like(like)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        raise RuntimeError(f"Solution.evaluate has no gradient with respect to y0 or parameters after a solve with "
                           f"adjoint={ctx.mode!r}, which records no graph of the dense output; use adjoint='direct' "
                           "to differentiate it (or detach it)")
