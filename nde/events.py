"""Event handling: end a solve where an event function crosses zero (torchdiffeq's ``event_fn``).

An event function ``event_fn(t, y)`` returns a tensor of any shape. As in torchdiffeq, its components
are made positive at the start by their initial signs and combined by a minimum,
``g(t, y) = min_i s_i·c_i(t, y)`` with ``s = sign(c(t0, y0))``, so the solve ends at the first zero
crossing of any component. After every accepted step the solver evaluates ``g`` at the step's end; on
a crossing, bisection on the step's interpolant finds the event time to within ``atol``.

:func:`event_gradient` links the event time into autograd by the implicit function theorem
(Chen, Amos & Nickel 2021, "Learning neural event functions for ODEs", eq. 5): with
``g(t*, y(t*)) = 0``,

    dt*/dθ = −(∂g/∂y · ∂y(t*)/∂θ + ∂g/∂θ) / (∂g/∂t + ∂g/∂y · f(t*, y(t*))).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

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


def combined_event_fn(event_fn: Callable, t0: torch.Tensor, y0) -> Callable:
    """``g(t, y) = min_i s_i·c_i(t, y)`` with the initial signs ``s = sign(c(t0, y0))`` (user time)."""
    with torch.no_grad():
        signs = torch.sign(_event_values(event_fn, t0, y0))

    def g(t, y):
        return (_event_values(event_fn, t, y) * signs).min()
    return g


def event_gradient(func: Callable, event_fn: Callable, t0: torch.Tensor, y0, event_t: torch.Tensor, state):
    """Return ``(event_t, state)`` equal in value to the inputs, with gradients of the event time.

    ``state = y(t*)`` carries its gradient at a fixed end time (from any gradient mode); ``event_t``
    none. The returned event time is differentiable by the implicit function theorem (module
    docstring), including through parameters of ``event_fn``, and the returned state by
    ``dy(t*) = ∂y/∂θ dθ + f(t*, y*)·dt*``. Both are built as ``x + (u − u.detach())``, so their values
    are exactly the inputs'. ``state`` and ``y0`` are tensors or tuples of tensors (the user's layout)."""
    g = combined_event_fn(event_fn, t0, y0)
    t_fixed = event_t.detach()
    parts = state if isinstance(state, tuple) else (state,)
    with torch.enable_grad():
        t_leaf = t_fixed.clone().requires_grad_(True)
        y_leaf = tuple(p.detach().clone().requires_grad_(True) for p in parts)
        g_leaf = g(t_leaf, y_leaf if isinstance(state, tuple) else y_leaf[0])
        grads = torch.autograd.grad(g_leaf, (t_leaf, *y_leaf), allow_unused=True)
    with torch.no_grad():
        f = func(t_fixed, tuple(p.detach() for p in parts) if isinstance(state, tuple) else parts[0].detach())
        f = f if isinstance(f, tuple) else (f,)
        g_dot = sum((dg * fi).sum() for dg, fi in zip(grads[1:], f) if dg is not None)
        if grads[0] is not None:
            g_dot = g_dot + grads[0]
    if not torch.is_tensor(g_dot) or float(g_dot) == 0.0:
        raise ValueError("`event_fn` is stationary along the solution at the event time "
                         "(∂g/∂t + ∂g/∂y·f = 0), so the event time has no derivative")
    correction = -g(t_fixed, state) / g_dot          # differentiable through the state and event_fn's parameters
    dt = (correction - correction.detach()).to(event_t.dtype)
    new_t = t_fixed + dt
    new_parts = tuple(p + fi * dt.to(p.dtype) for p, fi in zip(parts, f))
    return new_t, (new_parts if isinstance(state, tuple) else new_parts[0])


__all__ = ["Event", "combined_event_fn", "event_gradient"]
