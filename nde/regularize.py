"""Solver-heuristic regularisation: make learned dynamics cheap to solve.

The solver already computes, at every step, a scaled local error estimate EEst (accept iff EEst ≤ 1)
and a dominant-eigenvalue estimate ρ. Regularising them steers training towards dynamics that need
fewer steps (Pal, Ma, Shah & Rackauckas, ICML 2021, "Opening the Blackbox"; Pal, Edelman & Rackauckas,
ICML 2023, "Locally Regularized Neural Differential Equations"). None of these needs higher-order
autodiff: the gradient flows through the stages the solver evaluated anyway.

Global regularisers (a term per accepted step; ``adjoint="direct"`` or ``"discrete"``):

* :class:`ErrorEstimate` — ERNODE, ``R_E = Σ_j EEst_j·|dt_j|`` (2021, eq. 6), or its mean (released code).
* :class:`StiffnessEstimate` — SRNODE, ``Σ_j ρ_j·|dt_j|/S`` (step-size-aware, S the method's stability
  size) or ``max_j |ρ_j|/S`` (released code).
* :class:`StepDensity` — nde: ``Σ_j EEst_j^(1/k)`` with ``k`` the error order + 1. Since the optimal step
  is ``h* = h·EEst^(−1/k)``, each term is ``h/h*``, and the sum predicts the number of steps an ideal
  controller would take: a step-size-invariant cost proxy.

Local regularisers (any gradient mode; one live step from a detached state at sampled times):

* :class:`LocalErrorEstimate` — 2023 paper: ``EEst(t_r)·dt(t_r)``, ``t_r ~ U[t0, t1]`` ("unbiased") or
  uniform over accepted step starts ("biased"), ``dt`` from Hairer's initial-step rule at t_r as in the
  paper, or the step the solver actually took there (``step="solver"``, free). nde adds
  ``quantity="density"`` (the local step density ``EEst^(1/k)/h`` whose time integral estimates the
  number of steps, so the estimator is unbiased for it), importance-weighted multi-sample estimates
  (``sampling="mixture"``, ``n_samples``), and per-sample error norms (``norm="per_sample"``).

Baselines, in the same code: :class:`RNODE` (Finlay et al. 2020: kinetic energy and a Hutchinson
estimate of the Jacobian's Frobenius norm, integrated as extra states) and :func:`steer_end_time`
(STEER, Ghosh et al. 2020). :class:`AdaptiveCoefficient` replaces a hand-annealed λ by dual ascent on a
target NFE.
"""
from __future__ import annotations

import math
import numbers
import random
from dataclasses import dataclass

import torch

from ._checks import check_generator
from ._integrate import rms_norm, rms_rows, step_index
from .tableaus import ButcherTableau, get_tableau

_REDUCTIONS = ("sum", "mean", "max")


def _check_choice(name: str, value, choices):
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {choices}, got {value!r}")


class GlobalRegularizer:
    """A differentiable term per accepted step, reduced over the steps of a solve.

    ``term(ratio, dt, rho, tab)`` reads ``tab.name``, ``tab.error_order`` and ``tab.stability_size``:
    a :class:`~nde.tableaus.ButcherTableau` on ODE solves, :class:`nde.sde.regularize.MethodFacts` on
    SDE solves."""

    needs_stiffness = False
    reduction = "sum"

    def term(self, ratio: torch.Tensor, dt: float, rho: torch.Tensor | None, tab: ButcherTableau) -> torch.Tensor:
        raise NotImplementedError

    def reduce(self, terms: torch.Tensor) -> torch.Tensor:
        """``terms``: (steps,) -> scalar."""
        if terms.numel() == 0:
            return terms.sum()
        if self.reduction == "sum":
            return terms.sum()
        if self.reduction == "mean":
            return terms.mean()
        return terms.max()


@dataclass
class ErrorEstimate(GlobalRegularizer):
    """ERNODE: ``Σ_j EEst_j·|dt_j|`` over accepted steps (``reduction="sum"``, the paper's eq. 6) or the
    mean over steps (``"mean"``, what the 2021 experiments trained with)."""

    reduction: str = "sum"

    def __post_init__(self):
        _check_choice("reduction", self.reduction, _REDUCTIONS)

    def term(self, ratio, dt, rho, tab):
        return ratio * abs(dt)


@dataclass
class StiffnessEstimate(GlobalRegularizer):
    """SRNODE: ``form="dt"`` gives ``ρ_j·|dt_j|/S`` per step (what the step-size controller reacts to;
    stiffness detection fires near 0.9); ``form="abs"`` gives ``|ρ_j|/S`` (the 2021 code, with
    ``reduction="max"``). ``S`` is the method's real stability size."""

    form: str = "dt"
    reduction: str = "sum"
    needs_stiffness = True

    def __post_init__(self):
        _check_choice("form", self.form, ("dt", "abs"))
        _check_choice("reduction", self.reduction, _REDUCTIONS)

    def term(self, ratio, dt, rho, tab):
        if rho is None:
            raise ValueError(f"method {tab.name!r} gives no stiffness estimate")
        scale = abs(dt) if self.form == "dt" else 1.0
        return rho * scale / tab.stability_size


@dataclass
class StepDensity(GlobalRegularizer):
    """nde's step-size-invariant cost proxy: ``Σ_j EEst_j^(1/k)``, the number of steps an ideal
    controller would need for the same trajectory (``k`` = error order + 1)."""

    reduction: str = "sum"

    def __post_init__(self):
        _check_choice("reduction", self.reduction, _REDUCTIONS)

    def term(self, ratio, dt, rho, tab):
        return ratio.clamp_min(1e-12) ** (1.0 / (tab.error_order + 1))


@dataclass
class LocalErrorEstimate:
    """Local regularisation at sampled times (Pal, Edelman & Rackauckas 2023, Alg. 1–2), extended.

    Args:
        sampling: ``"unbiased"`` (t_r ~ U[t0, t1]), ``"biased"`` (uniform over accepted step starts), or
            ``"mixture"`` (½ uniform + ½ step-start density, importance-weighted; nde).
        n_samples: number of sampled times per solve (the paper uses 1).
        quantity: ``"error"`` — ``EEst·dt`` at t_r (the paper); ``"density"`` — ``(t1−t0)·EEst^(1/k)/dt``,
            an unbiased estimate (under uniform or importance-weighted sampling) of the number of steps.
        step: ``"heuristic"`` — Hairer's initial step at (t_r, y(t_r)) as in the paper (2 extra
            evaluations); ``"solver"`` — the step the solver accepted at t_r (free). Either is cut at t1, as a
            fresh integrator's first step on (t_r, t1) is.
        method: the method of the live step; the paper always uses ``"tsit5"``; ``None``: the solve's.
        norm: ``"batch"`` — the solver's error norm of the whole state, EEst as the solve measures it (the
            paper): an RMS, for a tuple state the largest RMS of its tensors (torchdiffeq's mixed norm);
            ``"per_sample"`` — the mean of per-row error norms (rows = dim 0; of a tuple state, row i of every
            tensor), so every example pays for its own difficulty.
    """

    sampling: str = "unbiased"
    n_samples: int = 1
    quantity: str = "error"
    step: str = "heuristic"
    method: str | None = "tsit5"
    norm: str = "batch"

    def __post_init__(self):
        _check_choice("sampling", self.sampling, ("unbiased", "biased", "mixture"))
        _check_choice("quantity", self.quantity, ("error", "density"))
        _check_choice("step", self.step, ("heuristic", "solver"))
        _check_choice("norm", self.norm, ("batch", "per_sample"))
        if isinstance(self.n_samples, bool) or not isinstance(self.n_samples, int) or self.n_samples < 1:
            raise ValueError("`n_samples` must be a positive integer")
        if self.method is not None and not get_tableau(self.method).adaptive:
            raise ValueError(f"`method` {self.method!r} has no embedded error estimate; use an adaptive method "
                             "(e.g. 'tsit5') or None (the solve's)")

    def local_value(self, scaled: torch.Tensor, h: float, span: float, k: float, norm=rms_norm) -> torch.Tensor:
        """The sampled quantity from one live step of size ``h``: ``scaled`` is its error divided by the
        tolerance scale (rows = dim 0), ``k`` the exponent of EEst in h, ``span = t1 − t0``, ``norm`` the solve's
        error norm (tensor -> 0-d tensor) for ``norm="batch"``. Returns ``EEst·h`` or ``span·EEst^(1/k)/h``,
        averaged over rows for per-sample norms (0-d)."""
        eest = norm(scaled) if self.norm == "batch" else rms_rows(scaled.reshape(scaled.shape[0], -1))
        if self.quantity == "error":
            return (eest * h).mean()
        return (span * eest.clamp_min(1e-12) ** (1.0 / k) / h).mean()

    def sample_times(self, t0: float, t1: float, starts: list[float], dts: list[float],
                     rng: random.Random) -> list[tuple[float, float]]:
        """(time, importance weight) pairs; weights make ``mean(weight·q(t))`` estimate ``∫q dt/(t1−t0)``."""
        out = []
        span = t1 - t0
        for _ in range(self.n_samples):
            if self.sampling == "unbiased" or not starts:
                out.append((t0 + rng.random() * span, 1.0))
            elif self.sampling == "biased":
                out.append((rng.choice(starts), 1.0))
            else:
                if rng.random() < 0.5:
                    tr = t0 + rng.random() * span
                else:
                    j = rng.randrange(len(starts))
                    tr = starts[j] + rng.random() * dts[j]
                j = step_index(starts, tr)
                density = 0.5 / span + 0.5 / (len(starts) * dts[j])     # p(t_r)
                out.append((tr, (1.0 / span) / density))
        return out


@dataclass
class RNODE:
    """Finlay et al. (2020): ``λ_K·∫‖f‖² dt + λ_J·∫‖εᵀ∂f/∂y‖² dt`` with Rademacher ε (Hutchinson
    estimate of the Jacobian's squared Frobenius norm), integrated as two extra states per row of the last
    dimension, summed over each sample's state and averaged over the batch (dim 0). Needs double backward for
    training."""

    kinetic: float = 1.0
    jacobian: float = 1.0

    def __post_init__(self):
        for name in ("kinetic", "jacobian"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ValueError(f"`{name}` must be a finite non-negative number, got {value!r}")

    def augment(self, func, dim: int, like: torch.Tensor):
        eps = torch.randint(0, 2, like.shape, device=like.device).to(like.dtype) * 2 - 1

        def augmented(t, z):
            y = z[..., :dim]
            track = torch.is_grad_enabled() and y.requires_grad   # else (an adjoint's no-grad replay): a fresh leaf
            with torch.enable_grad():
                y_ = y if track else y.detach().requires_grad_(True)
                f = func(t, y_)
                (vjp,) = torch.autograd.grad(f, y_, eps, create_graph=track or torch.is_grad_enabled(),
                                             allow_unused=True)
            if vjp is None:   # f does not depend on y: a zero Jacobian
                vjp = torch.zeros_like(y_)
            kin = (f * f).sum(-1, keepdim=True)
            jac = (vjp * vjp).sum(-1, keepdim=True)
            return torch.cat([f, kin, jac], dim=-1)

        return augmented

    def value(self, final: torch.Tensor) -> torch.Tensor:
        """``final``: (batch, ..., 2) integrated (kinetic, Jacobian) terms of every last-dimension row -> scalar:
        summed over a sample's rows (its ‖f‖² and ‖εᵀ∂f/∂y‖² over its whole state), averaged over the batch."""
        rows = final.reshape(-1, 2) if final.dim() <= 2 else final.reshape(final.shape[0], -1, 2).sum(1)
        return self.kinetic * rows[:, 0].mean() + self.jacobian * rows[:, 1].mean()


def steer_end_time(t: torch.Tensor, b: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """STEER (Ghosh et al. 2020): the final output time drawn from U[t1 − b, t1 + b] (training only).

    ``t``: output times ``(T,)``, increasing or decreasing, floating point."""
    if not torch.is_tensor(t) or t.dim() != 1 or t.numel() < 2 or not t.is_floating_point():
        raise ValueError("`t` must be a 1-d floating-point tensor of at least two output times")
    check_generator(generator)
    if not 0 <= b < abs(float(t[-1] - t[-2])):
        raise ValueError("`b` must be non-negative and smaller than the last output interval")
    u = torch.rand((), generator=generator).item()
    out = t.clone()
    out[-1] = t[-1] + (2 * u - 1) * b
    return out


@dataclass
class AdaptiveCoefficient:
    """λ by dual ascent on a target cost instead of a hand-annealed schedule:
    ``λ ← clip(λ·exp(rate·(nfe/target − 1)), lo, hi)`` after every training step."""

    target_nfe: float
    value: float = 1.0
    rate: float = 0.1
    lo: float = 1e-4
    hi: float = 1e4

    def __post_init__(self):
        for name in ("target_nfe", "value", "rate", "lo", "hi"):
            number = getattr(self, name)
            if isinstance(number, bool) or not isinstance(number, (int, float)) or not 0 < number < math.inf:
                raise ValueError(f"`{name}` must be a finite positive number, got {number!r}")
        if not self.lo <= self.value <= self.hi:
            raise ValueError(f"need lo <= value <= hi, got lo={self.lo}, value={self.value}, hi={self.hi}")

    def update(self, nfe) -> float:
        """One dual-ascent step with the evaluations of the latest training step: a number, or a one-element tensor
        such as a shared solve's ``sol.stats["nfe"]`` (per sample, pass their sum or mean)."""
        if torch.is_tensor(nfe) and nfe.numel() == 1 and nfe.dtype != torch.bool:
            nfe = nfe.item()
        if isinstance(nfe, bool) or not isinstance(nfe, numbers.Real) or not 0 <= nfe < math.inf:
            raise ValueError(f"`nfe` must be a finite non-negative number or one-element tensor, got {nfe!r}")
        self.value = min(self.hi, max(self.lo, self.value * math.exp(self.rate * (nfe / self.target_nfe - 1))))
        return self.value


__all__ = ["ErrorEstimate", "StiffnessEstimate", "StepDensity", "LocalErrorEstimate", "RNODE",
           "steer_end_time", "AdaptiveCoefficient", "GlobalRegularizer"]
