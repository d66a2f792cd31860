"""The integration loop: adaptive or fixed-grid RK stepping, shared or per-sample steps.

Shared mode (torchdiffeq semantics): the whole batch is one state, time and step size are Python
floats, and the only host synchronisation per step is reading the error ratio, which decides both
acceptance and termination. Per-sample mode: every row of ``y`` (shape (batch, d)) has its own t, dt,
accept/reject, output times and status; control is tensor arithmetic with masks, and the only
synchronisation per step is one small transfer (active count, outputs passed). Rows that finish are
dropped from the working batch once at most half of it is still active, so they stop costing work.

Times are always increasing here; the API layer maps decreasing time grids onto increasing ones.
"""
from __future__ import annotations

import bisect
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch

from ._rk import (Coefficients, Step, hermite_interpolate, host_tensor, interpolate, linear_interpolate, rk_step,
                  stage_times, stiffness_estimate)
from .controller import PIController, initial_step, initial_step_scalar
from .errors import SolverError, Status
from ._adams import Adams
from .events import Event, RowEvent


@dataclass
class Config:
    """Everything the loop needs besides the function, initial state and output times."""

    coeffs: Coefficients
    rtol: float | torch.Tensor
    atol: float | torch.Tensor
    controller: PIController
    t_dtype: torch.dtype
    first_step: float | None = None
    step_size: float | None = None           # fixed-grid methods: grid spacing (None: the output times)
    grid: tuple[float, ...] | None = None    # ... or the whole grid (torchdiffeq's grid_constructor)
    multistep: Adams | None = None           # fixed-grid Adams steps (coeffs: the start-up 3/8 rule)
    perturb: bool = False                    # fixed grid: f at t+ (first stage) and t1− (stages at c = 1)
    interp: str = "linear"                   # fixed-grid output interpolation: "linear", "cubic" or "dense"
                                             # (an adaptive method's own interpolant)
    min_step: float = 0.0
    max_step: float = math.inf
    max_steps: int = 2 ** 31 - 1
    max_steps_per_output: bool = False       # adaptive shared steps: max_steps counts the steps since the last output
                                             # time was reached (torchdiffeq's max_num_steps), not the whole solve
    norm: Callable | None = None             # shared mode: tensor -> scalar tensor (default RMS); per-sample:
                                             # (n, d) -> (n,) (default RMS of each row)
    throw: bool = True
    heuristics: bool = False                 # keep per-step error ratio and stiffness estimates
    record: bool = False                     # keep (t, dt, y) checkpoints for the discrete adjoint
    dense: bool = False                      # keep every accepted step for Solution.evaluate
    clip_to_outputs: bool = False            # end steps exactly on output times (no interpolation)
    clip_to_end: bool = False                # ... on the final output time only (interior outputs interpolated)
    regularizer: object = None               # a GlobalRegularizer: one differentiable term per accepted step
    step_points: tuple[float, ...] = ()      # increasing times that steps must land on (torchdiffeq step_t)
    jump_points: tuple[float, ...] = ()      # ... and where func may jump (jump_t): f re-evaluated after them
    event: Event | RowEvent | None = None    # end at this event (shared: output times [t0, t_end or inf];
                                             # per-sample: (batch, 2)); its start() already called


@dataclass
class Record:
    """One accepted step (shared) or one step of the working batch (per-sample), for replay.

    ``rows``: indices of the working rows in the full batch (per-sample mode), else None.
    ``accept``: per-row acceptance (per-sample mode), else None. ``outputs``: list of
    (output index, theta) in shared mode, (output index (rows,), mask (rows,), theta (rows,)) per-sample.
    """

    t: float | torch.Tensor
    dt: float | torch.Tensor
    y: torch.Tensor
    rows: torch.Tensor | None = None
    accept: torch.Tensor | None = None
    outputs: list = field(default_factory=list)
    t_next: torch.Tensor | None = None          # per-sample: each row's time after the step
    stage_t: list | None = None                 # stage times, when not t + c_i·dt (a step ending on a landing point)
    k1_t: torch.Tensor | None = None            # time of k1, when not t (just after a jump point)
    k1: torch.Tensor | None = None              # the first stage, when it was carried from the previous step
                                                # and is not f(t, y) (tableau.reuses_last_stage; per-sample:
                                                # every step's, the first step's being f(t0, y0))


@dataclass
class Result:
    ys: torch.Tensor                      # (T, *shape)
    # Shared steps: Python ints (no device transfers for what odeint discards); per-sample: (batch,) tensors.
    status: int | torch.Tensor            # Status codes
    nfe: int | torch.Tensor               # function evaluations (per sample: row-evaluations)
    n_accepted: int | torch.Tensor
    n_rejected: int | torch.Tensor
    heuristics: dict[str, torch.Tensor]   # "t", "dt", "error_ratio", "stiffness": (steps,) or (steps, batch)
    records: list[Record]
    dense_steps: list                     # (t, dt, y0, Step, kind, f1) per accepted step (shared mode): the
                                          # interpolant's kind (output_value) and f(t1, y1) for "cubic"
    fail: tuple[float, float] | None = None
    reg_terms: list = field(default_factory=list)   # the regulariser's term per accepted step
    t_event: float | torch.Tensor | None = None   # event solves: internal event time (per-sample: (batch,), NaN: none)


def step_index(starts: list[float], t: float) -> int:
    """Index of the accepted step whose interval contains ``t`` (``starts`` increasing)."""
    return max(0, min(bisect.bisect_right(starts, t) - 1, len(starts) - 1))


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """Root-mean-square over all elements (shared mode)."""
    return torch.linalg.vector_norm(x) / math.sqrt(max(x.numel(), 1))


def rms_norm_host(x: torch.Tensor) -> float:
    """:func:`rms_norm` as a Python float, the division by sqrt(n) done on the host (one tensor operation fewer)."""
    return float(torch.linalg.vector_norm(x)) / math.sqrt(max(x.numel(), 1))


def rms_rows(x: torch.Tensor) -> torch.Tensor:
    """Root-mean-square over each row of a (batch, d) tensor (per-sample mode) -> (batch,)."""
    return torch.linalg.vector_norm(x, dim=-1) / math.sqrt(max(x.shape[-1], 1))


def error_ratio(step: Step, y0: torch.Tensor, rtol, atol, norm: Callable) -> torch.Tensor:
    """EEst = ‖err / (atol + rtol·max(|y0|, |y1|))‖ (Hairer, Nørsett & Wanner I, eq. II.4.11)."""
    scale = torch.maximum(y0.abs(), step.y1.abs()).mul(rtol).add(atol)
    return norm(step.error / scale)


class HostErrorRatio:
    """:func:`error_ratio` with the default RMS norm and scalar tolerances as a Python float, in fewer tensor
    operations: |y| is carried from a step's end to the next step's start, atol + rtol·max(|y0|, |y1|) is one add
    with ``atol`` a 0-d tensor, and the RMS division happens on the host. For shared steps whose ratio nothing
    differentiates (no regulariser); on small states each tensor operation costs its dispatch. Float16/bfloat16
    states keep :func:`error_ratio` (a 0-d ``atol`` in their dtype could round to zero)."""

    def __init__(self, rtol: float, atol: float, y0: torch.Tensor):
        self.rtol = rtol
        self.atol = torch.tensor(atol, dtype=y0.dtype).to(y0.device, non_blocking=True)
        self.root_n = math.sqrt(max(y0.numel(), 1))
        self.known: list[tuple[torch.Tensor, torch.Tensor]] = []   # (y, |y|) of the last step's start and end

    @staticmethod
    def applies(cfg: Config, y0: torch.Tensor) -> bool:
        return (cfg.norm is None and cfg.regularizer is None and y0.dtype in (torch.float32, torch.float64)
                and not torch.is_tensor(cfg.rtol) and not torch.is_tensor(cfg.atol))

    def _abs(self, y: torch.Tensor) -> torch.Tensor:
        for known, magnitude in self.known:
            if known is y:
                return magnitude
        return y.abs()

    def __call__(self, step: Step, y0: torch.Tensor) -> float:
        if torch.is_grad_enabled():
            with torch.no_grad():
                return self._ratio(step, y0)
        return self._ratio(step, y0)   # no context manager to enter where there is no graph

    def _ratio(self, step: Step, y0: torch.Tensor) -> float:
        abs_y0, abs_y1 = self._abs(y0), step.y1.abs()
        self.known = [(y0, abs_y0), (step.y1, abs_y1)]
        scale = torch.add(self.atol, torch.maximum(abs_y0, abs_y1), alpha=self.rtol)
        return torch.linalg.vector_norm(step.error / scale).item() / self.root_n


def output_value(step: Step, y0: torch.Tensor, dt: float, theta: float, kind: str, coeffs: Coefficients,
                 k_next: torch.Tensor | None = None) -> torch.Tensor:
    """The state at an output time inside a step (shared mode), by the rule recorded in ``kind``:
    "end" (y1), "start" (y0), "dense" (the method's interpolant), "cubic" (Hermite), "linear"."""
    if kind == "end" or (kind == "dense" and theta == 1.0):
        return step.y1
    if kind == "start":
        return y0
    if kind == "linear":
        return linear_interpolate(y0, step.y1, theta)
    if kind == "cubic":   # asked for by name (a fixed grid's interp), also where the method has its own interpolant
        return hermite_interpolate(step, y0, dt, theta, coeffs, k_next=k_next)
    return interpolate(step, y0, dt, theta, coeffs, k_next=k_next)


def needs_end_slope(kind: str, tab) -> bool:
    """Whether an output of ``kind`` needs f(t1, y1) evaluated: cubic Hermite does, unless the method carries
    that slope as its last stage."""
    return kind == "cubic" and not tab.carries_last_stage


def partial_step(func: Callable, t: float, dt: float, theta: float, y0: torch.Tensor, k1: torch.Tensor,
                 coeffs: Coefficients, t_dtype, device) -> torch.Tensor:
    """y(t + θ·dt) by a fresh step of the method from (t, y0) (output kind "step": an event inside a step
    of a method whose only interpolant, cubic Hermite, is far below its order)."""
    h = theta * dt
    return rk_step(func, t, h, y0, k1, coeffs, stage_times(t, h, coeffs, t_dtype, device), error_grad=False).y1


def _locate_event(event: Event, func: Callable, step: Step, y0: torch.Tensor, t: float, dt: float, t_end: float,
                  kind: str, coeffs: Coefficients, k_next, t_dtype, device) -> tuple[float, int]:
    """The event time inside the step (t, t_end] whose end crossed it, and the evaluations it cost:
    bisection on the step's interpolant (``kind`` as in :func:`output_value`), or for kind "step" on
    fresh steps of the method from t (:func:`partial_step`)."""
    calls = 0

    def state_at(s: float) -> torch.Tensor:
        nonlocal calls
        theta = (s - t) / dt
        if kind == "step" and theta not in (0.0, 1.0):
            calls += 1
            return partial_step(func, t, dt, theta, y0, step.ks[0], coeffs, t_dtype, device)
        return output_value(step, y0, dt, theta, kind, coeffs, k_next)
    t_event = event.locate(state_at, t, t_end, costly=kind == "step")
    return t_event, calls * (coeffs.tableau.stages - 1)


def _resolution_hint(cfg: Config, dtype: torch.dtype) -> str:
    """Why steps may shrink without end: tolerances below what the state's dtype resolves."""
    eps = torch.finfo(dtype).eps
    rtol = float(cfg.rtol.min()) if torch.is_tensor(cfg.rtol) else cfg.rtol
    atol = float(cfg.atol.min()) if torch.is_tensor(cfg.atol) else cfg.atol
    if rtol < eps and atol < eps:
        return f"rtol={rtol:g} and atol={atol:g} are below the resolution of {dtype} (eps {eps:.2g})"
    return ""


def _t(t: float, dtype, device) -> torch.Tensor:
    return host_tensor(t, dtype, device)


def _unwrapped(func: Callable, t_dtype: torch.dtype) -> Callable:
    """After the first evaluation: the user's function without the API's output check where calling it needs
    nothing else (:meth:`nde.api._CheckedFunc.unwrapped`); any other callable as it is."""
    unwrapped = getattr(func, "unwrapped", None)
    return func if unwrapped is None else unwrapped(t_dtype)


def warn_forced_steps(forced: int, min_step: float, name: str = "min_step") -> None:
    """Steps at ``min_step`` (the option ``name``) are accepted whatever their error (as torchdiffeq's and torchsde's);
    say so where it happened, so that a solution that does not meet the tolerances is not silently a success."""
    if forced:
        warnings.warn(f"{int(forced)} step(s) at {name}={min_step:g} were accepted with an error estimate above "
                      f"the tolerances: the solution may not meet rtol/atol (lower {name})", stacklevel=4)


def _fail(cfg: Config, status: Status, t: float, dt: float, detail: str = ""):
    if cfg.throw:
        raise SolverError(status, t, dt, detail)


# --------------------------------------------------------------------------------------------
# Shared steps
# --------------------------------------------------------------------------------------------

def integrate_shared(func: Callable, y0: torch.Tensor, t_out: list[float], cfg: Config) -> Result:
    """Solve with one step size for the whole state; ``t_out`` increasing Python floats.

    Adaptive methods given a ``step_size`` take fixed steps (no error control)."""
    if cfg.coeffs.tableau.adaptive and cfg.step_size is None:
        return _adaptive_shared(func, y0, t_out, cfg)
    return _fixed_shared(func, y0, t_out, cfg)


def _finish_shared(outputs: list, n_out: int, y0: torch.Tensor, status: Status, nfe: int, n_acc: int,
                   n_rej: int, heur: dict, records, dense_steps, fail=None, reg_terms=None,
                   t_event: float | None = None) -> Result:
    while len(outputs) < n_out:  # a failed solve (throw=False): unreached outputs are NaN
        outputs.append(torch.full_like(y0, float("nan")))
    return Result(
        ys=torch.stack(outputs), status=int(status), nfe=nfe, n_accepted=n_acc, n_rejected=n_rej,
        heuristics=_stack_heuristics(heur),
        records=records, dense_steps=dense_steps, fail=fail, reg_terms=reg_terms or [], t_event=t_event)


def _stack_heuristics(heur: dict) -> dict[str, torch.Tensor]:
    out = {}
    for key, values in heur.items():
        if not values:
            continue
        if torch.is_tensor(values[0]):
            out[key] = torch.stack(values)
        else:
            out[key] = torch.tensor(values, dtype=torch.float64)
    return out


def _adaptive_shared(func, y0, t_out, cfg: Config) -> Result:
    coeffs, tab, ctrl = cfg.coeffs, cfg.coeffs.tableau, cfg.controller
    dev, tdt = y0.device, cfg.t_dtype
    norm = cfg.norm or rms_norm
    k_exp = tab.error_order + 1
    host_ratio = HostErrorRatio(cfg.rtol, cfg.atol, y0) if HostErrorRatio.applies(cfg, y0) else None
    t = t_out[0]
    t0_tensor = _t(t, tdt, dev)
    f0 = func(t0_tensor, y0)
    func, nfe = _unwrapped(func, tdt), 1
    if cfg.first_step is None:
        with torch.no_grad():
            dt = initial_step_scalar(func, t, t0_tensor, y0, f0, tab.error_order, cfg.rtol, cfg.atol,
                                     rms_norm_host if cfg.norm is None else lambda x: float(norm(x)))
        nfe += 1
    else:
        dt = float(cfg.first_step)
    dt = min(max(dt, cfg.min_step), cfg.max_step)
    outputs, j = [y0], 1
    y, k1 = y0, f0
    prev_ratio, n_acc, n_rej, forced = 1e-4, 0, 0, 0
    heur = {"t": [], "dt": [], "error_ratio": [], "stiffness": []}
    records, dense_steps, reg_terms = [], [], []
    reg = cfg.regularizer
    landings, k1_t = _Landings(cfg.step_points, cfg.jump_points, t), None
    t_limit, t_event, event = _time_limit(tdt, y0.dtype), None, cfg.event
    want_stiffness = cfg.heuristics or (reg is not None and reg.needs_stiffness)
    counted_from = 0   # steps taken before the count of max_steps starts (per output: when the last output was reached)
    while j < len(t_out):
        if n_acc + n_rej - counted_from >= cfg.max_steps:
            _fail(cfg, Status.MAX_STEPS, t, dt, f"max_steps={cfg.max_steps}"
                  + (" since the last output time" if cfg.max_steps_per_output else ""))
            return _finish_shared(outputs, len(t_out), y0, Status.MAX_STEPS, nfe, n_acc, n_rej, heur,
                                  records, dense_steps, (t, dt), reg_terms)
        if event is not None and not abs(t + dt) < t_limit:   # an event solve has no finite end
            _fail(cfg, Status.NO_EVENT, t, dt)
            return _finish_shared(outputs, len(t_out), y0, Status.NO_EVENT, nfe, n_acc, n_rej, heur,
                                  records, dense_steps, (t, dt), reg_terms)
        target = t_out[j] if cfg.clip_to_outputs else t_out[-1] if cfg.clip_to_end else None
        clipped = target is not None and t + dt >= target
        if clipped:
            dt = target - t
        landing, jump = landings.within(t, dt)
        if landing is not None:
            dt = landing - t
        times = stage_times(t, dt, coeffs, tdt, dev)
        if landing is not None:
            times = _land_stage_times(times, tab.c, landing, tdt, dev)
        step = rk_step(func, t, dt, y, k1, coeffs, times, want_stiffness=want_stiffness, error_grad=reg is not None)
        nfe += tab.stages - 1
        if host_ratio is not None:   # the one host synchronisation of the step
            ratio_t, ratio = None, host_ratio(step, y)
        else:
            with torch.set_grad_enabled(reg is not None and torch.is_grad_enabled()):
                ratio_t = error_ratio(step, y, cfg.rtol, cfg.atol, norm)
            ratio = ratio_t.item()
        finite = math.isfinite(ratio)
        accept = finite and (ratio <= 1.0 or dt <= cfg.min_step)
        if accept:
            forced += ratio > 1.0
            t_new = landing if landing is not None else target if clipped else t + dt
            rho_t = None
            if reg is not None and reg.needs_stiffness:  # differentiable: the regulariser uses it
                rho_t = stiffness_estimate(step, coeffs, norm)
            if reg is not None:
                reg_terms.append(reg.term(ratio_t, dt, rho_t, tab))
            if cfg.heuristics:
                heur["t"].append(t)
                heur["dt"].append(dt)
                heur["error_ratio"].append(ratio)
                if rho_t is None:
                    with torch.no_grad():
                        rho_t = stiffness_estimate(step, coeffs, norm)
                heur["stiffness"].append(host_tensor(float("nan"), None, dev) if rho_t is None
                                         else rho_t.detach())
            kind = "dense"
            if event is not None and event.crossed(t_new, step.y1):   # t_out was [t0, inf]
                kind = "step" if cfg.clip_to_outputs or cfg.clip_to_end else "dense"   # Hermite far below order
                located, extra = _locate_event(event, func, step, y, t, dt, t_new, kind, coeffs, None, tdt, dev)
                nfe += extra
                if located <= t_out[-1]:   # before the end of the solve (odeint's is inf)
                    t_out, t_event = [t_out[0], located], located
            outs = []
            while j < len(t_out) and t_out[j] <= t_new:
                theta = (t_out[j] - t) / dt
                theta = 1.0 if t_out[j] == t_new else theta
                if kind == "step":
                    outputs.append(partial_step(func, t, dt, theta, y, step.ks[0], coeffs, tdt, dev))
                    nfe += tab.stages - 1
                else:
                    outputs.append(output_value(step, y, dt, theta, kind, coeffs))
                outs.append((j, theta, kind))
                j += 1
            if cfg.record:
                carried = tab.reuses_last_stage and n_acc > 0 and k1_t is None
                records.append(Record(t, dt, y.detach(), outputs=outs, stage_t=times if landing is not None else None,
                                      k1_t=k1_t, k1=k1.detach() if carried else None))
            if cfg.dense:
                dense_steps.append((t, dt, y, step, "dense", None))
            y, k1, t, k1_t = step.y1, step.ks[-1], t_new, None
            if jump:  # f may differ on this side of the jump: the FSAL stage was taken just before it
                k1_t = torch.nextafter(_t(t, tdt, dev), _t(math.inf, tdt, dev))
                k1 = func(k1_t, y)
                nfe += 1
            landings.passed(t)
            n_acc += 1
            if outs and cfg.max_steps_per_output:
                counted_from = n_acc + n_rej
        else:
            n_rej += 1
        stuck = not finite and dt <= cfg.min_step   # a non-finite step at min_step: shrinking cannot help
        dt = min(max(dt * ctrl.factor(ratio, prev_ratio, accept, k_exp), cfg.min_step), cfg.max_step)
        if accept:
            prev_ratio = ratio
        if j < len(t_out) and (t + dt == t or not 0.0 < dt < math.inf or stuck):   # also a NaN or infinite step
            status = Status.DT_UNDERFLOW if finite and 0.0 < dt < math.inf else Status.NONFINITE
            _fail(cfg, status, t, dt, _resolution_hint(cfg, y0.dtype) if status == Status.DT_UNDERFLOW else "")
            return _finish_shared(outputs, len(t_out), y0, status, nfe, n_acc, n_rej, heur, records,
                                  dense_steps, (t, dt), reg_terms)
    warn_forced_steps(forced, cfg.min_step)
    return _finish_shared(outputs, len(t_out), y0, Status.SUCCESS, nfe, n_acc, n_rej, heur, records,
                          dense_steps, None, reg_terms, t_event=t_event)


class _Landings:
    """The step and jump points ahead of the solve (torchdiffeq's ``step_t`` / ``jump_t``)."""

    def __init__(self, step_points, jump_points, t0: float):
        self.points = sorted([(p, False) for p in step_points if p > t0] + [(p, True) for p in jump_points if p > t0])
        self.next = 0

    def within(self, t: float, dt: float) -> tuple[float | None, bool]:
        """The first point strictly inside (t, t + dt) and whether it is a jump, or (None, False)."""
        if self.next < len(self.points):
            point, jump = self.points[self.next]
            if t < point < t + dt:
                return point, jump
        return None, False

    def passed(self, t: float) -> None:
        while self.next < len(self.points) and self.points[self.next][0] <= t:
            self.next += 1


def _next_time(t: float, towards: float, t_dtype, device) -> torch.Tensor:
    """The float of ``t_dtype`` next to ``t`` in the direction of ``towards``, as a tensor."""
    return torch.nextafter(_t(t, t_dtype, device), _t(towards, t_dtype, device))


def _land_stage_times(times: list, c: tuple, landing: float, t_dtype, device) -> list:
    """Stages at c = 1 of a step ending on a landing point evaluate just before it, on the side the
    step integrates over (as torchdiffeq does), in case ``func`` is discontinuous there."""
    end = _next_time(landing, -math.inf, t_dtype, device)
    return [end if ci == 1 else ti for ci, ti in zip(c, times)]


def fixed_grid_steps(t_out: list[float], step_size: float | None, t_dtype: torch.dtype) -> int:
    """Number of steps of :func:`fixed_grid`, known before the grid is built.

    ``ceil((t_end − t0) / step_size + 1) − 1`` in the dtype of ``t``, as torchdiffeq computes it: in
    float64, a float32 ``step_size = t[1] − t[0]`` of ``linspace(0, 1, 32)`` gives 31.0000009 and a
    32nd step of 3e-8 (four wasted evaluations with rk4)."""
    if step_size is None:
        return len(t_out) - 1
    ends = torch.tensor([t_out[0], t_out[-1]], dtype=t_dtype)
    return int(torch.ceil((ends[1] - ends[0]) / step_size + 1)) - 1


def fixed_grid(t_out: list[float], step_size: float | None, n_steps: int, t_dtype, device) -> list[float]:
    """torchdiffeq's grid: the output times, or t0 + n·step_size (n < ``n_steps``, from
    :func:`fixed_grid_steps`) and t_end."""
    if step_size is None:
        return list(t_out)
    t0, t1 = t_out[0], t_out[-1]
    grid = (torch.arange(0, n_steps + 1, dtype=t_dtype, device=device) * step_size + t0).tolist()
    grid[-1] = t1
    return grid


def _fixed_shared(func, y0, t_out, cfg: Config) -> Result:
    coeffs, tab = cfg.coeffs, cfg.coeffs.tableau
    dev, tdt = y0.device, cfg.t_dtype
    if cfg.event is not None and t_out[-1] == math.inf:   # odeint's event solve: no end time
        steps = _event_grid(t_out[0], cfg.step_size, cfg.max_steps)
    else:
        n_steps = len(cfg.grid) - 1 if cfg.grid is not None else fixed_grid_steps(t_out, cfg.step_size, tdt)
        if n_steps > cfg.max_steps:  # checked before the grid exists: a tiny step_size must not fill memory
            dt = cfg.step_size if cfg.step_size is not None else t_out[1] - t_out[0]
            _fail(cfg, Status.MAX_STEPS, t_out[0], dt, f"the grid needs {n_steps} steps, max_steps={cfg.max_steps}")
            return _finish_shared([y0], len(t_out), y0, Status.MAX_STEPS, 0, 0, 0, {}, [], [], (t_out[0], dt))
        grid = list(cfg.grid) if cfg.grid is not None else fixed_grid(t_out, cfg.step_size, n_steps, tdt, dev)
        steps = zip(grid[:-1], grid[1:])
    stepper = None if cfg.multistep is None else cfg.multistep.stepper(func, coeffs, cfg.rtol, cfg.atol, tdt, dev,
                                                                     cfg.perturb)
    outputs, j, y, nfe, n = [y0], 1, y0, 0, 0
    records, dense_steps = [], []
    k1, t, dt, t_event, k1_t = None, t_out[0], cfg.step_size, None, None
    for t, t_next in steps:
        dt = t_next - t
        carried = tab.reuses_last_stage and k1 is not None
        if k1 is None:
            k1_t = _t(t, tdt, dev) if not cfg.perturb else _next_time(t, math.inf, tdt, dev)
            k1 = func(k1_t, y)
            nfe += 1
        times = stage_times(t, dt, coeffs, tdt, dev)
        if cfg.perturb:   # torchdiffeq's perturb: stages at c = 1 just before t1
            times = _land_stage_times(times, tab.c, t_next, tdt, dev)
        if stepper is None:
            step = rk_step(func, t, dt, y, k1, coeffs, times)
            nfe += tab.stages - 1
        else:
            step, evaluations = stepper.step(t, dt, y, k1)
            nfe += evaluations
        n += 1
        k_next = None
        if cfg.event is not None and cfg.event.crossed(t_next, step.y1):   # t_out was [t0, inf]
            if needs_end_slope(cfg.interp, tab):
                k_next = func(_t(t_next, tdt, dev), step.y1)
                nfe += 1
            located, _ = _locate_event(cfg.event, func, step, y, t, dt, t_next, cfg.interp, coeffs, k_next, tdt, dev)
            if located <= t_out[-1]:   # before the end of the solve (odeint's is inf)
                t_out, t_event = [t_out[0], located], located
        outs = []
        while j < len(t_out) and t_out[j] <= t_next:
            kind = ("end" if t_out[j] == t_next else "start" if t_out[j] == t else cfg.interp)
            if needs_end_slope(kind, tab) and k_next is None:
                k_next = func(_t(t_next, tdt, dev), step.y1)
                nfe += 1
            theta = (t_out[j] - t) / dt
            outputs.append(output_value(step, y, dt, theta, kind, coeffs, k_next))
            outs.append((j, theta, kind))
            j += 1
        if cfg.record:
            records.append(Record(t, dt, y.detach(), outputs=outs, stage_t=times if cfg.perturb else None,
                                  k1_t=k1_t if cfg.perturb else None, k1=k1.detach() if carried else None))
        if cfg.dense:   # adaptive methods taking fixed steps keep their own interpolant
            kind = "dense" if tab.adaptive else cfg.interp
            if needs_end_slope(kind, tab) and k_next is None:   # the Hermite end slope; the next step reuses it
                k_next = func(_t(t_next, tdt, dev), step.y1)
                nfe += 1
            dense_steps.append((t, dt, y, step, kind, k_next))
        y = step.y1
        k1 = step.ks[-1] if tab.carries_last_stage else (None if cfg.perturb else k_next)   # perturb: f at t1+
        if j == len(t_out):
            break
    if j < len(t_out):  # an event solve whose event did not happen within max_steps
        _fail(cfg, Status.MAX_STEPS, t, dt, f"no event within max_steps={cfg.max_steps}")
        return _finish_shared(outputs, len(t_out), y0, Status.MAX_STEPS, nfe, n, 0, {}, records, dense_steps,
                              (t, dt))
    return _finish_shared(outputs, len(t_out), y0, Status.SUCCESS, nfe, n, 0,
                          {}, records, dense_steps, t_event=t_event)


def _time_limit(t_dtype: torch.dtype, dtype: torch.dtype) -> float:
    """Largest |t + dt| an event solve steps to: 1e-3 of the largest float of the time and state dtypes,
    so that t, dt and dt times a tableau coefficient stay finite."""
    return 1e-3 * min(torch.finfo(t_dtype).max, torch.finfo(dtype).max)


def _event_grid(t0: float, step_size: float, max_steps: int):
    """Steps (t0 + n·h, t0 + (n+1)·h) of a fixed-step event solve, n < ``max_steps``."""
    return ((t0 + n * step_size, t0 + (n + 1) * step_size) for n in range(max_steps))


# --------------------------------------------------------------------------------------------
# Per-sample steps
# --------------------------------------------------------------------------------------------

@dataclass
class _Batch:
    """Working state of the rows still being integrated (per-sample mode)."""

    rows: torch.Tensor        # (n,) indices into the full batch
    t: torch.Tensor           # (n,)
    dt: torch.Tensor          # (n,)
    y: torch.Tensor           # (n, d)
    k1: torch.Tensor          # (n, d)
    prev: torch.Tensor        # (n,) previous accepted error ratio
    out_idx: torch.Tensor     # (n,) next output index
    active: torch.Tensor      # (n,) bool
    n_acc: torch.Tensor       # (n,) accepted steps so far
    n_tried: torch.Tensor     # (n,) steps tried so far (accepted or rejected)

    def select(self, keep: torch.Tensor) -> "_Batch":
        return _Batch(*(getattr(self, name)[keep] for name in
                        ("rows", "t", "dt", "y", "k1", "prev", "out_idx", "active", "n_acc", "n_tried")))

    def save_counts(self, n_acc: torch.Tensor, n_tried: torch.Tensor) -> None:
        """Write the working rows' step counts into the full-batch ``n_acc`` and ``n_tried`` (batch,)."""
        n_acc[self.rows] = self.n_acc
        n_tried[self.rows] = self.n_tried


def integrate_per_sample(func: Callable, y0: torch.Tensor, t_out: torch.Tensor, cfg: Config) -> Result:
    """Solve every row of ``y0`` (batch, d) on its own adaptive grid; ``t_out`` is (batch, T),
    increasing along T. ``func(t, y)`` receives ``t`` of shape (n,) and ``y`` of shape (n, d) for
    the n rows still active, and must treat rows independently."""
    coeffs, tab, ctrl = cfg.coeffs, cfg.coeffs.tableau, cfg.controller
    if not tab.adaptive:
        raise ValueError(f"per-sample steps need an adaptive method; {tab.name!r} is fixed-step "
                         "(use the shared mode, where the fixed grid is common to the batch)")
    B, T = t_out.shape
    dev, tdt = y0.device, cfg.t_dtype
    k_exp = tab.error_order + 1
    norm = cfg.norm or rms_rows
    t0 = t_out[:, 0]
    f0 = func(t0, y0)
    if cfg.first_step is None:
        with torch.no_grad():
            dt0 = initial_step(func, t0, y0, f0, tab.error_order, cfg.rtol, cfg.atol, norm).to(tdt)
        evals = 2
    else:
        dt0 = torch.full((B,), float(cfg.first_step), dtype=tdt, device=dev)
        evals = 1
    dt0 = dt0.clamp(cfg.min_step, cfg.max_step)
    ys = y0.new_zeros((T,) + tuple(y0.shape))
    ys[0] = y0
    active = torch.full((B,), T > 1, dtype=torch.bool, device=dev)
    n_active = B if T > 1 else 0
    if cfg.event is not None:   # rows whose event holds at t0 end there (t_out[:, 1] = t0): nothing to integrate
        active &= t_out[:, 1] != t0
        ys[1:, ~active] = y0[~active]
        dt0 = torch.where(active, dt0, 0.0)
        n_active = int(active.sum())
    n_acc = torch.zeros(B, dtype=torch.long, device=dev)
    n_tried = torch.zeros(B, dtype=torch.long, device=dev)
    status = torch.zeros(B, dtype=torch.long, device=dev)
    fail_t = torch.zeros(B, dtype=tdt, device=dev)
    fail_dt = torch.zeros(B, dtype=tdt, device=dev)
    heur_steps = []                     # per step: (rows, accept, t, dt, error ratio, stiffness or None)
    records, forced = [], 0             # forced: rows accepted at min_step with an error ratio above 1
    extra_evals = torch.zeros(B, dtype=torch.long, device=dev)   # steps re-taken by _retake_without_rejected
    batch = _Batch(torch.arange(B, device=dev), t0.clone(), dt0, y0, f0,
                   torch.full((B,), 1e-4, dtype=y0.dtype, device=dev),
                   torch.where(active, 1, T), active, n_acc.clone(), n_tried.clone())
    while n_active > 0:
        b = batch
        rows_t_out = t_out[b.rows]                                         # (n, T)
        if cfg.clip_to_outputs:
            next_out = rows_t_out.gather(1, b.out_idx.clamp_max(T - 1).unsqueeze(1)).squeeze(1)
            clipped = b.t + b.dt >= next_out
            b.dt = torch.where(clipped, next_out - b.t, b.dt)
        times = stage_times(b.t, b.dt, coeffs, tdt, dev)
        step = rk_step(func, b.t, b.dt.to(y0.dtype), b.y, b.k1, coeffs, times, want_stiffness=cfg.heuristics,
                       error_grad=False)
        with torch.no_grad():
            ratio = error_ratio(step, b.y, cfg.rtol, cfg.atol, norm)
            finite = torch.isfinite(ratio)
            accept = b.active & finite & ((ratio <= 1.0) | (b.dt <= cfg.min_step))
            t_end = torch.where(clipped, next_out, b.t + b.dt) if cfg.clip_to_outputs else b.t + b.dt
            t_new = torch.where(accept, t_end, b.t)
            if cfg.event is not None:
                _row_events(cfg.event, step, b, accept, t_new, rows_t_out, t_out, coeffs)
            passed = (rows_t_out <= t_new.unsqueeze(1)).sum(1)
            n_pass = torch.where(accept, passed - b.out_idx, 0).clamp_min(0)
            fac = ctrl.factor_tensor(ratio, b.prev, accept, k_exp)
            dt_new = (b.dt * fac.to(tdt)).clamp(cfg.min_step, cfg.max_step)
            not_done = (b.out_idx + n_pass) < T
            underflow = not_done & ((t_new + dt_new == t_new) | ~(dt_new > 0) | torch.isinf(dt_new))   # also NaN, inf
            if cfg.min_step > 0:   # non-finite at min_step: shrinking cannot help
                underflow |= not_done & ~finite & (b.dt <= cfg.min_step)
            too_many = not_done & (b.n_tried >= cfg.max_steps - 1)   # this step was the max_steps-th
            new_status = torch.where(underflow, torch.where(finite, int(Status.DT_UNDERFLOW), int(Status.NONFINITE)),
                                     torch.where(too_many, int(Status.MAX_STEPS), 0))
            still = b.active & not_done & (new_status == 0)
            optional = {}   # read only where they can matter
            if step.y1.requires_grad:   # a non-finite rejected row must then leave the graph (below)
                optional["nonfinite"] = (b.active & ~finite).any()
            if cfg.min_step > 0:
                optional["forced"] = (accept & (ratio > 1.0)).sum()
            flags = torch.stack([still.sum(), n_pass.max() if n_pass.numel() else n_pass.sum(),
                                 (new_status * b.active).max(), *optional.values()]).tolist()  # the one host sync
        n_active, max_pass, any_fail = flags[:3]
        read = dict(zip(optional, flags[3:]))
        forced += read.get("forced", 0)
        if read.get("nonfinite"):
            step = _retake_without_rejected(func, b, accept, coeffs, tdt, dev, y0.dtype, cfg.heuristics)
            extra_evals[b.rows] += tab.stages - 1
        outs = []
        if max_pass:
            span = torch.where(b.dt > 0, b.dt, 1.0)   # rows that finished, failed or never started step by 0
        for jj in range(max_pass):
            idx = (b.out_idx + jj).clamp_max(T - 1)
            mask = jj < n_pass
            t_q = rows_t_out.gather(1, idx.unsqueeze(1)).squeeze(1)
            theta = ((t_q - b.t) / span).clamp(0.0, 1.0)
            value = interpolate(step, b.y, b.dt.to(y0.dtype), theta, coeffs)
            value = torch.where((t_q == t_new).unsqueeze(1), step.y1, value)
            ys.index_put_((idx, b.rows), torch.where(mask.unsqueeze(1), value, ys[idx, b.rows]))
            outs.append((idx, mask, theta))
        if cfg.heuristics:
            with torch.no_grad():
                rho = stiffness_estimate(step, coeffs, norm)
            heur_steps.append((b.rows, accept, b.t, b.dt, ratio, rho))
        if cfg.record:
            records.append(Record(b.t, b.dt, b.y.detach(), rows=b.rows, accept=accept, outputs=outs, t_next=t_new,
                                  k1=b.k1.detach() if tab.reuses_last_stage else None))
        if any_fail:
            failed = b.active & (new_status != 0)
            status.index_put_((b.rows[failed],), new_status[failed])
            fail_t.index_put_((b.rows[failed],), t_new[failed])   # outputs up to here were reached
            fail_dt.index_put_((b.rows[failed],), dt_new[failed])
            if cfg.throw:
                first = int(failed.nonzero()[0])
                raise SolverError(Status(int(new_status[first])), float(b.t[first]), float(dt_new[first]),
                                  f"batch element {int(b.rows[first])}")
        acc2 = accept.unsqueeze(1)
        # Rows that finished or failed stay in the working batch until it shrinks: they step by 0, so that func is
        # not evaluated past their end (where it may be NaN, which 0·NaN would carry into every gradient).
        batch = _Batch(b.rows, t_new, torch.where(still, dt_new, 0.0), torch.where(acc2, step.y1, b.y),
                       torch.where(acc2, step.ks[-1], b.k1),
                       torch.where(accept, ratio, b.prev), b.out_idx + n_pass, still, b.n_acc + accept,
                       b.n_tried + b.active)
        if 0 < n_active <= batch.rows.numel() // 2:
            batch.save_counts(n_acc, n_tried)
            batch = batch.select(still.nonzero().squeeze(1))
            if hasattr(func, "rows_changed"):   # the API's checked field: check the smaller batch's output once
                func.rows_changed()
    batch.save_counts(n_acc, n_tried)
    warn_forced_steps(forced, cfg.min_step)
    n_rej = n_tried - n_acc
    nfe = evals + (tab.stages - 1) * n_tried + extra_evals   # each step tried evaluates every stage but the first
    # Outputs that a failed sample did not reach are NaN.
    unreached = ((status != 0).unsqueeze(1) & (t_out > fail_t.unsqueeze(1))).T          # (T, batch)
    ys = torch.where(unreached.unsqueeze(-1), torch.full_like(ys, float("nan")), ys)
    return Result(ys, status, nfe, n_acc, n_rej, _scatter_heuristics(heur_steps, B, y0), records, [],
                  t_event=None if cfg.event is None else cfg.event.times)


def _retake_without_rejected(func: Callable, b: "_Batch", accept: torch.Tensor, coeffs: Coefficients, t_dtype,
                             device, dtype: torch.dtype, want_stiffness: bool) -> Step:
    """The step of the working batch taken again with the rejected rows' step set to 0 (their results are not
    used): a rejected row whose trial step overflowed leaves inf in the graph, and the zero gradient that
    ``torch.where`` sends it becomes NaN (0·inf) in every parameter's gradient. Accepted rows compute exactly
    what they did (rows are independent). Only under autograd, and only after a non-finite rejection."""
    dt = torch.where(accept, b.dt, 0.0)
    times = stage_times(b.t, dt, coeffs, t_dtype, device)
    return rk_step(func, b.t, dt.to(dtype), b.y, b.k1, coeffs, times, want_stiffness=want_stiffness, error_grad=False)


def _row_events(event: RowEvent, step: Step, b: "_Batch", accept: torch.Tensor, t_new: torch.Tensor,
                rows_t_out: torch.Tensor, t_out: torch.Tensor, coeffs: Coefficients) -> None:
    """Per-sample events (t_out is (batch, 2)): a row whose event function crossed zero within its
    accepted step, before its end time, ends at the event: its end time becomes the event time, in
    ``t_out``, in the working copy ``rows_t_out`` and in ``event.times``. One extra host read per step."""
    g_end = event.values(b.rows, t_new, step.y1)
    crossed = accept & (g_end <= 0)
    any_crossed, any_nan = torch.stack([crossed.any(), (accept & torch.isnan(g_end)).any()]).tolist()
    if any_nan:
        raise ValueError("`event_fn` returned NaN")
    if not any_crossed:
        return
    idx = crossed.nonzero().squeeze(1)
    part = Step(step.y1[idx], [k[idx] for k in step.ks], None, None)
    y_start, t_start, dt = b.y[idx], b.t[idx], b.dt[idx]

    def state_at(s: torch.Tensor) -> torch.Tensor:
        return interpolate(part, y_start, dt.to(y_start.dtype), (s - t_start) / dt, coeffs)
    located = event.locate(b.rows[idx], state_at, t_start, t_new[idx])
    hit = located <= rows_t_out[idx, 1]
    rows, times = b.rows[idx[hit]], located[hit]
    t_out[rows, 1] = times
    rows_t_out[idx[hit], 1] = times
    event.times[rows] = times


def _scatter_heuristics(steps: list, batch: int, like: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-step records of the working rows -> (steps, batch) tensors, NaN where a row did not accept."""
    if not steps:
        return {}
    out = {}
    names = ("t", "dt", "error_ratio", "stiffness")
    for k, name in enumerate(names):
        if steps[0][2 + k] is None:
            continue
        table = like.new_full((len(steps), batch), float("nan"))
        for i, (rows, accept, *values) in enumerate(steps):
            table[i, rows] = torch.where(accept, values[k].to(like.dtype), table[i, rows])
        out[name] = table
    return out
