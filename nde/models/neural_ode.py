"""Neural ODE layer (Chen et al. 2018, eq. 1): y(t1) = y(t0) + int_{t0}^{t1} f_theta(t, y) dt,
optionally augmented with zero channels (Dupont et al. 2019, "Augmented Neural ODEs", eq. 4)."""
from __future__ import annotations

import inspect

import torch
from torch import nn

import nde
from nde._checks import flag, positive_int
from nde.interpolation.missing import cast_times


class _Autonomous(nn.Module):
    """Adapts ``f(y)`` to the solver's ``f(t, y)`` signature."""

    def __init__(self, vector_field: nn.Module):
        super().__init__()
        self.vector_field = vector_field

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.vector_field(y)


def as_time_tensor(t, like: torch.Tensor, name: str = "t", per_sample: bool = False,
                   increasing: bool = False) -> torch.Tensor:
    """``t`` (sequence or tensor) on ``like``'s device and dtype, checked: ``(T,)`` with ``T >= 2``,
    or with ``per_sample`` also ``(batch, T)``, a grid per sample; with ``increasing`` also strictly
    increasing. A cast that changes the gaps between the times raises (see :func:`cast_times`)."""
    t = cast_times(t, like, name)
    grid_ok = per_sample and t.ndim == 2 and t.shape[0] == like.shape[0]
    if (t.ndim != 1 and not grid_ok) or t.shape[-1] < 2:
        shapes = "(T,) or (batch, T)" if per_sample else "(T,)"
        raise ValueError(f"{name} must have shape {shapes} with T >= 2, got {tuple(t.shape)}")
    if increasing and not bool((t.diff(dim=-1) > 0).all()):
        raise ValueError(f"{name} must be finite and strictly increasing")
    return t


def check_count(n, name: str) -> None:
    """Raise a ``TypeError`` naming ``name`` if ``n`` is not an int, a ``ValueError`` if it is not positive."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"{name} must be a positive int, got {n!r}")
    positive_int(n, name)


def check_sizes(**sizes) -> None:
    """A ``ValueError`` naming the first keyword that is not a positive integer: a model's layer sizes, named
    as in its constructor."""
    for name, n in sizes.items():
        positive_int(n, name)


def check_series(x, name: str, channels: int) -> None:
    """A time series ``(batch, T, channels)``: a floating-point tensor with at least one sample and the model's
    ``channels``; else a ``TypeError`` (not a floating-point tensor) or ``ValueError`` naming ``name``."""
    expected = f"(batch, T, channels={channels})"
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"{name} must be a floating-point tensor of shape {expected}, got {got}")
    if x.ndim != 3 or x.shape[0] == 0 or x.shape[-1] != channels:
        raise ValueError(f"{name} must have shape {expected} with batch >= 1, got {tuple(x.shape)}")


def check_solver_options(options: dict) -> None:
    """Raise a ``TypeError`` at construction for a keyword :func:`nde.solve_ode` does not take
    (e.g. ``methd=``), rather than at the first call."""
    parameters = inspect.signature(nde.solve_ode).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    accepted = {name for name, p in parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise TypeError(f"unknown solver option(s) {unknown}; nde.solve_ode takes {sorted(accepted)}")


def _default_times(t) -> tuple[float, ...]:
    """The constructor's ``t`` as a tuple of at least two floats."""
    if t is None or isinstance(t, (int, float, str)) or (isinstance(t, torch.Tensor) and t.ndim != 1):
        raise ValueError(f"t must be a sequence of at least 2 times, got {t!r}")
    times = tuple(float(s) for s in t)
    if len(times) < 2:
        raise ValueError(f"t must be a sequence of at least 2 times, got {t!r}")
    return times


class NeuralODE(nn.Module):
    """A neural ODE usable as a layer.

    Args:
        vector_field: ``nn.Module`` computing ``f(t, y)`` (or ``f(y)`` if ``autonomous``), mapping
            a state of shape ``(batch, *state)`` to the same shape.
        autonomous: whether ``vector_field`` takes only the state.
        augment_dim: number of zero channels appended to the last dimension of ``y0`` (ANODE).
        t: default integration times (used when ``forward`` gets none); default ``(0, 1)``.
        regularize: a solver-heuristic regulariser from :mod:`nde.regularize`, applied in training
            mode only; after each training-mode call its differentiable value is in
            ``self.regularization`` (add ``λ·model.regularization`` to the loss). In eval mode the
            solve is unregularised and ``self.regularization`` is None.
        **solver_options: passed to :func:`nde.solve_ode` on every call (``method``, ``rtol``,
            ``atol``, ``adjoint="direct"|"backsolve"|"discrete"``, ``per_sample``, ...); the
            core's defaults apply to anything not given; a keyword the core does not take raises
            ``TypeError`` here.

    ``forward(y0)`` returns the state at the last time, ``(batch, *state)`` (with the augmented
    channels); ``forward(y0, t)`` returns the trajectory batch-first, ``(batch, len(t), *state)``.
    Keyword arguments of ``forward`` / ``solve`` override ``solver_options`` for that call, so
    options added to the core later (e.g. ``regularize=``) pass straight through.
    """

    def __init__(self, vector_field: nn.Module, *, autonomous: bool = False, augment_dim: int = 0,
                 t=(0.0, 1.0), regularize=None, **solver_options):
        super().__init__()
        if not isinstance(vector_field, nn.Module):
            raise TypeError(f"vector_field must be an nn.Module, got {type(vector_field)}")
        flag(autonomous, "autonomous")
        if not isinstance(augment_dim, int) or isinstance(augment_dim, bool) or augment_dim < 0:
            raise ValueError(f"augment_dim must be a non-negative int, got {augment_dim!r}")
        check_solver_options(solver_options)
        self.vector_field = vector_field
        self.func = _Autonomous(vector_field) if autonomous else vector_field
        self.augment_dim = augment_dim
        self.default_t = _default_times(t)
        self.solver_options = solver_options
        self.regularize = regularize
        self.regularization = None

    def _initial_state(self, y0: torch.Tensor) -> torch.Tensor:
        if not isinstance(y0, torch.Tensor) or not y0.is_floating_point():
            raise TypeError(f"y0 must be a floating-point tensor of shape (batch, *state), got {type(y0)}")
        if self.augment_dim == 0:
            return y0
        if y0.ndim == 0:
            raise ValueError(f"y0 must have a last dimension for augment_dim={self.augment_dim} zero channels, "
                             "got a 0-d tensor")
        return torch.cat([y0, y0.new_zeros(*y0.shape[:-1], self.augment_dim)], dim=-1)

    def solve(self, y0: torch.Tensor, t=None, **solver_kwargs):
        """The core's Solution (``.ys`` time-first ``(len(t), batch, *state)``, ``.stats``)."""
        y0 = self._initial_state(y0)
        options = {**self.solver_options, **solver_kwargs}
        if self.training and self.regularize is not None:
            options.setdefault("regularize", self.regularize)
        t = as_time_tensor(self.default_t if t is None else t, y0, per_sample=options.get("per_sample", False))
        sol = nde.solve_ode(self.func, y0, t, **options)
        self.regularization = sol.regularization
        return sol

    def forward(self, y0: torch.Tensor, t=None, **solver_kwargs) -> torch.Tensor:
        ys = self.solve(y0, t, **solver_kwargs).ys
        return ys[-1] if t is None else ys.movedim(0, 1)
