"""Public ODE API: ``solve_ode`` (nde's own) and ``odeint`` / ``odeint_adjoint`` (torchdiffeq 0.2.5 drop-in)."""
from __future__ import annotations

import math
import random
import warnings
import weakref
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ._adams import Adams
from ._checks import check_resolvable_tolerances, number, positive_int
from ._integrate import (Config, Result, _land_stage_times, output_value, rms_norm, rms_norm_host, rms_rows,
                         step_index)
from ._rk import Coefficients, rk_step, stage_times
from ._scipy import scipy_odeint
from .controller import initial_step_scalar
from .regularize import RNODE, GlobalRegularizer, LocalErrorEstimate
from .adjoint import AdjointConfig, BacksolveAdjoint, DiscreteAdjoint, Problem, default_adjoint_cfg
from .controller import IController, PIController
from .errors import Status
from .events import Event, RowEvent, event_gradient, event_time_gradient
from .solution import Solution
from .tableaus import MULTISTEP, get_tableau

GRADIENT_MODES = ("direct", "backsolve", "discrete")
_ADAPTIVE_OPTIONS = {"first_step", "max_num_steps", "min_step", "max_step", "safety", "ifactor", "dfactor", "norm",
                     "step_t", "jump_t", "dtype"}
_FIXED_OPTIONS = {"step_size", "grid_constructor", "interp", "max_num_steps", "perturb"}
_ADAMS_OPTIONS = {"max_order", "max_iters"}
DEFAULT_MAX_STEPS = 1_000_000
# odeint follows torchdiffeq's names where nde's differ: torchdiffeq's "heun2" is fixed-step Heun
# (nde's "heun"), its "rk4" Kutta's 3/8 rule (nde's "rk4_38").
TORCHDIFFEQ_NAMES = {"heun2": "heun", "rk4": "rk4_38"}
_TORCHDIFFEQ_CONTROLLER = IController()   # frozen: one instance serves every odeint call


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------

def _check_state(y0) -> tuple[torch.Tensor, ...]:
    tensors = y0 if isinstance(y0, tuple) else (y0,)
    if isinstance(y0, list):
        raise TypeError("`y0` must be a tensor or a tuple of tensors, got a list")
    if not tensors:
        raise ValueError("`y0` is an empty tuple")
    for i, y in enumerate(tensors):
        name = "y0" if not isinstance(y0, tuple) else f"y0[{i}]"
        if not torch.is_tensor(y):
            raise TypeError(f"`{name}` must be a torch.Tensor, got {type(y).__name__}")
        if not torch.is_floating_point(y):
            raise TypeError(f"`{name}` must have a floating-point dtype, got {y.dtype}")
        if y.numel() == 0:
            raise ValueError(f"`{name}` is empty")
        if not _all_finite(y):
            raise ValueError(f"`{name}` contains non-finite values (NaN or inf)")
    if len({y.dtype for y in tensors}) > 1 or len({y.device for y in tensors}) > 1:
        raise TypeError("all tensors of a tuple `y0` must share dtype and device")
    return tensors


def _all_finite(y: torch.Tensor) -> bool:
    """Whether every element is finite: a finite sum proves it (NaN and inf propagate) in one reduction; only a
    non-finite sum (a non-finite element, or finite ones overflowing) needs the elementwise check."""
    return math.isfinite(float(y.detach().sum())) or bool(torch.isfinite(y).all())


def _check_times(t, per_sample: bool, batch: int | None) -> tuple[torch.Tensor, list[float] | None]:
    """Validate the output times; returns ``t`` and, for a (T,) grid, its values on the host (read once: the
    callers take the direction and the shared-step output times from them), else None."""
    if not torch.is_tensor(t):
        raise TypeError(f"`t` must be a torch.Tensor, got {type(t).__name__}")
    if not torch.is_floating_point(t):
        raise TypeError(f"`t` must have a floating-point dtype, got {t.dtype}")
    if per_sample and t.dim() == 2:
        if t.shape[0] != batch:
            raise ValueError(f"`t` of shape {tuple(t.shape)} must be (batch={batch}, T) in per-sample mode")
    elif t.dim() != 1:
        raise ValueError(f"`t` must be one-dimensional (T,), got shape {tuple(t.shape)}"
                         + (" ((batch, T) is allowed with per_sample=True)" if t.dim() == 2 else ""))
    if t.shape[-1] < 1:
        raise ValueError("`t` must contain at least one time")
    values = None
    if t.dim() == 1:   # one transfer to the host, then Python checks (a (T,) grid is small)
        values = t.detach().tolist()
        finite = all(math.isfinite(v) for v in values)
        steps = [b - a for a, b in zip(values[:-1], values[1:])]
        increasing, decreasing = all(d > 0 for d in steps), all(d < 0 for d in steps)
    else:
        finite = bool(torch.isfinite(t).all())
        d = t[..., 1:] - t[..., :-1]
        increasing, decreasing = bool((d > 0).all()), bool((d < 0).all())
        if not (increasing or decreasing) and bool(((d > 0).all(-1) | (d < 0).all(-1)).all()):
            raise ValueError("`t`: every row is monotonic, but all samples must integrate in the same direction")
    if not finite:
        raise ValueError("`t` contains non-finite values")
    if not (increasing or decreasing):
        raise ValueError("`t` must be strictly increasing or strictly decreasing")
    return t, values


def _direction(t: torch.Tensor) -> float:
    """+1 for increasing output times, −1 for decreasing (the same for every sample)."""
    if t.shape[-1] < 2:
        return 1.0
    if t.dim() == 1:
        return _sign(t[:2].tolist())
    dec = t[..., 1] < t[..., 0]
    if bool(dec.any()) and not bool(dec.all()):
        raise ValueError("`t`: all samples must integrate in the same direction")
    return -1.0 if bool(dec.all()) else 1.0


def _sign(values: list[float]) -> float:
    """:func:`_direction` of a checked (T,) grid from its host values."""
    return -1.0 if len(values) > 1 and values[1] < values[0] else 1.0


def _tolerances(rtol, atol, y0, tensors: tuple[torch.Tensor, ...], per_sample: bool):
    """Checked ``rtol``, ``atol``: numbers or tensors, or for a tuple ``y0`` torchdiffeq's per-tensor tolerances (a
    tuple or list with one entry per tensor), which become one per-component tensor laid out like the flat state."""
    def one(name, tol):
        if isinstance(y0, tuple) and isinstance(tol, (tuple, list)):
            return _per_tensor_tolerance(name, tol, tensors, per_sample)
        tol = _check_tolerance(name, tol)
        if torch.is_tensor(tol):
            if len(tensors) > 1:
                raise ValueError(f"a per-component `{name}` tensor needs a single-tensor state; for a tuple `y0` "
                                 "give one tolerance per tensor (a tuple)")
            _check_tolerance_shape(name, tol, tensors[0].shape, per_sample)
        return tol
    return one("rtol", rtol), one("atol", atol)


def _per_tensor_tolerance(name: str, tol, tensors: tuple[torch.Tensor, ...], per_sample: bool) -> torch.Tensor:
    """A tuple state's tolerance given per tensor: each entry a number, or a tensor broadcastable to its tensor
    (per sample: to one row of it) or, as in torchdiffeq, one value per element, flat. Laid out as
    :meth:`_Layout.flatten` lays out the state: (numel,), per sample (row size,); a 1-tuple's, which the solver
    integrates in its own shape, shaped like that tensor."""
    if len(tol) != len(tensors):
        raise ValueError(f"`{name}` has {len(tol)} entries but the tuple `y0` has {len(tensors)} tensors")
    parts = []
    for i, (entry, x) in enumerate(zip(tol, tensors)):
        entry = torch.as_tensor(_check_tolerance(f"{name}[{i}]", entry), dtype=x.dtype, device=x.device)
        if not per_sample and x.dim() > 1 and entry.shape == (x.numel(),):   # torchdiffeq's flat form
            entry = entry.reshape(x.shape)
        _check_tolerance_shape(f"{name}[{i}]", entry, x.shape, per_sample)
        parts.append(entry.expand(x.shape[1:] if per_sample else x.shape))
    if len(parts) == 1 and not per_sample:
        return parts[0]
    return torch.cat([part.reshape(-1) for part in parts])


def _check_tolerance_shape(name: str, tol, shape: torch.Size, per_sample: bool) -> None:
    """A tolerance tensor must broadcast to the state's shape without enlarging it; in per-sample mode to
    one row (rows leave the working batch as they finish, so per-row tolerances cannot follow them)."""
    if not torch.is_tensor(tol):
        return
    target = shape[1:] if per_sample else shape
    try:
        fits = torch.broadcast_shapes(tol.shape, target) == target
    except RuntimeError:
        fits = False
    if not fits:
        where = f"one row {tuple(target)} (per-sample mode)" if per_sample else f"the state {tuple(shape)}"
        raise ValueError(f"`{name}` of shape {tuple(tol.shape)} does not broadcast to {where}")


def _all_zero(tolerance: float | torch.Tensor) -> bool:
    return bool((tolerance == 0).all()) if torch.is_tensor(tolerance) else tolerance == 0


def _check_tolerance(name: str, value) -> float | torch.Tensor:
    if torch.is_tensor(value):
        if bool((value < 0).any()) or not bool(torch.isfinite(value).all()):
            raise ValueError(f"`{name}` must be finite and non-negative")
        return value
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not (0 <= value < math.inf):
        raise ValueError(f"`{name}` must be a finite non-negative number or tensor, got {value!r}")
    return float(value)


def _check_step_budget(max_step: float, max_steps: int, t: torch.Tensor, t_values: list[float] | None,
                       per_output: bool = False) -> None:
    """A ``max_step`` too small to cover ``t`` in ``max_steps`` steps fails at once, not after those steps (which
    took minutes at max_step=1e-12); fixed grids are checked the same way before they are built. ``per_output``
    (odeint, a (T,) grid): ``max_steps`` counts the steps between output times, so the widest interval must fit."""
    if max_step == math.inf:
        return
    if per_output:
        span = max((abs(b - a) for a, b in zip(t_values[:-1], t_values[1:])), default=0.0)
    else:
        span = abs(t_values[-1] - t_values[0]) if t_values is not None else float((t[..., -1] - t[..., 0]).abs().max())
    if span / max_step > max_steps:
        raise ValueError(f"`max_step`={max_step:g} needs {span / max_step:.3g} steps to cover `t`, more than "
                         f"max_steps={max_steps}")


class _CheckedFunc:
    """Calls ``func`` on the internal state and checks its first output's type, shape and dtype."""

    def __init__(self, func: Callable, to_user: Callable, from_user: Callable, sign: float,
                 expected_shape, dtype, plain: bool):
        self.func, self.to_user, self.from_user, self.sign = func, to_user, from_user, sign
        self.expected_shape, self.dtype, self.checked = expected_shape, dtype, False
        self.fast = plain and sign > 0   # the user's state is the solver's: no reshaping, no sign flip
        self.t_dtype = torch.float64     # the dtype of the user's ``t``, set by the caller
        self.tuple_state = False         # the user's state is a tuple (set by the caller)
        self.per_sample = False          # rows are integrated on their own (set by the caller)

    def __call__(self, t, y):
        if t.dtype != self.t_dtype:
            t = t.to(self.t_dtype)
        if self.fast:
            out = self.func(t, y)
            if not self.checked:
                self._check(out, y.shape[0] if y.dim() else 0)
            return out
        out = self.func(-t if self.sign < 0 else t, self.to_user(y))
        if not self.checked:
            self._check(out, y.shape[0] if y.dim() else 0)
        out = self.from_user(out)
        return -out if self.sign < 0 else out

    def unwrapped(self, t_dtype: torch.dtype) -> Callable:
        """``func`` itself once its first output has passed the check, where calling it needs nothing else: the
        state is the user's, time increases and the solver's times (``t_dtype``) are in the dtype of the user's
        ``t``. Else this wrapper. (On small states the wrapper's calls are ~1% of a solve.)"""
        return self.func if self.checked and self.fast and t_dtype == self.t_dtype else self

    def rows_changed(self) -> None:
        """Per-sample mode: the working batch changed size, so check the next output's shape again (a
        field that mixes rows, e.g. through a closed-over (batch, 1) parameter, fails here, by name)."""
        self.checked = False

    def _check(self, out, rows: int):
        if isinstance(out, tuple) and not self.tuple_state:
            raise TypeError(f"`func` returned a tuple of {len(out)} tensor(s), but the state is one tensor")
        outs = out if isinstance(out, tuple) else (out,)
        expected = self.expected_shape
        if len(outs) != len(expected):
            raise TypeError(f"`func` returned {len(outs)} tensor(s) but the state has {len(expected)}")
        for o, shape in zip(outs, expected):
            if not torch.is_tensor(o):
                raise TypeError(f"`func` must return a tensor (or tuple of tensors), got {type(o).__name__}")
            if o.dtype != self.dtype:
                raise TypeError(f"`func` returned dtype {o.dtype}, but the state has dtype {self.dtype}")
            if self.per_sample:   # any n rows of the batch
                shape = (rows, *shape[1:])
            if tuple(o.shape) != tuple(shape):
                hint = (" (per-sample mode: func gets any n rows and must treat them independently; per-row "
                        "parameters belong in the state)") if self.per_sample else ""
                raise ValueError(f"`func` returned shape {tuple(o.shape)}, but the state has shape {tuple(shape)}"
                                 + hint)
        self.checked = True


# --------------------------------------------------------------------------------------------
# State layout: tuples and per-sample rows are flattened to one tensor inside the solver
# --------------------------------------------------------------------------------------------

@dataclass
class _Layout:
    shapes: list[tuple[int, ...]]
    per_sample: bool

    @property
    def is_plain(self) -> bool:
        return len(self.shapes) == 1 and (not self.per_sample or len(self.shapes[0]) == 2)

    def flatten(self, tensors: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.is_plain:
            return tensors[0]
        if self.per_sample:
            return torch.cat([x.reshape(x.shape[0], -1) for x in tensors], dim=1)
        return torch.cat([x.reshape(-1) for x in tensors])

    def tuple_norm(self, norm: Callable | None) -> Callable:
        """torchdiffeq's error norms for a tuple state, on the flat state: ``norm`` called with the tuple, or by
        default the mixed norm, the largest RMS over the tensors (torchdiffeq's ``_mixed_norm``), so a small
        tensor keeps its tolerance next to a large one (the RMS of the concatenation loosened it). Per-sample
        steps: the mixed norm of each row (n, d) -> (n,), so that a row takes the steps of its own shared solve."""
        if self.per_sample:
            sizes = [math.prod(s[1:]) for s in self.shapes]
            return lambda y: torch.stack([rms_rows(part) for part in torch.split(y, sizes, dim=-1)]).amax(0)
        if norm is not None:
            return lambda y: norm(self.unflatten(y))
        return lambda y: torch.stack([rms_norm(part) for part in self.unflatten(y)]).max()

    def unflatten(self, y: torch.Tensor, lead: tuple[int, ...] = ()) -> tuple[torch.Tensor, ...]:
        """Inverse of flatten; ``lead`` are extra leading dims (e.g. time)."""
        if self.is_plain:
            return (y,)
        n_lead = len(lead)
        if self.per_sample:
            sizes = [math.prod(s[1:]) for s in self.shapes]
            parts = torch.split(y, sizes, dim=-1)
            return tuple(p.reshape(tuple(y.shape[:n_lead + 1]) + s[1:]) for p, s in zip(parts, self.shapes))
        sizes = [math.prod(s) for s in self.shapes]
        parts = torch.split(y, sizes, dim=-1)
        return tuple(p.reshape(tuple(y.shape[:n_lead]) + s) for p, s in zip(parts, self.shapes))


# --------------------------------------------------------------------------------------------
# The one entry point behind solve_ode and odeint
# --------------------------------------------------------------------------------------------

def _solve(func, y0, t, *, method, rtol, atol, adjoint, per_sample, controller, options, fixed_options,
           max_steps, norm, throw, dense, heuristics, adjoint_params, adjoint_rtol, adjoint_atol,
           adjoint_method, adjoint_options, regularizer=None, event_fn=None, multistep=None,
           until_event=True, time_in_state_dtype=False):
    """Validate, lay out the state, run the chosen gradient mode.

    With ``event_fn``, ``t`` is [t0, t1] (per-sample: also (batch, 2)) and ys holds y(t0) and y at the
    end: the event (internal time ``Result.t_event``; per sample (batch,), NaN where none), or t1 if
    the event does not come first. ``until_event`` (odeint): t1 only gives the direction and the solve
    runs until the event. :func:`_event_time` attaches the event time's gradient (solve_ode).

    Returns (Result, ys (T, *flat state), layout, problem, value of the global regulariser or None)."""
    if not callable(func):
        raise TypeError("`func` must be callable as func(t, y)")
    if adjoint not in GRADIENT_MODES:
        raise ValueError(f"`adjoint` must be one of {GRADIENT_MODES}, got {adjoint!r}")
    if adjoint_method is not None and adjoint_method not in MULTISTEP:
        get_tableau(adjoint_method)   # an unknown name is an error in every gradient mode
    if adjoint_options is not None and not isinstance(adjoint_options, dict):
        raise TypeError(f"`adjoint_options` must be a dict, got {type(adjoint_options).__name__}")
    tab = get_tableau(method)
    tensors = _check_state(y0)
    batch = tensors[0].shape[0] if per_sample and tensors[0].dim() > 0 else None
    if per_sample:
        if any(x.dim() < 1 or x.shape[0] != batch for x in tensors):
            raise ValueError("per_sample=True needs every tensor of `y0` to have the batch as dimension 0")
    t, t_values = _check_times(t, per_sample, batch)
    rtol, atol = _tolerances(rtol, atol, y0, tensors, per_sample)
    if tab.adaptive and fixed_options.get("step_size") is None and _all_zero(rtol) and _all_zero(atol):
        raise ValueError("`rtol` and `atol` are both 0: adaptive steps could never meet them")
    dtype, device = tensors[0].dtype, tensors[0].device
    if tab.adaptive and fixed_options.get("step_size") is None and dtype in (torch.float16, torch.bfloat16):
        # Only half precision: float32 and float64 keep converging below eps (torchdiffeq's defaults, rtol 1e-7
        # and atol 1e-9, are below float32's); bfloat16 at 1e-9 took 905k steps (9 minutes).
        check_resolvable_tolerances(rtol, atol, dtype)
    layout = _Layout([tuple(x.shape) for x in tensors], per_sample)
    if len(tensors) > 1:
        norm = layout.tuple_norm(norm)
    sign = _direction(t) if t_values is None else _sign(t_values)
    if tab.adaptive and event_fn is None:
        _check_step_budget(options.get("max_step", math.inf), max_steps, t, t_values,
                           options.get("max_steps_per_output", False))
    if multistep is not None and adjoint == "discrete":
        raise ValueError(f"`adjoint`: the discrete adjoint does not replay the multistep {multistep.name!r}; "
                         "use 'direct' or 'backsolve'")
    if fixed_options.get("grid") is not None:
        fixed_options = dict(fixed_options, grid=_internal_grid(fixed_options["grid"], t, sign))

    def to_user(y):
        parts = layout.unflatten(y)
        return parts if isinstance(y0, tuple) else parts[0]

    def from_user(out):
        outs = out if isinstance(out, tuple) else (out,)
        return layout.flatten(outs)

    plain = layout.is_plain and not isinstance(y0, tuple)   # a 1-tuple state still reaches func as a tuple
    checked = _CheckedFunc(func, to_user, from_user, sign, layout.shapes, dtype, plain)
    checked.tuple_state, checked.per_sample = isinstance(y0, tuple), per_sample
    y0_flat = layout.flatten(tensors)
    # Shared steps keep time in Python floats, per-sample steps in float64 tensors; ``func`` gets it in the dtype
    # of ``t`` (solve_ode: a float64 ``t`` keeps long horizons resolved for a float32 state), or with
    # ``time_in_state_dtype`` in the state's (the torchdiffeq drop-ins: torchdiffeq casts every call's time to y's).
    # The drop-ins' adaptive steps build stage times at least in the state's precision: torchdiffeq computes them in
    # float64 and casts them to the state's dtype for ``func`` (a float32 ``t`` rounded a float64 state's stage times
    # to float32: y' = cos t at 1e-12, error 3e-9 against torchdiffeq's 1e-12, dopri8 55 times its evaluations). A
    # float32 ``t`` with a float32 state stays float32, so ``func`` gets its times without a cast. Fixed grids keep t's.
    adaptive_dropin = time_in_state_dtype and tab.adaptive
    t_dtype = torch.float64 if per_sample else torch.promote_types(t.dtype, dtype) if adaptive_dropin else t.dtype
    checked.t_dtype = dtype if time_in_state_dtype else t.dtype
    coeffs = Coefficients.build(tab, dtype, t_dtype, device)
    options = {"clip_to_outputs": _needs_clipping(tab), **_internal_points(options, sign, per_sample)}
    cfg = Config(coeffs=coeffs, rtol=rtol, atol=atol, controller=controller, t_dtype=t_dtype,
                 max_steps=max_steps, norm=norm, throw=throw, heuristics=heuristics,
                 dense=dense and not per_sample, regularizer=regularizer,
                 multistep=multistep, **options, **fixed_options)
    if per_sample:
        t_out = (t.detach() if sign > 0 else -t.detach()).to(t_dtype)
    else:
        t_out = t_values if sign > 0 else [-v for v in t_values]
    if per_sample and t_out.dim() == 1:
        t_out = t_out.unsqueeze(0).expand(batch, -1)
    if event_fn is not None:
        cfg.event, t_out = _event(event_fn, t, tab, cfg, to_user, sign, atol, per_sample, adjoint, t_out,
                                  until_event)
    problem = Problem(checked, t_out, cfg, per_sample)

    time_grad = t.requires_grad
    if time_grad:
        y0_flat = _shift_initial_time(checked, y0_flat, t, sign, per_sample)
    reg_value = None
    if event_fn is not None and _event_starts(cfg.event, t_out, y0_flat, per_sample):   # the event holds at t0
        result = Result(ys=torch.stack([y0_flat, y0_flat]), status=int(Status.SUCCESS), nfe=0, n_accepted=0,
                        n_rejected=0, heuristics={}, records=[], dense_steps=[], t_event=t_out[0])
        ys = result.ys
    elif adjoint == "direct":
        result = problem.run(y0_flat)
        ys = result.ys
        if regularizer is not None:
            reg_value = regularizer.reduce(torch.stack(result.reg_terms)) if result.reg_terms else ys.new_zeros(())
    else:
        if adjoint == "backsolve" and per_sample and t.dim() == 2:
            raise ValueError("adjoint='backsolve' needs output times shared by the batch; with per-sample "
                             "times use adjoint='discrete' (exact gradient, O(steps) memory) or 'direct'")
        params = _adjoint_params(func, adjoint_params)
        if adjoint == "discrete":
            ys, reg_value = DiscreteAdjoint.apply(problem, y0_flat, *params)
            reg_value = reg_value if regularizer is not None else None
        else:
            adj_cfg = _adjoint_config(cfg, rtol, atol, adjoint_rtol, adjoint_atol, adjoint_method,
                                      adjoint_options, dtype, t_dtype, device, sign, layout)
            ys = BacksolveAdjoint.apply(problem, adj_cfg, y0_flat, *params)
        result = problem.last
    if event_fn is not None and per_sample:   # rows whose event holds at t0 are not integrated: y(end) is y0
        ys = torch.stack([ys[0], torch.where(cfg.event.at_start.unsqueeze(1), y0_flat, ys[1])])
    if time_grad:
        ys = _attach_output_time_grads(checked, ys, t, sign, per_sample,
                                       None if event_fn is None else _ended_at_t1(result, per_sample))
    return result, ys, layout, problem, reg_value


def _event_starts(event, t_out, y0: torch.Tensor, per_sample: bool) -> bool:
    """Fix the event function's initial signs. Shared: True when the event holds at t0 (nothing to
    integrate). Per-sample: rows whose event holds at t0 end there (their end time becomes t0)."""
    if not per_sample:
        return event.start(t_out[0], y0)
    at_start = event.start(t_out[:, 0], y0)
    t_out[at_start, 1] = t_out[at_start, 0]
    return False


def _event_time(event, func, ys: torch.Tensor, t_event, t: torch.Tensor, sign: float, per_sample: bool):
    """``ys`` with y(event) differentiable through the event time, and that time in user time:
    ``()`` (NaN if the solve reached t1 first) or per sample ``(batch,)`` (NaN where it did)."""
    if not per_sample:
        if t_event is None:
            return ys, torch.tensor(math.nan, dtype=t.dtype, device=t.device)
        t_internal = torch.tensor(t_event, dtype=t.dtype, device=t.device)
        if t_event == sign * float(t[0].detach()):   # the event holds at t0: the end is t0, not a crossing
            return ys, sign * t_internal
        t_internal, y_end = event_time_gradient(event.differentiable, func, t_internal, ys[-1])
        return torch.cat([ys[:-1], y_end.unsqueeze(0)]), (sign * t_internal).to(t.dtype)
    rows = (torch.isfinite(t_event) & ~event.at_start).nonzero().squeeze(1)
    if rows.numel() == 0:
        return ys, (sign * t_event).to(t.dtype)
    t_rows, y_rows = event_time_gradient(lambda tt, yy: event.differentiable(tt, yy, rows), func, t_event[rows],
                                         ys[-1][rows])
    y_end = ys[-1].index_put((rows,), y_rows)
    return torch.cat([ys[:-1], y_end.unsqueeze(0)]), (sign * t_event.index_put((rows,), t_rows)).to(t.dtype)


def _event(event_fn, t: torch.Tensor, tab, cfg: Config, to_user, sign: float, atol, per_sample: bool, adjoint: str,
           t_out, until_event: bool):
    """Check an event solve's arguments; its :class:`nde.events.Event` (shared) or
    :class:`nde.events.RowEvent` (per sample) and output times (the end: inf when ``until_event``)."""
    if not callable(event_fn):
        raise TypeError("`event_fn` must be callable as event_fn(t, y)")
    if t.shape[-1] != 2 or (t.dim() != 1 and not per_sample):
        raise ValueError(f"`t` must hold two times [t0, t1] with `event_fn`"
                         f"{' (t1 only sets the direction)' if until_event else ' (per sample: (batch, 2))'}, "
                         f"got shape {tuple(t.shape)}")
    if cfg.step_size is None and not tab.adaptive:
        where = "`options['step_size']`" if until_event else "`step_size`"
        raise ValueError(f"`event_fn` with the fixed-step method {tab.name!r} needs a step size ({where})")
    tol = float(atol.min()) if torch.is_tensor(atol) else atol
    if not per_sample:
        return Event(event_fn, to_user, sign, t.dtype, t.device, tol), ([t_out[0], math.inf] if until_event else t_out)
    if _needs_clipping(tab):
        raise ValueError(f"per-sample events need a method with an interpolant of its order; {tab.name!r} has "
                         "none (use dopri5 or tsit5)")
    if adjoint == "backsolve":
        raise ValueError("per-sample events end every sample at its own time; use adjoint='direct' or "
                         "'discrete' (the backsolve needs output times shared by the batch)")
    return RowEvent(event_fn, to_user, sign, t.dtype, tol), t_out.clone()


def _needs_clipping(tab) -> bool:
    """Adaptive methods whose interpolant is far below their order land steps on the output times instead
    of interpolating in ``solve_ode`` (dopri8: order 8, dense output of order 5)."""
    return tab.adaptive and tab.order - tab.dense_order > 1


def _adjoint_params(func, adjoint_params) -> tuple[torch.Tensor, ...]:
    """The tensors a gradient mode other than ``direct`` differentiates: ``adjoint_params``, or the
    parameters of an ``nn.Module`` ``func``. Anything else would drop gradients silently, so it raises."""
    if adjoint_params is None:
        if not isinstance(func, torch.nn.Module):
            raise ValueError("`adjoint_params`: `func` is not an nn.Module, so its parameters cannot be found; "
                             "pass the tensors it uses (adjoint_params=() if none), or use adjoint='direct'")
        params = tuple(func.parameters())
    else:
        if torch.is_tensor(adjoint_params):
            raise TypeError("`adjoint_params` must be a sequence of tensors, got a tensor (wrap it: (W,))")
        params = tuple(adjoint_params)
        for p in params:
            if not torch.is_tensor(p):
                raise TypeError(f"`adjoint_params` must contain tensors only, got {type(p).__name__}")
    # A tensor listed twice would get its gradient once per entry (torchdiffeq's does): keep the first, as the SDE core.
    unique: dict[int, torch.Tensor] = {}
    for p in params:
        if p.requires_grad:
            unique.setdefault(id(p), p)
    return tuple(unique.values())


def _adjoint_config(cfg, rtol, atol, adjoint_rtol, adjoint_atol, adjoint_method, adjoint_options,
                    dtype, t_dtype, device, sign, layout: _Layout) -> AdjointConfig:
    options = dict(adjoint_options or {})
    norm = options.pop("norm", None)
    seminorm = isinstance(norm, str) and norm == "seminorm"
    if norm is not None and not seminorm and not callable(norm):
        raise ValueError("`adjoint_options['norm']` must be 'seminorm' or a callable (or absent)")
    coeffs, multistep = cfg.coeffs, cfg.multistep
    if adjoint_method is not None:
        multistep = Adams.from_options(adjoint_method, options, "adjoint_options") if adjoint_method in MULTISTEP \
            else None
        tableau = get_tableau("rk4_38" if multistep is not None else adjoint_method)
        coeffs = Coefficients.build(tableau, dtype, t_dtype, device)
    fields = _internal_points(_translate_adaptive_options(options, "adjoint_options"), sign, False) \
        if coeffs.tableau.adaptive else _translate_fixed_options(options, "adjoint_options")
    if "step_size" in fields:   # the adjoint's own spacing replaces the forward grid
        fields["grid"] = None
    fields["multistep"] = multistep
    a_rtol = rtol if adjoint_rtol is None else _check_tolerance("adjoint_rtol", adjoint_rtol)
    a_atol = atol if adjoint_atol is None else _check_tolerance("adjoint_atol", adjoint_atol)
    if torch.is_tensor(a_rtol) or torch.is_tensor(a_atol):
        raise ValueError("the adjoint solve needs scalar `adjoint_rtol`/`adjoint_atol`: give them when `rtol`/`atol` "
                         "are per component or per tensor")
    return AdjointConfig(default_adjoint_cfg(cfg, a_rtol, a_atol, coeffs, fields), seminorm=seminorm,
                         norm=None if seminorm else norm, unflatten=layout.unflatten)


def _time_term(func, ti: torch.Tensor, yi: torch.Tensor, sign: float, per_sample: bool) -> torch.Tensor:
    """(t_i − t_i.detach())·f(t_i, y_i) with f detached: zero in value, ∂/∂t_i = f(t_i, y_i)."""
    with torch.no_grad():
        fi = sign * func(sign * ti.detach(), yi.detach())
    shift = (ti - ti.detach()).to(yi.dtype)
    return (shift.unsqueeze(-1) if per_sample else shift) * fi


def _shift_initial_time(func, y0, t, sign, per_sample):
    """y0 − term(t0): adds ∂L/∂t0 = −⟨a(t0), f(t0, y0)⟩ without changing values."""
    return y0 - _time_term(func, t[..., 0], y0, sign, per_sample)


def _attach_output_time_grads(func, ys, t, sign, per_sample, at_end=None):
    """ys_i + term(t_i): adds ∂L/∂t_i = ⟨∂L/∂y_i, f(t_i, y_i)⟩ for i ≥ 1.

    For i = 0 the same term cancels the shift of ``_shift_initial_time`` in the output y(t0) = y0,
    which does not depend on t0. Event solves: ``at_end`` says where the solve ended at t1 rather than
    at the event (a bool, or per sample a (batch,) mask); only there does y(end) depend on t1."""
    terms = [_time_term(func, t[..., i], ys[i], sign, per_sample) for i in range(t.shape[-1])]
    if at_end is not None:
        mask = at_end if torch.is_tensor(at_end) else torch.tensor(at_end, device=ys.device)
        terms[-1] = terms[-1] * (mask.unsqueeze(-1) if per_sample else mask).to(ys.dtype)
    return torch.stack([y + term for y, term in zip(ys, terms)])


def _ended_at_t1(result: Result, per_sample: bool):
    """Where an event solve ended at t1 (no event before it): a bool, or per sample a (batch,) mask."""
    if per_sample:
        return torch.isnan(result.t_event)
    return result.t_event is None


def _check_option_keys(options: dict, allowed: set, argname: str, kind: str) -> None:
    for key in options:
        if key not in allowed:
            raise ValueError(f"unknown key {key!r} in `{argname}` for {kind} method; "
                             f"expected some of {sorted(allowed)}")


def _translate_adaptive_options(options: dict, argname: str) -> dict:
    """torchdiffeq adaptive-solver options -> Config fields (controller handled by the caller)."""
    _check_option_keys(options, _ADAPTIVE_OPTIONS, argname, "an adaptive")
    out = {}
    for key, value in options.items():
        if key == "first_step" and value is not None:
            out["first_step"] = number(value, f"`{argname}['first_step']`", positive=True)
        elif key == "min_step":
            out["min_step"] = number(value, f"`{argname}['min_step']`")
        elif key == "max_step":
            out["max_step"] = number(value, f"`{argname}['max_step']`", positive=True, allow_inf=True)
        elif key == "max_num_steps":
            out["max_steps"] = positive_int(value, f"`{argname}['max_num_steps']`")
        elif key == "norm":
            if not callable(value):
                raise ValueError(f"`{argname}['norm']` must be callable")
            out["norm"] = value
        elif key == "dtype":  # torchdiffeq's dtype of step-size arithmetic; nde's is always float64
            if not (isinstance(value, torch.dtype) and value.is_floating_point):
                raise ValueError(f"`{argname}['dtype']` must be a floating torch.dtype, got {value!r}")
        elif key in ("step_t", "jump_t") and value is not None:
            out["step_points" if key == "step_t" else "jump_points"] = _time_points(value, f"{argname}['{key}']")
    if out.get("min_step", 0.0) > out.get("max_step", math.inf):
        raise ValueError(f"`{argname}`: min_step={out['min_step']} exceeds max_step={out['max_step']}")
    return out


def _time_points(value, name: str) -> tuple[float, ...]:
    """step_t / jump_t: a 1-D tensor or sequence of finite times -> tuple of floats (user time)."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"`{name}` must be a 1-D tensor or sequence of finite times, got {value!r}")
    points = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
    if points.dim() > 1 or not torch.isfinite(points).all():
        raise ValueError(f"`{name}` must be a 1-D tensor or sequence of finite times")
    return tuple(points.reshape(-1).tolist())


def _internal_points(fields: dict, sign: float, per_sample: bool) -> dict:
    """step_points / jump_points of ``fields`` in the solver's increasing time (sign·t), checked."""
    fields = dict(fields)
    steps, jumps = fields.get("step_points", ()), fields.get("jump_points", ())
    if not steps and not jumps:
        return fields
    if per_sample:
        raise ValueError("`step_t`/`jump_t` need shared steps (per_sample=False)")
    if set(steps) & set(jumps):
        raise ValueError("`step_t` and `jump_t` must not have any repeated elements between them")
    fields["step_points"] = tuple(sorted(sign * p for p in steps))
    fields["jump_points"] = tuple(sorted(sign * p for p in jumps))
    return fields


def _translate_fixed_options(options: dict, argname: str) -> dict:
    """torchdiffeq fixed-grid options -> Config fields."""
    _check_option_keys(options, _FIXED_OPTIONS, argname, "a fixed-step")
    out = {}
    for key, value in options.items():
        if key == "step_size" and value is not None:
            out["step_size"] = number(value, f"`{argname}['step_size']`", positive=True)
        elif key == "interp" and value is not None:
            if value not in ("linear", "cubic"):
                raise ValueError(f"`{argname}['interp']` must be 'linear' or 'cubic'")
            out["interp"] = value
        elif key == "max_num_steps":
            out["max_steps"] = positive_int(value, f"`{argname}['max_num_steps']`")
        elif key == "perturb":
            if not isinstance(value, bool):
                raise ValueError(f"`{argname}['perturb']` must be True or False, got {value!r}")
            out["perturb"] = value
        elif key == "grid_constructor":   # odeint builds the grid before translating its own options
            raise ValueError(f"`{argname}['grid_constructor']` is not supported here; pass `step_size`")
    return out


def _controller_from_options(options: dict, default: PIController) -> PIController:
    safety, ifactor, dfactor = options.get("safety"), options.get("ifactor"), options.get("dfactor")
    if safety is None and ifactor is None and dfactor is None:
        return default
    if ifactor is not None and number(ifactor, "`options['ifactor']`") < 1:
        raise ValueError(f"`options['ifactor']` (the largest growth of a step) must be >= 1, got {ifactor!r}")
    if dfactor is not None and not 0 < number(dfactor, "`options['dfactor']`") <= 1:
        raise ValueError("`options['dfactor']` (the largest shrink of a rejected step; above 1 a rejected step "
                         f"would grow) must be in (0, 1], got {dfactor!r}")
    return PIController(beta1=default.beta1, beta2=default.beta2,
                        safety=default.safety if safety is None else float(safety),
                        factor_min=default.factor_min if dfactor is None else float(dfactor),
                        factor_max=default.factor_max if ifactor is None else float(ifactor),
                        accept_factor_min=default.accept_factor_min)


# --------------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------------

def solve_ode(func: Callable, y0, t: torch.Tensor, *, method: str = "dopri5", rtol=1e-6, atol=1e-6,
              adjoint: str = "direct", per_sample: bool = False, controller: PIController | None = None,
              first_step: float | None = None, step_size: float | None = None, min_step: float = 0.0,
              max_step: float = math.inf, max_steps: int = DEFAULT_MAX_STEPS, throw: bool = True,
              dense: bool = True, heuristics: bool = True, adjoint_params=None, adjoint_rtol=None,
              adjoint_atol=None, adjoint_method: str | None = None, adjoint_options: dict | None = None,
              interp: str | None = None, regularize=None, generator: random.Random | None = None,
              step_t=None, jump_t=None, event_fn: Callable | None = None) -> Solution:
    """Solve ``dy/dt = func(t, y)`` from ``y(t[0]) = y0`` and return a :class:`Solution`.

    Args:
        func: ``func(t, y) -> dy/dt``. Shared mode: ``t`` is a 0-d tensor and ``y`` has ``y0``'s shape.
            Per-sample mode: ``t`` is ``(n,)`` and ``y`` is ``(n, *y0.shape[1:])`` for the ``n`` rows
            still being integrated; rows must not interact (per-row parameters belong in the state).
        y0: initial state, a tensor (or tuple of tensors); in per-sample mode ``(batch, ...)``.
        t: output times ``(T,)``, strictly increasing or decreasing; per-sample mode also accepts
            ``(batch, T)``, a grid per sample.
        method: ``euler``, ``midpoint``, ``heun``, ``heun3``, ``rk4``, ``rk4_38`` (fixed grid) or
            ``adaptive_heun``, ``heun2``, ``fehlberg2``, ``fehlberg2_fsal``, ``bosh3``, ``dopri5``, ``tsit5``, ``dopri8``
            (adaptive; ``adaptive_heun`` and ``fehlberg2`` reuse a last stage that is not f at the
            solution, as torchdiffeq does, ``heun2`` and ``fehlberg2_fsal`` evaluate f there instead).
        rtol, atol: tolerances, scalars or tensors broadcastable to the state (per sample: to one row); for a
            tuple state also one per tensor (a tuple of such scalars or tensors, as torchdiffeq takes them).
        adjoint: gradient mode: ``"direct"`` (autograd through the solver), ``"backsolve"`` (continuous
            adjoint, memory independent of steps), ``"discrete"`` (exact gradient of the discretisation
            from O(steps) checkpoints).
        per_sample: every batch row gets its own steps, acceptance and finish.
        controller: step-size controller; default :class:`PIController` (Hairer's stabilised PI).
        first_step, min_step, max_step, max_steps: step limits (``first_step=None`` selects it by
            Hairer's rule).
        step_size: grid spacing of fixed-step methods (default: the output times); given with an
            adaptive method, it takes fixed steps without error control.
        throw: raise :class:`nde.SolverError` on failure (default); ``False`` returns status codes and
            NaN for outputs that were not reached.
        dense: keep every accepted step for ``Solution.evaluate`` (shared mode).
        heuristics: record per-step error ratio and stiffness estimates.
        adjoint_*: parameters, tolerances, method and options (``norm="seminorm"``) of the backsolve.
        interp: output interpolation on a fixed grid, ``"linear"`` or ``"cubic"``; default: linear for
            fixed-step methods (torchdiffeq's), the method's own dense output for an adaptive method
            taking fixed steps (as ``Solution.evaluate``).
        regularize: a regulariser from :mod:`nde.regularize`; its differentiable value is
            ``Solution.regularization`` (add ``λ·sol.regularization`` to the loss).
        generator: ``random.Random`` for the local regulariser's sampled times (default: module RNG).
        step_t, jump_t: times that adaptive steps must land on; at ``jump_t`` points ``func`` may be
            discontinuous in ``t``: the step ending there evaluates its last stage just before the point
            and ``func`` is re-evaluated just after it (torchdiffeq's options of the same names).
        event_fn: ``event_fn(t, y) -> tensor``: end the solve where it crosses zero (docs/core.md,
            "Events"). ``t`` is then ``[t0, t1]`` (per-sample mode: also ``(batch, 2)``) and the solve ends
            at the event or at t1, whichever comes first; ``ys`` is ``[y(t0), y(end)]`` and
            ``Solution.event_t`` the event time (NaN if t1 came first), differentiable, as is y(event),
            by the implicit function theorem. Shared mode: ``event_fn`` sees the whole state and the
            first zero of any component ends the solve. Per-sample mode: it gets ``t`` ``(n,)`` and ``y``
            ``(n, ...)`` of any n rows and returns ``(n,)`` or ``(n, k)``; each row ends at its own event.
    """
    tab = get_tableau(method)
    if controller is not None and not isinstance(controller, PIController):
        raise TypeError("`controller` must be an nde.PIController")
    options = {"first_step": None if first_step is None else number(first_step, "`first_step`", positive=True),
               "min_step": number(min_step, "`min_step`"),
               "max_step": number(max_step, "`max_step`", positive=True, allow_inf=True)}
    if options["min_step"] > options["max_step"]:
        raise ValueError(f"`min_step`={min_step} exceeds `max_step`={max_step}")
    if per_sample and step_size is not None:
        raise ValueError("`step_size` (fixed steps) needs shared steps (per_sample=False)")
    for name, value in (("throw", throw), ("per_sample", per_sample), ("dense", dense), ("heuristics", heuristics)):
        if not isinstance(value, bool):   # "no" would be truthy
            raise TypeError(f"`{name}` must be True or False, got {value!r}")
    if interp not in (None, "linear", "cubic"):
        raise ValueError(f"`interp` must be 'linear', 'cubic' or None, got {interp!r}")
    max_steps = positive_int(max_steps, "`max_steps`")
    if (step_t is not None or jump_t is not None) and (not tab.adaptive or step_size is not None):
        raise ValueError("`step_t`/`jump_t` need an adaptive method without `step_size`")
    options.update(_translate_adaptive_options({"step_t": step_t, "jump_t": jump_t}, "solve_ode"))
    fixed = {}
    if not tab.adaptive or step_size is not None:
        fixed = _translate_fixed_options({"step_size": step_size, "interp": interp}, "solve_ode")
        if interp is None:
            fixed["interp"] = "dense" if tab.adaptive else "linear"
    global_reg, local_reg, rnode = _split_regularizer(regularize, tab, adjoint, per_sample, step_size)
    if rnode is not None and event_fn is not None:
        raise ValueError("`regularize=RNODE(...)` augments the state, which `event_fn` would see; "
                         "use another regulariser with events")
    if local_reg is not None and local_reg.norm == "per_sample":
        _check_rows(y0)
    if rnode is not None:
        func, y0, adjoint_params = _augment_rnode(rnode, func, y0, adjoint_params)
    result, ys, layout, problem, reg_value = _solve(
        func, y0, t, method=method, rtol=rtol, atol=atol, adjoint=adjoint, per_sample=per_sample,
        controller=controller or PIController(), options=options, fixed_options=fixed, max_steps=max_steps,
        norm=None, throw=throw, dense=dense or local_reg is not None, heuristics=heuristics,
        adjoint_params=adjoint_params, adjoint_rtol=adjoint_rtol, adjoint_atol=adjoint_atol,
        adjoint_method=adjoint_method, adjoint_options=adjoint_options, regularizer=global_reg,
        event_fn=event_fn, until_event=False)
    event_t = None
    if event_fn is not None:
        ys, event_t = _event_time(problem.cfg.event, problem.func, ys, result.t_event, t, _direction(t), per_sample)
    dev = ys.device
    stats = {key: torch.as_tensor(getattr(result, key), device=dev) for key in ("nfe", "n_accepted", "n_rejected")}
    if local_reg is not None:
        if generator is not None and not isinstance(generator, random.Random):
            raise TypeError(f"`generator` must be a random.Random, got {type(generator).__name__}")
        reg_value, extra_nfe = _local_value(local_reg, problem, result, random if generator is None else generator)
        stats["nfe_regularization"] = torch.tensor(extra_nfe, device=dev)
    if rnode is not None:
        reg_value = rnode.value(_direction(t) * ys[-1][..., -2:])   # ∫ over |dt|: also for decreasing t
        ys = ys[..., :-2]
    parts = layout.unflatten(ys, lead=(ys.shape[0],)) if rnode is None else (ys,)
    return Solution(ts=t, ys=parts if len(parts) > 1 else parts[0], stats=stats,
                    status=torch.as_tensor(result.status, device=dev),
                    heuristics=_user_time_heuristics(result.heuristics, _direction(t)), regularization=reg_value,
                    _dense=result.dense_steps if dense and rnode is None else [], _coeffs=problem.cfg.coeffs,
                    _unflatten=None if layout.is_plain else (lambda y: layout.unflatten(y, lead=(y.shape[0],))),
                    _time_sign=_direction(t), event_t=event_t, _grad_mode=adjoint)


def _user_time_heuristics(heuristics: dict, sign: float) -> dict:
    """The per-step heuristics with ``t`` and ``dt`` in the user's time (the solver's runs forwards): for a
    decreasing ``t``, step j spans ``[t_j + dt_j, t_j]`` with ``dt_j < 0``."""
    if sign > 0:
        return heuristics
    return {key: -value if key in ("t", "dt") else value for key, value in heuristics.items()}


def _split_regularizer(regularize, tab, adjoint, per_sample, step_size):
    """Sort ``regularize`` into (global, local, RNODE) and check it fits the solve."""
    if regularize is None:
        return None, None, None
    if isinstance(regularize, GlobalRegularizer):
        if not tab.adaptive or step_size is not None:
            raise ValueError("`regularize`: global regularisers need an adaptive method without `step_size`")
        if per_sample:
            raise ValueError("`regularize`: global regularisers need shared steps (per_sample=False)")
        if adjoint == "backsolve":
            raise ValueError("`regularize`: a continuous adjoint cannot differentiate the solver's error "
                             "estimates; use adjoint='direct' or 'discrete', or nde.regularize.LocalErrorEstimate")
        return regularize, None, None
    if isinstance(regularize, LocalErrorEstimate):
        if not tab.adaptive or step_size is not None or per_sample:
            raise ValueError("`regularize`: LocalErrorEstimate needs an adaptive method and shared steps")
        return None, regularize, None
    if isinstance(regularize, RNODE):
        if per_sample:   # its Hutchinson noise is one row per batch element; the working batch shrinks
            raise ValueError("`regularize`: RNODE needs shared steps (per_sample=False)")
        return None, None, regularize
    raise TypeError("`regularize` must be a regulariser from nde.regularize, got " + type(regularize).__name__)


def _augment_rnode(rnode: RNODE, func, y0, adjoint_params):
    if not torch.is_tensor(y0) or y0.dim() < 1:
        raise ValueError("`regularize=RNODE(...)` needs a tensor `y0` with the state in its last dimension")
    params = adjoint_params if adjoint_params is not None else (
        tuple(func.parameters()) if isinstance(func, torch.nn.Module) else None)
    aug = rnode.augment(func, y0.shape[-1], y0)
    return aug, torch.cat([y0, y0.new_zeros(*y0.shape[:-1], 2)], dim=-1), params


def _local_value(reg: LocalErrorEstimate, problem: Problem, result: Result, rng) -> tuple[torch.Tensor, int]:
    """One live step of the solver at each sampled time, from the detached dense-output state."""
    cfg, func = problem.cfg, problem.func
    dense = result.dense_steps
    if not dense:   # a single output time: nothing was integrated
        return result.ys.new_zeros(()), 0
    starts = [d[0] for d in dense]
    landings = sorted(cfg.step_points + cfg.jump_points)
    t_first = starts[0]
    # Times are drawn in [t0, t1] (an event ends the solve there), although the last step may end past t1 (methods
    # that interpolate their outputs); the steps are cut at t1 for the step-start density of "mixture" sampling.
    t_last = result.t_event if result.t_event is not None else min(problem.t_out[-1], starts[-1] + dense[-1][1])
    dts = [min(d[1], t_last - d[0]) for d in dense]
    tab = get_tableau(reg.method) if reg.method is not None else cfg.coeffs.tableau
    y_ref = dense[0][2]
    coeffs = Coefficients.build(tab, y_ref.dtype, cfg.t_dtype, y_ref.device)
    k_exp = tab.error_order + 1
    norm = cfg.norm or rms_norm   # the solve's: for a tuple state the mixed norm
    norm_host = rms_norm_host if cfg.norm is None else (lambda x: float(norm(x)))
    total, extra_nfe = y_ref.new_zeros(()), 0
    for t_r, weight in reg.sample_times(t_first, t_last, starts, dts, rng):
        room = t_last - t_r   # the live step ends by t1, as a fresh integrator's would (and the SDE core's)
        if room <= 1e-9 * (t_last - t_first):   # a time sampled at the very end: no room for a step
            continue
        j = step_index(starts, t_r)
        t0, dt, y0, step = dense[j][:4]
        theta = min(max((t_r - t0) / dt, 0.0), 1.0)
        with torch.no_grad():
            y_r = output_value(step, y0, dt, theta, "dense", cfg.coeffs).detach()
        t_tensor = torch.tensor(t_r, dtype=cfg.t_dtype, device=y_r.device)
        if t_r in cfg.jump_points:   # a step start where f may jump: as the solve, evaluate f just after it
            k1 = func(torch.nextafter(t_tensor, t_tensor.new_tensor(math.inf)), y_r)
        else:
            k1 = func(t_tensor, y_r)
        if reg.step == "heuristic":
            with torch.no_grad():
                h = initial_step_scalar(func, t_r, t_tensor, y_r, k1.detach(), tab.error_order, cfg.rtol,
                                        cfg.atol, norm_host)
            extra_nfe += 1
        else:
            h = dt
        h = min(h, room)
        local = _live_step(func, t_r, h, y_r, k1, coeffs, landings, cfg.t_dtype)
        extra_nfe += tab.stages
        scaled = local.error / torch.maximum(y_r.abs(), local.y1.abs()).mul(cfg.rtol).add(cfg.atol)
        if reg.norm == "per_sample" and len(func.expected_shape) > 1:   # a tuple state: row i of every tensor
            shapes = func.expected_shape
            scaled = _Layout(shapes, per_sample=True).flatten(_Layout(shapes, per_sample=False).unflatten(scaled))
        total = total + weight * reg.local_value(scaled, h, t_last - t_first, k_exp, norm)
    return total / reg.n_samples, extra_nfe


def _check_rows(y0) -> None:
    """``LocalErrorEstimate(norm="per_sample")`` takes rows along dim 0 of every tensor of a tuple ``y0``."""
    if not isinstance(y0, tuple) or not all(torch.is_tensor(x) for x in y0):   # else _solve's checks name it
        return
    if len({x.shape[0] if x.dim() else None for x in y0}) != 1:
        raise ValueError("`regularize`: LocalErrorEstimate(norm='per_sample') needs every tensor of a tuple `y0` "
                         "to have the batch as dimension 0")


def _live_step(func, t_r: float, h: float, y_r: torch.Tensor, k1: torch.Tensor, coeffs: Coefficients,
               landings: list[float], t_dtype):
    """The local regulariser's step from ``t_r``: cut at the next ``step_t``/``jump_t`` point, where, as
    in the solve, the stages at c = 1 are evaluated just before it (``func`` may jump there)."""
    ahead = [p for p in landings if p > t_r]
    times = stage_times(t_r, h, coeffs, t_dtype, y_r.device)
    if ahead and ahead[0] <= t_r + h:
        h = ahead[0] - t_r
        times = _land_stage_times(stage_times(t_r, h, coeffs, t_dtype, y_r.device), coeffs.tableau.c, ahead[0],
                                  t_dtype, y_r.device)
    return rk_step(func, t_r, h, y_r, k1, coeffs, times)


def odeint(func: Callable, y0, t: torch.Tensor, *, rtol=1e-7, atol=1e-9, method: str | None = None,
           options: dict | None = None, event_fn=None, adjoint: str = "direct", adjoint_params=None,
           adjoint_rtol=None, adjoint_atol=None, adjoint_method=None, adjoint_options=None):
    """Drop-in replacement for ``torchdiffeq.odeint`` (0.2.5): same arguments, defaults and output.

    Returns ``(len(t), *y0.shape)`` (a tuple for tuple states). ``adjoint`` selects the gradient mode
    (``"direct"``, ``"backsolve"``, ``"discrete"``); the step-size controller is torchdiffeq's
    I controller, so accepted steps and NFE match torchdiffeq's for dopri5, bosh3, fehlberg2,
    adaptive_heun and dopri8 at the same tolerances (tested; dopri8 ends its last step on the final time
    and interpolates interior outputs with its order-5 continuous extension, docs/core.md).
    Method names are torchdiffeq's: ``"heun2"`` is fixed-step Heun (``solve_ode``'s ``"heun"``);
    ``solve_ode``'s adaptive ``"heun2"`` is ``"adaptive_heun"`` with an FSAL stage at the solution; ``"scipy_solver"``
    calls ``scipy.integrate.solve_ivp`` without gradients (:mod:`nde._scipy`); ``"rk4"`` is Kutta's 3/8
    rule (``solve_ode``'s ``"rk4_38"``; its ``"rk4"`` is the classical method); the multistep
    ``"explicit_adams"``, ``"implicit_adams"`` and ``"fixed_adams"`` (options ``max_order``,
    ``max_iters``) are torchdiffeq's fixed-grid Adams methods (:mod:`nde._adams`), with the ``direct``
    and ``backsolve`` gradients. ``options["grid_constructor"](func, y0, t)`` gives fixed-grid methods
    their grid, as in torchdiffeq (``func`` and ``y0`` as passed to ``odeint``).
    Differences: ``max_num_steps`` defaults to 10^6 (instead of 2^31−1, which never ends), and failures
    raise :class:`nde.SolverError` instead of an ``AssertionError``.

    Events: with ``event_fn(t, y) -> tensor``, ``t`` is ``[t0, t1]`` (t1 only sets the direction) and
    the solve runs until the first zero crossing of any component of ``event_fn``; it returns
    ``(event_t, solution)`` with ``solution = [y(t0), y(event_t)]`` (:mod:`nde.events`). The event time
    is located to ``atol`` by bisection on the step's interpolant; fixed-step methods need
    ``options['step_size']``. As in torchdiffeq, ``event_t`` carries no gradient here and the
    solution's gradient is that of a solve ending at the fixed time ``event_t``; :func:`odeint_event`
    adds the event time's gradient.
    """
    method = "dopri5" if method is None else TORCHDIFFEQ_NAMES.get(method, method)
    adjoint_method = TORCHDIFFEQ_NAMES.get(adjoint_method, adjoint_method)
    _warn_about_callbacks(func)
    if options is not None and not isinstance(options, dict):
        raise TypeError("`options` must be a dict")
    if method == "scipy_solver":
        if event_fn is not None:
            raise ValueError("`event_fn` is not supported with method 'scipy_solver'; use an nde method")
        return _odeint_scipy(func, y0, t, rtol, atol, dict(options or {}), adjoint)
    options, multistep = dict(options or {}), None
    if method in MULTISTEP:
        multistep, method = Adams.from_options(method, options, "options"), "rk4_38"
    grid = None if get_tableau(method).adaptive else \
        _constructed_grid(options.pop("grid_constructor", None), func, y0, t, options)
    settings = _odeint_options(method, options)
    if grid is not None:
        settings["fixed_options"]["grid"] = grid
    result, ys, layout, _, _ = _solve(
        func, y0, t, method=method, rtol=rtol, atol=atol, adjoint=adjoint, per_sample=False, **settings,
        throw=True, dense=False, heuristics=False, adjoint_params=adjoint_params, adjoint_rtol=adjoint_rtol,
        adjoint_atol=adjoint_atol, adjoint_method=adjoint_method, adjoint_options=adjoint_options,
        event_fn=event_fn, multistep=multistep, time_in_state_dtype=True)
    parts = layout.unflatten(ys, lead=(ys.shape[0],))
    solution = parts if isinstance(y0, tuple) else parts[0]
    if event_fn is None:
        return solution
    event_t = torch.tensor(_direction(t) * result.t_event, dtype=t.dtype, device=t.device)
    return event_t, solution


def odeint_event(func: Callable, y0, t0: torch.Tensor, *, event_fn: Callable, reverse_time: bool = False,
                 odeint_interface: Callable | None = None, **kwargs):
    """Drop-in for ``torchdiffeq.odeint_event``: solve from ``t0`` until ``event_fn`` crosses zero and
    return ``(event_t, solution)`` with the event time's gradient.

    ``odeint_interface`` is :func:`odeint` (default) or :func:`odeint_adjoint`; ``kwargs`` go to it.
    Time runs forwards, or backwards with ``reverse_time=True``. The returned values are those of
    ``odeint_interface(func, y0, [t0, t0 ± 1], event_fn=event_fn)``; ``event_t`` is differentiable by
    the implicit function theorem (:func:`nde.events.event_gradient`), through ``y0``, the parameters
    of ``func`` and of ``event_fn``, and ``solution[-1] = y(event_t)`` includes ``f·dt*``.
    """
    if not torch.is_tensor(t0) or t0.numel() != 1:
        raise ValueError("`t0` must be a tensor holding one time")
    if not callable(event_fn):
        raise TypeError("`event_fn` must be callable as event_fn(t, y)")
    odeint_interface = odeint if odeint_interface is None else odeint_interface
    t = torch.cat([t0.reshape(-1), t0.reshape(-1).detach() + (-1.0 if reverse_time else 1.0)])
    event_t, solution = odeint_interface(func, y0, t, event_fn=event_fn, **kwargs)
    is_tuple = isinstance(solution, tuple)
    if float(event_t.detach()) == float(t0.detach()):   # the event holds at t0: the solve ended there
        return event_t, solution
    last = tuple(s[-1] for s in solution) if is_tuple else solution[-1]
    event_t, last = event_gradient(func, event_fn, t0.detach().reshape(()), y0, event_t, last)
    if is_tuple:
        return event_t, tuple(torch.cat([s[:-1], s_t.unsqueeze(0)]) for s, s_t in zip(solution, last))
    return event_t, torch.cat([solution[:-1], last.unsqueeze(0)])


def _constructed_grid(constructor, func, y0, t, options: dict) -> tuple[float, ...] | None:
    """torchdiffeq's ``options['grid_constructor'](func, y0, t)``: the fixed grid, from ``t[0]`` to ``t[-1]``."""
    if constructor is None:
        return None
    if not callable(constructor):
        raise ValueError("`options['grid_constructor']` must be callable as grid_constructor(func, y0, t)")
    if options.get("step_size") is not None:
        raise ValueError("`options`: step_size and grid_constructor are mutually exclusive")
    grid = constructor(func, y0, t)
    least = min(2, t.numel())   # a single output time: the grid may be that time alone (torchdiffeq's default grid)
    if not torch.is_tensor(grid) or grid.dim() != 1 or grid.numel() < least or not bool(torch.isfinite(grid).all()):
        raise ValueError(f"`options['grid_constructor']` must return a 1-D tensor of at least {least} finite time(s)")
    values = grid.detach().tolist()
    if values[0] != float(t[0].detach()) or values[-1] != float(t[-1].detach()):
        raise ValueError(f"`options['grid_constructor']` must return a grid from t[0] to t[-1], "
                         f"got {values[0]} .. {values[-1]}")
    return tuple(values) if t.numel() > 1 else None   # one output time: nothing to integrate


def _internal_grid(grid: tuple[float, ...], t: torch.Tensor, sign: float) -> tuple[float, ...]:
    """A user-time grid in the solver's increasing time, checked to run in the direction of ``t``."""
    internal = tuple(sign * g for g in grid)
    if any(b <= a for a, b in zip(internal[:-1], internal[1:])):
        raise ValueError("`options['grid_constructor']` must return a grid strictly monotonic in the direction of `t`")
    return internal


_CALLBACKS = tuple(f"callback_{kind}{phase}" for kind in ("step", "accept_step", "reject_step")
                   for phase in ("", "_adjoint"))


# The callbacks each class of ``func`` defines, looked up once per class rather than six lookups per call.
_CALLBACKS_BY_CLASS: "weakref.WeakKeyDictionary[type, list[str]]" = weakref.WeakKeyDictionary()


def _warn_about_callbacks(func) -> None:
    """torchdiffeq calls ``func.callback_step`` (and the accept/reject/adjoint variants) around each step; nde does
    not, so a ``func`` whose class defines them is told rather than silently ignored."""
    cls = type(func)
    defined = _CALLBACKS_BY_CLASS.get(cls)
    if defined is None:
        defined = _CALLBACKS_BY_CLASS[cls] = [name for name in _CALLBACKS if callable(getattr(cls, name, None))]
    if defined:
        warnings.warn(f"nde does not call torchdiffeq's step callbacks: {', '.join(defined)} of `func` will not run",
                      stacklevel=3)


def _odeint_options(method: str, options: dict | None) -> dict:
    """torchdiffeq ``options`` of ``method`` -> the controller, loop options, fixed-grid options,
    ``max_steps`` and ``norm`` arguments of :func:`_solve` (torchdiffeq's I controller by default)."""
    tab = get_tableau(method)
    options = dict(options or {})
    controller = _controller_from_options(options, _TORCHDIFFEQ_CONTROLLER)
    for key in ("safety", "ifactor", "dfactor"):
        options.pop(key, None)
    max_steps = DEFAULT_MAX_STEPS
    if tab.adaptive:
        fields = _translate_adaptive_options(options, "options")
        # dopri8 interpolates interior outputs, as torchdiffeq's does (same evaluations however many outputs;
        # ``step_t=t`` lands on them instead) but ends its last step on the final time (its accuracy there).
        fields.update(clip_to_outputs=False, clip_to_end=_needs_clipping(tab), max_steps_per_output=True)
        norm = fields.pop("norm", None)
        max_steps = fields.pop("max_steps", max_steps)
        fixed = {}
    else:
        fixed = _translate_fixed_options(options, "options")
        max_steps = fixed.pop("max_steps", max_steps)
        fields, norm = {}, None
    return dict(controller=controller, options=fields, fixed_options=fixed, max_steps=max_steps, norm=norm)


def odeint_dense(func: Callable, y0: torch.Tensor, t0: torch.Tensor, t1: torch.Tensor, *, rtol=1e-7, atol=1e-9,
                 method: str | None = None, options: dict | None = None) -> Callable:
    """Drop-in for ``torchdiffeq.odeint_dense``: solve from ``t0`` to ``t1`` and return ``evaluate(t)``,
    the state at time(s) ``t`` (float, 0-d or 1-d tensor) anywhere in between, from the interpolant of
    every accepted step (:meth:`nde.Solution.evaluate`: ``(*y0.shape)`` or ``(len(t), *y0.shape)``).

    torchdiffeq allows only ``dopri5`` and a tensor ``y0``; here every adaptive method is accepted
    (dopri5, tsit5 and dopri8 use their own interpolants, the others cubic Hermite) and ``y0`` may be a tuple.
    Gradients flow through the returned values as through :func:`odeint` (direct mode).
    """
    method = "dopri5" if method is None else TORCHDIFFEQ_NAMES.get(method, method)
    if options is not None and not isinstance(options, dict):
        raise TypeError("`options` must be a dict")
    if not get_tableau(method).adaptive:
        raise ValueError(f"`method`: odeint_dense needs an adaptive method, got {method!r}")
    for name, value in (("t0", t0), ("t1", t1)):
        if not torch.is_tensor(value) or value.numel() != 1:
            raise ValueError(f"`{name}` must be a tensor holding one time")
    t = torch.cat([t0.reshape(1), t1.reshape(1).to(t0)])
    result, ys, layout, problem, _ = _solve(
        func, y0, t, method=method, rtol=rtol, atol=atol, adjoint="direct", per_sample=False,
        **_odeint_options(method, options), throw=True, dense=True, heuristics=False, adjoint_params=None,
        adjoint_rtol=None, adjoint_atol=None, adjoint_method=None, adjoint_options=None, time_in_state_dtype=True)
    solution = Solution(ts=t, ys=ys, stats={}, status=torch.as_tensor(result.status), _dense=result.dense_steps,
                        _coeffs=problem.cfg.coeffs, _time_sign=_direction(t),
                        _unflatten=None if layout.is_plain else (lambda y: layout.unflatten(y, lead=(y.shape[0],))))
    return solution.evaluate


def _odeint_scipy(func, y0, t, rtol, atol, options: dict, adjoint: str):
    """``method="scipy_solver"`` (see :mod:`nde._scipy`): validated like every solve, no gradients."""
    if adjoint != "direct":
        raise ValueError("method 'scipy_solver' gives no gradients, so it has no adjoint; use an nde method")
    if not callable(func):
        raise TypeError("`func` must be callable as func(t, y)")
    tensors = _check_state(y0)
    t, _ = _check_times(t, False, None)
    rtol, atol = _tolerances(rtol, atol, y0, tensors, False)
    ys = scipy_odeint(func, tensors, t, rtol, atol, options)
    return ys if isinstance(y0, tuple) else ys[0]


def odeint_adjoint(func: Callable, y0, t: torch.Tensor, *, rtol=1e-7, atol=1e-9, method: str | None = None,
                   options: dict | None = None, event_fn=None, adjoint_rtol=None, adjoint_atol=None,
                   adjoint_method=None, adjoint_options=None, adjoint_params=None):
    """Drop-in replacement for ``torchdiffeq.odeint_adjoint``: the continuous (backsolve) adjoint.

    As in torchdiffeq, ``func`` must be an ``nn.Module`` unless ``adjoint_params`` is given.
    """
    if adjoint_params is None and not isinstance(func, torch.nn.Module):
        raise ValueError("`func` must be an nn.Module to infer the parameters; otherwise pass `adjoint_params`")
    return odeint(func, y0, t, rtol=rtol, atol=atol, method=method, options=options, event_fn=event_fn,
                  adjoint="backsolve", adjoint_params=adjoint_params, adjoint_rtol=adjoint_rtol,
                  adjoint_atol=adjoint_atol, adjoint_method=adjoint_method, adjoint_options=adjoint_options)


__all__ = ["solve_ode", "odeint", "odeint_adjoint", "odeint_dense", "odeint_event", "GRADIENT_MODES", "Status"]
