"""torchdiffeq's fixed-grid Adams methods: ``explicit_adams``, ``implicit_adams`` and ``fixed_adams``.

Adams–Bashforth with k steps (Hairer, Nørsett & Wanner I, §III.1, eq. 1.5 and Table 1.1):

    y_{n+1} = y_n + h·Σ_{j=0}^{k−1} β_{k,j}·f_{n−j},

and the predictor–corrector variant (``implicit_adams``, ``fixed_adams``): the Adams–Bashforth value
predicts, and the Adams–Moulton corrector through k + 1 points (eq. 1.8)

    y_{n+1} = y_n + h·(β*_{k,0}·f(t_{n+1}, y_{n+1}) + Σ_{j=1}^{k} β*_{k,j}·f_{n+1−j})

is solved by functional iteration, at most ``max_iters`` times, until two successive increments agree
to ``rtol``/``atol`` in the max norm. As in torchdiffeq 0.2.5: f is evaluated at every grid point, the
first two steps (fewer than three stored values) take Kutta's 3/8 rule, and from then on k is the
number of stored values, at most ``max_order`` − 1; a corrector that does not converge warns and drops
the oldest stored value (lowering the order).

The coefficients come from the backward-difference expansion (eq. 1.6 and 1.9 of the same section):
β_{k,j} = (−1)^j Σ_{i=j}^{k−1} γ_i·C(i, j) with Σ_{m=0}^{i} γ_m/(i+1−m) = 1, and β* likewise with
γ*_0 = 1 and Σ_{m=0}^{i} γ*_m/(i+1−m) = 0 for i ≥ 1, in exact rational arithmetic.
"""
from __future__ import annotations

import collections
import warnings
from dataclasses import dataclass
from fractions import Fraction
from math import comb
from typing import Callable

import torch

from ._rk import Coefficients, Step, rk_step, stage_times

MAX_ORDER = 12          # torchdiffeq's largest (and default) max_order
MIN_ORDER = 4           # below max_order 4 every step is the 3/8 rule
DEFAULT_MAX_ITERS = 4
IMPLICIT = {"explicit_adams": False, "implicit_adams": True, "fixed_adams": True}


def _gammas(n: int, implicit: bool) -> list[Fraction]:
    """γ_0..γ_{n−1} (explicit) or γ*_0..γ*_{n−1} (implicit) of the backward-difference form."""
    gammas: list[Fraction] = []
    for i in range(n):
        target = Fraction(1) if (i == 0 or not implicit) else Fraction(0)
        gammas.append(target - sum((g / (i + 1 - m) for m, g in enumerate(gammas)), Fraction(0)))
    return gammas


def adams_coefficients(k: int, implicit: bool) -> tuple[float, ...]:
    """Adams–Bashforth weights β_{k,0..k−1} (of f_n, f_{n−1}, ...) or, ``implicit``, Adams–Moulton
    weights β*_{k,0..k} (of f_{n+1}, f_n, ...)."""
    n = k + 1 if implicit else k
    gammas = _gammas(n, implicit)
    return tuple(float((-1) ** j * sum(gammas[i] * comb(i, j) for i in range(j, n))) for j in range(n))


@dataclass(frozen=True)
class Adams:
    """One of torchdiffeq's Adams methods with its options."""

    name: str
    implicit: bool
    max_order: int = MAX_ORDER
    max_iters: int = DEFAULT_MAX_ITERS

    @classmethod
    def from_options(cls, method: str, options: dict, argname: str) -> "Adams":
        """``method`` and its ``max_order`` / ``max_iters`` options (removed from ``options``)."""
        max_order = options.pop("max_order", MAX_ORDER)
        max_iters = options.pop("max_iters", DEFAULT_MAX_ITERS)
        if isinstance(max_order, bool) or not isinstance(max_order, int) or not 1 <= max_order <= MAX_ORDER:
            raise ValueError(f"`{argname}['max_order']` must be an integer in [1, {MAX_ORDER}], got {max_order!r}")
        if isinstance(max_iters, bool) or not isinstance(max_iters, int) or max_iters < 1:
            raise ValueError(f"`{argname}['max_iters']` must be a positive integer, got {max_iters!r}")
        if max_order < MIN_ORDER:
            warnings.warn(f"max_order is below {MIN_ORDER}, so {method} reduces to Kutta's 3/8 rule (rk4)")
        return cls(method, IMPLICIT[method], max_order, max_iters)

    def stepper(self, func: Callable, coeffs: Coefficients, rtol, atol, t_dtype, device,
                perturb: bool = False) -> "AdamsStepper":
        return AdamsStepper(self, func, coeffs, rtol, atol, t_dtype, device, perturb)


_BASHFORTH = [()] + [adams_coefficients(k, False) for k in range(1, MAX_ORDER)]
_MOULTON = [()] + [adams_coefficients(k, True) for k in range(1, MAX_ORDER)]


def _weighted_sum(weights, values: list[torch.Tensor]) -> torch.Tensor:
    """Σ_j weights[j]·values[j] (Python-float weights)."""
    acc = torch.mul(values[0], weights[0])
    for w, v in zip(weights[1:], values[1:]):
        acc = acc.add_(v, alpha=w)
    return acc


class AdamsStepper:
    """The steps of one solve: f at the grid points so far (newest first) and the step rule.

    ``coeffs``: Kutta's 3/8 rule, for the start-up steps. ``perturb``: evaluations at t1 are made just
    before it (torchdiffeq's ``perturb`` option; the caller evaluates f0 just after t)."""

    def __init__(self, method: Adams, func: Callable, coeffs: Coefficients, rtol, atol, t_dtype, device,
                 perturb: bool = False):
        self.method, self.func, self.coeffs = method, func, coeffs
        self.rtol, self.atol, self.t_dtype, self.device, self.perturb = rtol, atol, t_dtype, device, perturb
        self.history: collections.deque = collections.deque(maxlen=method.max_order - 1)

    def step(self, t: float, dt: float, y: torch.Tensor, f0: torch.Tensor) -> tuple[Step, int]:
        """The step from (t, y) with f0 = f(t, y); returns it (``ks = [f0]``) and the evaluations it took."""
        self.history.appendleft(f0)
        order = min(len(self.history), self.method.max_order - 1)
        if order < MIN_ORDER - 1:
            times = stage_times(t, dt, self.coeffs, self.t_dtype, self.device)
            if self.perturb:
                times[-1] = self._t1(t + dt)          # the 3/8 rule's last stage is at c = 1
            start = rk_step(self.func, t, dt, y, f0, self.coeffs, times)
            return Step(start.y1, [f0], None, None), self.coeffs.tableau.stages - 1
        history = list(self.history)
        dy = _weighted_sum([dt * b for b in _BASHFORTH[order]], history[:order])
        evaluations = 0
        if self.method.implicit:
            dy, evaluations = self._correct(t + dt, dt, y, dy, history, order)
        return Step(y + dy, [f0], None, None), evaluations

    def _correct(self, t1: float, dt: float, y: torch.Tensor, dy: torch.Tensor, history: list, order: int):
        """Adams–Moulton by functional iteration from the predicted increment ``dy``."""
        moulton = _MOULTON[order]
        known = _weighted_sum([dt * m for m in moulton[1:]], history[:order])
        t_tensor = self._t1(t1)
        converged, iterations = False, 0
        while not converged and iterations < self.method.max_iters:
            f1 = self.func(t_tensor, y + dy)
            new = known.add(f1, alpha=dt * moulton[0])
            converged = self._converged(dy, new)
            dy, iterations = new, iterations + 1
        if not converged:
            warnings.warn("Functional iteration did not converge. Solution may be incorrect.")
            self.history.pop()
        return dy, iterations

    def _t1(self, t1: float) -> torch.Tensor:
        """The time of an evaluation at the step's end (just before it with ``perturb``)."""
        t = torch.tensor(t1, dtype=self.t_dtype, device=self.device)
        return torch.nextafter(t, torch.tensor(-torch.inf, dtype=self.t_dtype, device=self.device)) if self.perturb \
            else t

    def _converged(self, old: torch.Tensor, new: torch.Tensor) -> bool:
        """max |new − old| / (atol + rtol·max(|old|, |new|)) < 1 (one host read)."""
        with torch.no_grad():
            scale = torch.maximum(old.abs(), new.abs()) * self.rtol + self.atol
            return bool(((new - old).abs() / scale).max() < 1)


__all__ = ["Adams", "AdamsStepper", "adams_coefficients", "IMPLICIT"]
