"""Event handling: end a solve where an event function crosses zero (torchdiffeq's ``event_fn``).

An event function ``event_fn(t, y)`` returns a tensor of any shape. As in torchdiffeq, its components
are made positive at the start by their initial signs and combined by a minimum,
``g(t, y) = min_i s_i·c_i(t, y)`` with ``s = sign(c(t0, y0))``, so the solve ends at the first zero
crossing of any component. After every accepted step the solver evaluates ``g`` at the step's end; on
a crossing, bisection on the step's interpolant finds the event time to within ``atol`` (:class:`Event`;
where each state inside the step costs a fresh RK step, the Illinois method instead). In per-sample
mode every row has its own ``g`` and stops at its own event, and the rows that crossed in a step are
bisected together (:class:`RowEvent`).

:func:`event_time_gradient` (and :func:`event_gradient`, in the user's terms) links the event time into
autograd by the implicit function theorem
(Chen, Amos & Nickel 2021, "Learning neural event functions for ODEs", eq. 5): with
``g(t*, y(t*)) = 0``,

    dt*/dθ = −(∂g/∂y · ∂y(t*)/∂θ + ∂g/∂θ) / (∂g/∂t + ∂g/∂y · f(t*, y(t*))).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ._checks import first_order_only

MAX_BISECTIONS = 200


def _event_values(event_fn: Callable, t: torch.Tensor, y) -> torch.Tensor:
    c = event_fn(t, y)
    if not torch.is_tensor(c) or not torch.is_floating_point(c):
        raise TypeError(f"`event_fn` must return a floating-point tensor, got {type(c).__name__}"
                        + (f" of dtype {c.dtype}" if torch.is_tensor(c) else ""))
    if c.numel() == 0:
        raise ValueError("`event_fn` returned an empty tensor")
    return c


class Event:
    """The combined event function ``g`` on the solver's internal time and flat state.

    ``to_user`` maps the flat state to the user's layout, ``sign`` is the direction of user time
    (internal time is ``sign·t``, always increasing), ``t_dtype``/``device`` those of the user's ``t``.
    ``tol``: the bisection stops once the bracket is at most this wide (torchdiffeq uses ``atol``)."""

    def __init__(self, event_fn: Callable, to_user: Callable, sign: float, t_dtype: torch.dtype, device,
                 tol: float):
        self.event_fn, self.to_user, self.sign = event_fn, to_user, sign
        self.t_dtype, self.device, self.tol = t_dtype, device, tol
        self.signs: torch.Tensor | None = None

    def _user_time(self, t: float) -> torch.Tensor:
        return torch.tensor(self.sign * t, dtype=self.t_dtype, device=self.device)

    def start(self, t0: float, y0: torch.Tensor) -> bool:
        """Fix the initial signs; True when ``g(t0, y0) == 0`` (the event holds at the start)."""
        with torch.no_grad():
            c0 = _event_values(self.event_fn, self._user_time(t0), self.to_user(y0))
            if not bool(torch.isfinite(c0).all()):
                raise ValueError(f"`event_fn` is not finite at the initial time t={self.sign * t0}")
            self.signs = torch.sign(c0)
            return bool((c0 * self.signs).min() == 0)

    def value(self, t: float, y: torch.Tensor) -> float:
        """``g(t, y)`` as a float, without autograd (one host transfer)."""
        with torch.no_grad():
            c = _event_values(self.event_fn, self._user_time(t), self.to_user(y.detach()))
            value = float((c * self.signs).min())
        if math.isnan(value):
            raise ValueError(f"`event_fn` returned NaN at t={self.sign * t}")
        return value

    def differentiable(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``g`` at internal time ``t`` (0-d tensor) with autograd, for :func:`event_time_gradient`."""
        return (_event_values(self.event_fn, (self.sign * t).to(self.t_dtype), self.to_user(y)) * self.signs).min()

    def crossed(self, t: float, y: torch.Tensor) -> bool:
        """Whether ``g`` has reached zero at ``(t, y)`` (it is positive until the event)."""
        return self.value(t, y) <= 0

    def locate(self, state_at: Callable[[float], torch.Tensor], t_a: float, t_b: float,
               costly: bool = False) -> float:
        """Event time in ``(t_a, t_b]`` given ``g > 0`` at ``t_a`` and ``g ≤ 0`` at ``t_b``, to within ``tol``.

        ``state_at(s)`` is y(s) inside the step. Bisection (as torchdiffeq), returning the midpoint of the
        final bracket; with ``costly=True`` (each state a fresh RK step) the Illinois variant of regula
        falsi, which needs a handful of states where bisection needs ~30."""
        with torch.no_grad():
            if costly:
                return self._illinois(state_at, t_a, t_b)
            for _ in range(MAX_BISECTIONS):
                mid = 0.5 * (t_a + t_b)
                if t_b - t_a <= self.tol or mid in (t_a, t_b):
                    break
                if self.crossed(mid, state_at(mid)):
                    t_b = mid
                else:
                    t_a = mid
        return 0.5 * (t_a + t_b)

    def _illinois(self, state_at: Callable[[float], torch.Tensor], t_a: float, t_b: float) -> float:
        """Illinois method (Dowell & Jarratt 1971): regula falsi that halves the value kept at an end
        retained twice in a row, so that both ends of the bracket converge (superlinearly)."""
        g_a, g_b = self.value(t_a, state_at(t_a)), self.value(t_b, state_at(t_b))
        kept = 0   # +1: the last two updates moved t_a, −1: t_b
        for _ in range(MAX_BISECTIONS):
            if t_b - t_a <= self.tol or g_b == 0:
                break
            s = (t_a * g_b - t_b * g_a) / (g_b - g_a)
            if not t_a < s < t_b:
                s = 0.5 * (t_a + t_b)
            g_s = self.value(s, state_at(s))
            if g_s > 0:
                t_a, g_a = s, g_s
                g_b = g_b / 2 if kept == 1 else g_b
                kept = 1
            else:
                t_b, g_b = s, g_s
                g_a = g_a / 2 if kept == -1 else g_a
                kept = -1
        return t_b if g_b == 0 else 0.5 * (t_a + t_b)


class RowEvent:
    """Per-sample events: row i ends where ``g_i(t, y_i) = min_k s_ik·c_ik(t, y_i)`` reaches zero.

    ``event_fn(t, y)`` takes the times ``(n,)`` and states ``(n, ...)`` of any n rows (in the user's
    layout and time) and returns ``(n,)`` or ``(n, k)``; rows must not interact. ``s = sign(c(t0, y0))``
    per row and component. ``times`` holds each row's event time (internal, NaN until found)."""

    def __init__(self, event_fn: Callable, to_user: Callable, sign: float, t_dtype: torch.dtype, tol: float):
        self.event_fn, self.to_user, self.sign, self.t_dtype, self.tol = event_fn, to_user, sign, t_dtype, tol
        self.signs: torch.Tensor | None = None
        self.times: torch.Tensor | None = None
        self.at_start: torch.Tensor | None = None    # (batch,) rows whose event holds at t0

    def _values(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        c = _event_values(self.event_fn, (self.sign * t).to(self.t_dtype), self.to_user(y))
        if c.dim() not in (1, 2) or c.shape[0] != y.shape[0]:
            raise ValueError(f"`event_fn` must return (n,) or (n, k) for n = {y.shape[0]} rows, "
                             f"got shape {tuple(c.shape)}")
        return c if c.dim() == 2 else c.unsqueeze(1)

    def start(self, t0: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
        """Fix the signs; the (batch,) mask of rows whose event function is zero at the start."""
        with torch.no_grad():
            c0 = self._values(t0, y0)
            if not bool(torch.isfinite(c0).all()):
                raise ValueError("`event_fn` is not finite at the initial times")
            self.signs = torch.sign(c0)
            self.times = torch.full_like(t0, math.nan)
            self.at_start = (c0 * self.signs).min(dim=1).values == 0
            self.times[self.at_start] = t0[self.at_start]
        return self.at_start

    def values(self, rows: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``g`` of the given rows (indices into the batch) at times ``t`` and states ``y``, ``(n,)``."""
        with torch.no_grad():
            return self.differentiable(t, y.detach(), rows)

    def differentiable(self, t: torch.Tensor, y: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``g`` of ``rows`` with autograd, ``(n,)``."""
        return (self._values(t, y) * self.signs[rows]).min(dim=1).values

    def locate(self, rows: torch.Tensor, state_at: Callable[[torch.Tensor], torch.Tensor], t_a: torch.Tensor,
               t_b: torch.Tensor) -> torch.Tensor:
        """Every row's event time in ``(t_a, t_b]`` (``g > 0`` at t_a, ``≤ 0`` at t_b) by bisection on
        ``state_at(times) -> (n, ...)`` to within ``tol``, all rows at once: the bracket midpoints. With
        ``tol`` 0 (``atol=0``) or below the resolution of the times, to that resolution. A NaN value of ``g``
        raises a ``ValueError`` (as in shared mode), checked once after the bisection."""
        with torch.no_grad():
            width, scale = torch.stack([(t_b - t_a).max(), torch.maximum(t_a.abs(), t_b.abs()).max()]).tolist()
            tol = max(self.tol, torch.finfo(t_a.dtype).eps * scale)
            iterations = 0 if width <= tol else min(MAX_BISECTIONS, math.ceil(math.log2(width / tol)))
            nan_at = torch.full_like(t_a, math.nan)   # per row, a time where g was NaN
            for _ in range(iterations):
                mid = 0.5 * (t_a + t_b)
                g = self.values(rows, mid, state_at(mid))
                nan_at = torch.where(torch.isnan(g), mid, nan_at)
                crossed = g <= 0
                t_b, t_a = torch.where(crossed, mid, t_b), torch.where(crossed, t_a, mid)
            found = ~torch.isnan(nan_at)
            if bool(found.any()):
                i = int(found.nonzero()[0])
                raise ValueError(f"`event_fn` returned NaN at t={self.sign * float(nan_at[i])} (row {int(rows[i])})")
        return 0.5 * (t_a + t_b)


def event_time_gradient(g: Callable, func: Callable, t_event: torch.Tensor, y_end: torch.Tensor):
    """Return ``(t_event, y_end)`` equal in value, with the event time's gradient (module docstring).

    ``g(t, y)``: the combined event function with autograd, ``()`` (shared) or ``(n,)`` (per row);
    ``func(t, y)``: the vector field; ``t_event``: ``()`` or ``(n,)`` event times; ``y_end``: the state at
    them, ``(*shape)`` or ``(n, ...)``, carrying its gradient at fixed end time. Built as
    ``x + (u − u.detach())``, so the values are exactly the inputs'. Where nothing needs a gradient (no graph
    reaches ``g(t_event, y_end)``), the inputs are returned as they are, whatever ``g``'s differentiability."""
    t_fixed = t_event.detach()
    value = g(t_fixed, y_end)     # differentiable through y_end and event_fn's parameters
    if not value.requires_grad:
        if torch.is_grad_enabled() and y_end.requires_grad:
            raise ValueError("`event_fn` returned a value without autograd history (e.g. an indicator, or "
                             "Python numbers), so the event time has no derivative; build it from torch "
                             "operations on t and y, or solve without gradients")
        return t_fixed, y_end
    with torch.enable_grad():
        t_leaf = t_fixed.clone().requires_grad_(True)
        y_leaf = y_end.detach().clone().requires_grad_(True)
        dg_dt, dg_dy = torch.autograd.grad(g(t_leaf, y_leaf).sum(), (t_leaf, y_leaf), allow_unused=True)
    with torch.no_grad():
        f = func(t_fixed, y_end.detach())
        per_row = t_fixed.dim() == 1
        g_dot = torch.zeros_like(t_fixed, dtype=y_end.dtype)
        if dg_dy is not None:
            g_dot = (dg_dy * f).reshape(f.shape[0], -1).sum(1) if per_row else (dg_dy * f).sum()
        if dg_dt is not None:
            g_dot = g_dot + dg_dt.to(g_dot.dtype)
    if not bool((g_dot != 0).all()):
        raise ValueError("`event_fn` is stationary along the solution at the event time "
                         "(∂g/∂t + ∂g/∂y·f = 0), so the event time has no derivative")
    correction = -value / g_dot
    if correction.requires_grad:
        correction = _FirstOrderOnly.apply(correction)
    dt = correction - correction.detach()
    shift = dt.reshape(-1, *([1] * (y_end.dim() - 1))) if per_row else dt
    return t_fixed + dt.to(t_fixed.dtype), y_end + f * shift.to(y_end.dtype)


class _FirstOrderOnly(torch.autograd.Function):
    """Identity whose backward refuses ``create_graph=True``. The event time's correction holds ∂g/∂t + ∂g/∂y·f
    and f constant, so its derivative is exact to first order only: a second derivative through it comes out
    wrong (d²t*/dh0² of a ball with drag: 0 instead of −0.026; torchdiffeq's is 0 too)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        first_order_only("an event time", "its gradient (implicit function theorem) is exact to first order only")
        return grad


def combined_event_fn(event_fn: Callable, t0: torch.Tensor, y0) -> Callable:
    """``g(t, y) = min_i s_i·c_i(t, y)`` with the initial signs ``s = sign(c(t0, y0))`` (user time)."""
    with torch.no_grad():
        signs = torch.sign(_event_values(event_fn, t0, y0))

    def g(t, y):
        return (_event_values(event_fn, t, y) * signs).min()
    return g


def event_gradient(func: Callable, event_fn: Callable, t0: torch.Tensor, y0, event_t: torch.Tensor, state):
    """:func:`event_time_gradient` in the user's terms (``odeint_event``): ``func`` and ``event_fn`` as
    given to ``odeint``, ``state = y(event_t)`` a tensor or tuple of tensors, ``t0``/``y0`` for the
    initial signs of ``event_fn``'s components."""
    g = combined_event_fn(event_fn, t0, y0)
    if not isinstance(state, tuple):
        return event_time_gradient(g, func, event_t, state)
    shapes, sizes = [p.shape for p in state], [p.numel() for p in state]

    def parts(y: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(piece.reshape(shape) for piece, shape in zip(torch.split(y, sizes), shapes))

    def flat_func(t, y):
        return torch.cat([out.reshape(-1) for out in func(t, parts(y))])
    new_t, new_state = event_time_gradient(lambda t, y: g(t, parts(y)), flat_func, event_t,
                                           torch.cat([p.reshape(-1) for p in state]))
    return new_t, parts(new_state)


__all__ = ["Event", "RowEvent", "combined_event_fn", "event_gradient", "event_time_gradient"]
