"""Solver-heuristic regularisation of SDE solves: ERNSDE, SRNSDE and local regularisation.

The regularisers are those of :mod:`nde.regularize`; this module computes their values from the SDE
core's adaptive loop (Pal, Ma, Shah & Rackauckas, ICML 2021, §"Neural SDEs": the same per-step terms
as for ODEs, read from the SDE solver; Pal, Edelman & Rackauckas, ICML 2023, §4: one live step of the
main SDE solver at a sampled time).

The error estimate of an SDE step is the adaptive loop's step-doubling ratio

    EEst = rms((y_h − y_{h/2,h/2}) / (atol + rtol·max(|y_h|, |y_{h/2,h/2}|)))

(one step of ``h`` against two of ``h/2`` on the same Brownian path). For a method of strong order
``p`` it scales as ``h^k`` with ``k = p + 1/2``, the controller's exponent, so :class:`StepDensity`'s
term is ``EEst^(1/k)``.

Global regularisers (``adaptive=True``, ``gradient="direct"``), per accepted step ``j``:

* :class:`~nde.regularize.ErrorEstimate`: ``EEst_j·dt_j`` (ERNSDE), reduced by sum / mean / max.
* :class:`~nde.regularize.StiffnessEstimate`: ``ρ_j·dt_j/S`` or ``|ρ_j|/S``, with ``S`` the real stability
  interval of the method's drift part and ``ρ_j`` a secant estimate of the drift's Lipschitz constant
  along the accepted step, ``ρ_j = ‖f(t_{j+1}, y_{j+1}) − f(t_j, y_j)‖ / ‖y_{j+1} − y_j‖`` (RMS norms
  over the whole batch). The stepping methods do not expose their drift evaluations, so this costs
  one extra drift evaluation per accepted step (``f(t_{j+1}, y_{j+1})`` is reused by step ``j + 1``),
  counted in ``stats["nfe_regularization"]``.
* :class:`~nde.regularize.StepDensity`: ``EEst_j^(1/k)``, the steps an ideal controller would need.

Local regularisation (:class:`~nde.regularize.LocalErrorEstimate`; any gradient mode, fixed or
adaptive steps): at each sampled time ``t_r`` the state is the solve's own output formula there (linear
interpolation between the two nodes around ``t_r``, exact at a node), detached; from it one live
step-doubling step of the solve's method on the same Brownian path gives ``EEst·h`` (or the density
``(t1 − t0)·EEst^(1/k)/h``). Its gradient reaches the parameters only through that step, whatever
gradient mode the main solve uses.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from .._integrate import rms_norm, step_index
from ..regularize import GlobalRegularizer, LocalErrorEstimate, StiffnessEstimate
from .integrate import Grid, doubling_step


@dataclass(frozen=True)
class MethodFacts:
    """What a :class:`~nde.regularize.GlobalRegularizer` reads from a solver, for an SDE method.

    ``error_order``: ``k − 1`` where the step-doubling error scales as ``h^k``, ``k = p + 1/2``;
    ``stability_size``: real stability interval of the drift part (``None``: empty)."""
    name: str
    error_order: float
    stability_size: float | None


def _method_facts(method, noise_type: str) -> MethodFacts:
    return MethodFacts(method.name, method.strong_order(noise_type) - 0.5, method.stability_size(noise_type))


def _split_regularizer(regularize, method, noise_type: str, adaptive: bool, gradient: str):
    """Sort ``regularize`` into (global, local) and check that it fits the solve."""
    if regularize is None:
        return None, None
    if isinstance(regularize, GlobalRegularizer):
        if not adaptive:
            raise ValueError("`regularize`: global regularisers read the adaptive loop's error estimates; "
                             "use adaptive=True, or nde.regularize.LocalErrorEstimate for fixed steps")
        if gradient != "direct":
            raise ValueError(f"`regularize`: global regularisers need gradient='direct' (got {gradient!r}): "
                             "the adjoint modes do not differentiate the error estimates; use "
                             "nde.regularize.LocalErrorEstimate")
        if isinstance(regularize, StiffnessEstimate) and method.stability_size(noise_type) is None:
            raise ValueError(f"`regularize`: StiffnessEstimate needs a method with a real stability interval; "
                             f"method {method.name!r} has none")
        return regularize, None
    if isinstance(regularize, LocalErrorEstimate):
        if regularize.method not in (None, "tsit5"):
            raise ValueError("`regularize.method`: on an SDE solve the live step is one step of the solve's own "
                             f"method (the 2023 paper's SDE scheme); pass method=None, got {regularize.method!r}")
        return None, regularize
    raise TypeError("`regularize` for an SDE solve must be an ErrorEstimate, StiffnessEstimate, StepDensity or "
                    f"LocalErrorEstimate from nde.regularize, got {type(regularize).__name__}")


def regularization_hook(regularize, sde, method, bm, rtol: float, atol: float, dt: float, adaptive: bool,
                        gradient: str, rng: random.Random):
    """The object that computes ``regularize`` on this solve (``None`` without a regulariser):
    ``run_adaptive``'s accept hook, ``plan_fixed(grid)`` before a fixed-step solve (local regularisers
    only: global ones are refused there), and ``value(like)`` after the solve."""
    global_reg, local_reg = _split_regularizer(regularize, method, sde.noise_type, adaptive, gradient)
    if global_reg is not None:
        return GlobalTerms(global_reg, sde, _method_facts(method, sde.noise_type))
    if local_reg is not None:
        return LocalTerms(local_reg, sde, method, bm, rtol, atol, dt, rng)
    return None


class GlobalTerms:
    """``run_adaptive``'s accept hook for a global regulariser: one differentiable term per accepted step."""

    def __init__(self, reg: GlobalRegularizer, sde, facts: MethodFacts):
        self.reg, self.sde, self.facts = reg, sde, facts
        self.terms: list[torch.Tensor] = []
        self.extra_evals = 0
        self._drift_end = None   # (time, f(time, y)) at the end of the previous accepted step

    def __call__(self, t: float, h: float, y: torch.Tensor, y_next: torch.Tensor, ratio: torch.Tensor):
        rho = self._secant_stiffness(t, h, y, y_next) if self.reg.needs_stiffness else None
        self.terms.append(self.reg.term(ratio, h, rho, self.facts))

    def _secant_stiffness(self, t, h, y, y_next) -> torch.Tensor:
        """``‖f(t + h, y_next) − f(t, y)‖ / ‖y_next − y‖`` (RMS norms), one new drift evaluation."""
        if self._drift_end is not None and self._drift_end[0] == t:
            f0 = self._drift_end[1]
        else:
            f0 = self.sde.f(torch.full((), t, dtype=y.dtype, device=y.device), y)
            self.extra_evals += 1
        f1 = self.sde.f(torch.full((), t + h, dtype=y.dtype, device=y.device), y_next)
        self.extra_evals += 1
        self._drift_end = (t + h, f1)
        return rms_norm(f1 - f0) / rms_norm(y_next - y).clamp_min(torch.finfo(y.dtype).tiny)

    def value(self, like: torch.Tensor) -> torch.Tensor:
        return self.reg.reduce(torch.stack(self.terms)) if self.terms else like.new_zeros(())


@dataclass
class _Sample:
    """A sampled time, its importance weight, the step ``j`` around it and that step's size."""
    time: float
    weight: float
    step: int
    solver_dt: float


@dataclass
class LocalTerms:
    """Local regularisation of one SDE solve (see the module docstring).

    Adaptive solves: :meth:`__call__` is the accept hook recording detached step states, times are
    sampled after the solve. Fixed solves: :meth:`plan_fixed` samples before the solve and asks the grid
    for the two nodes around each time."""
    reg: LocalErrorEstimate
    sde: object
    method: object
    bm: object
    rtol: float
    atol: float
    dt: float
    rng: random.Random
    starts: list = field(default_factory=list)
    steps: list = field(default_factory=list)
    states: dict = field(default_factory=dict)
    samples: list = field(default_factory=list)
    extra_evals: int = 0

    def __call__(self, t, h, y, y_next, ratio):
        j = len(self.starts)
        self.starts.append(t)
        self.steps.append(h)
        self.states[j], self.states[j + 1] = y.detach(), y_next.detach()

    def plan_fixed(self, grid: Grid) -> None:
        """Sample before a fixed-step solve; the grid keeps the nodes around every sample."""
        self.starts, self.steps = grid.times[:-1], [b - a for a, b in zip(grid.times[:-1], grid.times[1:])]
        self._sample()
        grid.keep = {k: None for s in self.samples for k in (s.step, s.step + 1)}
        self.states = grid.keep

    def value(self, like: torch.Tensor) -> torch.Tensor:
        """The regulariser: mean over samples of ``weight·q(t_r)`` (0-d, differentiable in the parameters)."""
        if not self.samples:
            self._sample()
        if not self.samples:   # a single output time: nothing was integrated
            return like.new_zeros(())
        total = None
        span = self.starts[-1] + self.steps[-1] - self.starts[0]
        for s in self.samples:
            term = s.weight * self._quantity(s, span)
            total = term if total is None else total + term
        return total / len(self.samples)

    def _sample(self) -> None:
        if not self.starts:
            return
        t0, t1 = self.starts[0], self.starts[-1] + self.steps[-1]
        for t_r, weight in self.reg.sample_times(t0, t1, self.starts, self.steps, self.rng):
            j = step_index(self.starts, t_r)
            self.samples.append(_Sample(t_r, weight, j, self.steps[j]))

    def _quantity(self, s: _Sample, span: float) -> torch.Tensor:
        theta = min(max((s.time - self.starts[s.step]) / s.solver_dt, 0.0), 1.0)
        y_a, y_b = self.states[s.step], self.states[s.step + 1]
        y_r = y_a if theta == 0.0 else (1 - theta) * y_a + theta * y_b
        t_end = self.starts[-1] + self.steps[-1]
        h = min(s.solver_dt if self.reg.step == "solver" else self.dt, t_end - s.time)
        if h <= 1e-9 * span:    # a time sampled at the very end: no room for a step
            return y_r.new_zeros(())
        extra = self.method.init(self.sde, torch.full((), s.time, dtype=y_r.dtype, device=y_r.device), y_r)
        y_full, y_two, _ = doubling_step(self.method, self.sde, s.time, s.time + 0.5 * h, s.time + h, y_r,
                                         extra, self.bm)
        self.extra_evals += 3 * self.method.evals_per_step + self.method.init_evals   # init: from y_r afresh
        scale = torch.maximum(y_full.abs(), y_two.abs()).mul(self.rtol).add(self.atol)
        k = self.method.strong_order(self.sde.noise_type) + 0.5
        return self.reg.local_value((y_full - y_two) / scale, h, span, k)


__all__ = ["MethodFacts", "regularization_hook", "GlobalTerms", "LocalTerms"]
