"""Public SDE entry points: ``sdeint`` / ``sdeint_adjoint`` (drop-in for torchsde 0.2.6) and ``solve_sde``.

Inputs are validated once here, with messages that name the argument; the loops in
:mod:`nde.sde.integrate` and :mod:`nde.sde.adjoint` then run without per-step checks.
"""
from __future__ import annotations

import math
import random
from typing import Optional

import torch

from .._checks import check_resolvable_tolerances
from ..controller import PIController
from ..errors import SolverError, Status
from ..regularize import LocalErrorEstimate
from ..solution import Solution
from . import adjoint as _adjoint
from .brownian import BrownianGrid, BrownianPath
from .integrate import ADAPTIVE_MAX_STEPS, FIXED_MAX_STEPS, Grid, NoiseSource, fixed_grid, run_adaptive, run_fixed
from .methods import default_method, select_method
from .protocol import SDE, LogqpSDE
from .regularize import regularization_hook

GRADIENTS = ("direct", "backsolve", "reversible")


def solve_sde(sde, y0, ts, bm=None, method: Optional[str] = None, dt: float = 1e-3, adaptive: bool = False,
              rtol: float = 1e-5, atol: float = 1e-4, dt_min: float = 1e-5, gradient: str = "direct",
              adjoint_method: str = "midpoint", adjoint_params=None, options: Optional[dict] = None,
              names: Optional[dict] = None, extra_solver_state: Optional[tuple] = None,
              entropy: Optional[int] = None, controller: Optional[PIController] = None, regularize=None,
              generator: Optional[random.Random] = None) -> Solution:
    """Solve an SDE and return the core's :class:`nde.Solution`.

    Args:
        sde: torchsde-style object (see :mod:`nde.sde.protocol`).
        y0: ``(batch, d)`` initial state.
        ts: increasing output times (1-D tensor or sequence), ``ts[0]`` is the time of ``y0``.
        bm: a Brownian path (``bm(ta, tb)`` -> ``(batch, m)``); default, seeded with ``entropy``, a
            fresh :class:`BrownianGrid` on the step nodes for fixed steps (nothing stored: memory flat
            in the number of steps), a :class:`BrownianPath` for adaptive steps or a local regulariser
            (fast, but it keeps every queried point; pass a :class:`BrownianTree` to bound that memory).
        method: see :data:`nde.sde.methods.METHOD_NAMES`; default as torchsde.
        dt: fixed step (or initial step when ``adaptive``).
        options: ``{'grad_free': True}`` (derivative-free Milstein) and ``{'max_steps': n}``: the
            most steps a solve may take (default 10^6 fixed steps, checked before the first step,
            or 10^5 attempted adaptive steps); more is a :class:`nde.SolverError`, not a hang.
        gradient: ``"direct"`` (autograd through the steps), ``"backsolve"`` (stochastic adjoint,
            backward solved with ``adjoint_method``) or ``"reversible"`` (``method='reversible_heun'``,
            exact gradients, memory flat in the number of steps).
        adjoint_params: tensors to differentiate in the adjoint modes (default: ``sde.parameters()``).
        controller: step-size controller of adaptive solves (default :class:`nde.PIController`).
        regularize: a regulariser from :mod:`nde.regularize` (see :mod:`nde.sde.regularize`):
            ``ErrorEstimate``, ``StiffnessEstimate``, ``StepDensity`` (``adaptive=True``,
            ``gradient="direct"``) or ``LocalErrorEstimate`` (any gradient mode, fixed or adaptive
            steps). Its differentiable value is ``Solution.regularization``.
        generator: ``random.Random`` for the local regulariser's sampled times (default: module RNG).

    Returns a :class:`nde.Solution`: ``ys`` ``(len(ts), batch, d)``, ``ts``, ``stats`` (``nfe`` =
    drift-and-diffusion evaluations, ``n_accepted``, ``n_rejected``, and with a regulariser that
    evaluates the SDE, ``nfe_regularization``), ``status``, ``regularization``, and for adaptive
    solves ``heuristics`` per accepted step: ``t``, ``dt``, ``error_ratio`` (step-doubling error
    estimate over tolerance, accept iff <= 1). Raises :class:`nde.SolverError` on failure.
    """
    return _solve_sde(sde, y0, ts, bm, method, dt, adaptive, rtol, atol, dt_min, gradient, adjoint_method,
                      adjoint_params, options, names, extra_solver_state, entropy, controller, regularize,
                      generator)[0]


def _solve_sde(sde, y0, ts, bm, method, dt, adaptive, rtol, atol, dt_min, gradient, adjoint_method,
               adjoint_params, options, names, extra_solver_state, entropy, controller, regularize=None,
               generator=None):
    """:func:`solve_sde`, also returning the method's final extra state (for ``sdeint(extra=True)``)."""
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}.")
    options, max_steps = _max_steps(options, adaptive)
    problem = _prepare(sde, y0, ts, bm, method, dt, adaptive, rtol, atol, dt_min, options, names, gradient)
    sde, y0, ts_list, bm, method = problem
    if gradient == "reversible" and method.name != "reversible_heun":
        raise ValueError(f"gradient='reversible' needs method='reversible_heun', got method={method.name!r}.")
    params = _adjoint_params(sde, adjoint_params) if gradient != "direct" else ()
    if extra_solver_state is not None and gradient != "direct":
        raise ValueError("extra_solver_state is supported with gradient='direct' only.")
    if extra_solver_state is not None:
        _check_extra_state(extra_solver_state, method, sde, ts_list[0], y0)
    if entropy is not None and bm is not None:
        raise ValueError("entropy seeds the default Brownian path; it has no effect with a given bm.")
    if controller is not None and not isinstance(controller, PIController):
        raise TypeError(f"controller must be an nde.PIController, got {type(controller).__name__}.")
    grid = None if adaptive else fixed_grid(ts_list, dt, max_steps)
    if bm is None:
        bm = _default_bm(sde, y0, ts_list, method, entropy, grid if not _queries_off_grid(regularize) else None)
    hook = regularization_hook(regularize, sde, method, bm, rtol, atol, dt, adaptive, gradient,
                               _generator(generator))
    heuristics, rejected, evals = {}, 0, 0
    init_evals = method.init_evals if extra_solver_state is None else 0  # per call of method.init
    if adaptive:
        t0 = torch.tensor(ts_list[0], dtype=y0.dtype, device=y0.device)
        extra0 = extra_solver_state if extra_solver_state is not None else method.init(sde, t0, y0)
        context = torch.enable_grad() if gradient == "direct" else torch.no_grad()
        with context:
            ys, extra, adaptive_stats = run_adaptive(method, sde, y0, ts_list, bm, dt, rtol, atol, dt_min, extra0,
                                                     controller or PIController(), max_steps, on_accept=hook)
        rejected = adaptive_stats.rejected
        evals = 3 * (adaptive_stats.accepted + rejected) * method.evals_per_step + init_evals
        heuristics = {key: torch.tensor(values, dtype=torch.float64) for key, values in (
            ("t", adaptive_stats.starts), ("dt", adaptive_stats.steps), ("error_ratio", adaptive_stats.error_ratios))}
        # The accepted state is two half steps: replay those (adjoint modes) on the same nodes.
        times = [t for pair in zip(adaptive_stats.mids, adaptive_stats.times) for t in pair]
        grid = Grid([ts_list[0]] + times, _nodes_of_outputs(ts_list, times), ts_list)
    elif hook is not None:
        hook.plan_fixed(grid)
    if not adaptive or gradient != "direct":
        noise = NoiseSource(bm, grid.times, method.needs_area)
        ys, extra = _run(gradient, sde, method, y0, grid, noise, extra_solver_state, params, adjoint_method)
        evals += grid.num_steps * method.evals_per_step + init_evals
    _check_finite(ys, grid)
    device = y0.device
    accepted = grid.num_steps // 2 if adaptive else grid.num_steps
    stats = {"nfe": torch.tensor(evals, device=device), "n_accepted": torch.tensor(accepted, device=device),
             "n_rejected": torch.tensor(rejected, device=device)}
    reg_value = None
    if hook is not None:
        reg_value = hook.value(ys)
        stats["nfe_regularization"] = torch.tensor(hook.extra_evals, device=device)
    solution = Solution(ts=torch.tensor(ts_list, dtype=y0.dtype, device=device), ys=ys, stats=stats,
                        status=torch.tensor(int(Status.SUCCESS), device=device), heuristics=heuristics,
                        regularization=reg_value)
    return solution, tuple(extra)


def sdeint(sde, y0, ts, bm=None, method: Optional[str] = None, dt=1e-3, adaptive: bool = False, rtol=1e-5,
           atol=1e-4, dt_min=1e-5, options: Optional[dict] = None, names: Optional[dict] = None,
           logqp: bool = False, extra: bool = False, extra_solver_state=None, **unused_kwargs):
    """Drop-in for ``torchsde.sdeint`` (same arguments, defaults and returns), gradients by autograd.

    Returns ``ys`` of shape ``(len(ts), batch, d)``; with ``logqp`` also the log-ratio increments
    ``(len(ts) - 1, batch)``; with ``extra`` also the method's final extra state.
    """
    _reject_unknown(unused_kwargs, "sdeint")
    y0_aug, sde_aug = _logqp_setup(sde, y0, names, logqp)
    sol, extra_state = _solve_sde(sde_aug, y0_aug, ts, bm, method, dt, adaptive, rtol, atol, dt_min, "direct",
                                  "midpoint", None, options, None, extra_solver_state, None, None)
    return _torchsde_return(sol.ys, extra_state, logqp, extra)


def sdeint_adjoint(sde, y0, ts, bm=None, method: Optional[str] = None, adjoint_method: Optional[str] = None,
                   dt=1e-3, adaptive: bool = False, adjoint_adaptive: bool = False, rtol=1e-5, adjoint_rtol=1e-5,
                   atol=1e-4, adjoint_atol=1e-4, dt_min=1e-5, options: Optional[dict] = None,
                   adjoint_options: Optional[dict] = None, adjoint_params=None, names: Optional[dict] = None,
                   logqp: bool = False, extra: bool = False, extra_solver_state=None, **unused_kwargs):
    """Drop-in for ``torchsde.sdeint_adjoint``: gradients by the stochastic adjoint, or — for
    ``method='reversible_heun'`` (default ``adjoint_method='adjoint_reversible_heun'``) — by exact
    reconstruction of the reversible Heun steps.

    Differences from torchsde: ``adjoint_method`` is ``'midpoint'`` (default) or ``'heun'`` for the
    stochastic adjoint; ``adjoint_adaptive`` is not supported (the backward pass replays the forward
    pass's steps, so ``adjoint_rtol``/``adjoint_atol`` are accepted but unused); ``adjoint_options``
    must be empty.
    """
    _reject_unknown(unused_kwargs, "sdeint_adjoint")
    _positive_float(adjoint_rtol, "adjoint_rtol", allow_zero=True)   # unused (see above), but checked
    _positive_float(adjoint_atol, "adjoint_atol", allow_zero=True)
    if adjoint_adaptive:
        raise ValueError("adjoint_adaptive=True is not supported: the backward pass replays the forward steps.")
    if adjoint_options:
        raise ValueError(f"adjoint_options has unsupported keys {sorted(adjoint_options)}.")
    if adjoint_params is None and not isinstance(sde, torch.nn.Module):
        raise ValueError("sde must be an nn.Module, or adjoint_params must list the tensors to differentiate "
                         "(adjoint_params=() if there are none).")
    y0_aug, sde_aug = _logqp_setup(sde, y0, names, logqp)
    chosen = method if method is not None else default_method(getattr(sde, "sde_type", None),
                                                              getattr(sde, "noise_type", None))
    if chosen == "reversible_heun" and adjoint_method in (None, "adjoint_reversible_heun"):
        gradient, adjoint_method = "reversible", "midpoint"
    elif adjoint_method == "adjoint_reversible_heun":
        raise ValueError(f"adjoint_method='adjoint_reversible_heun' needs method='reversible_heun', got {chosen!r}.")
    else:
        gradient, adjoint_method = "backsolve", adjoint_method or "midpoint"
    params = adjoint_params if adjoint_params is not None else tuple(sde.parameters())
    sol, extra_state = _solve_sde(sde_aug, y0_aug, ts, bm, method, dt, adaptive, rtol, atol, dt_min, gradient,
                                  adjoint_method, params, options, None, extra_solver_state, None, None)
    return _torchsde_return(sol.ys, extra_state, logqp, extra)


# --------------------------------------------------------------------------- internals
def _run(gradient, sde, method, y0, grid, noise, extra_solver_state, params, adjoint_method):
    if gradient == "reversible":
        out = _adjoint.reversible_heun(sde, y0, grid, noise, params)
        return out[0], tuple(out[1:])
    t0 = torch.tensor(grid.times[0], dtype=y0.dtype, device=y0.device)
    extra0 = extra_solver_state if extra_solver_state is not None else method.init(sde, t0, y0)
    if gradient == "backsolve":
        return _adjoint.backsolve(sde, method, y0, grid, noise, tuple(e.detach() for e in extra0), params,
                                  adjoint_method)
    return run_fixed(method, sde, y0, grid, noise, tuple(extra0))


def _prepare(sde, y0, ts, bm, method, dt, adaptive, rtol, atol, dt_min, options, names, gradient):
    """Validate everything once; return ``(SDE wrapper, y0, ts as floats, bm, method object)``."""
    if not isinstance(sde, SDE):
        sde = SDE(sde, names)
    y0 = _check_y0(y0)
    ts_list = _check_ts(ts)
    dt = _positive_float(dt, "dt")
    _positive_float(dt_min, "dt_min")
    rtol = _positive_float(rtol, "rtol", allow_zero=True)
    atol = _positive_float(atol, "atol", allow_zero=True)
    if not isinstance(adaptive, bool):
        raise TypeError(f"adaptive must be a bool, got {type(adaptive).__name__}.")
    if adaptive:
        check_resolvable_tolerances(rtol, atol, y0.dtype)
    method = select_method(method if method is not None else default_method(sde.sde_type, sde.noise_type),
                           sde.sde_type, sde.noise_type, options)
    ito_adjoint = gradient == "backsolve" and sde.sde_type == "ito"
    uses_noise_derivative = (f"method {method.name!r}" if method.uses_noise_derivative else
                             "the Itô backsolve adjoint" if ito_adjoint else None)
    sde.check(ts_list[0], y0, uses_noise_derivative)
    bm = _check_bm(bm, sde, y0, ts_list, method)
    return sde, y0, ts_list, bm, method


def _generator(generator):
    """The local regulariser's ``random.Random`` (default: the module's)."""
    if generator is None:
        return random
    if not isinstance(generator, random.Random):
        raise TypeError(f"generator must be a random.Random, got {type(generator).__name__}.")
    return generator


def _max_steps(options: Optional[dict], adaptive: bool) -> tuple[dict, int]:
    """Split ``options['max_steps']`` (default: 10^6 fixed steps, 10^5 attempted adaptive steps) from
    the method's options."""
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"options must be a dict, got {type(options).__name__}.")
    options = dict(options or {})
    value = options.pop("max_steps", ADAPTIVE_MAX_STEPS if adaptive else FIXED_MAX_STEPS)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"options['max_steps'] must be a positive integer, got {value!r}.")
    return options, value


def _check_extra_state(extra, method, sde, t0: float, y0: torch.Tensor) -> None:
    """``extra_solver_state`` must look like ``method.init``'s: same number of tensors, shapes and dtypes."""
    with torch.no_grad():
        expected = method.init(sde, torch.tensor(t0, dtype=y0.dtype, device=y0.device), y0)
    if not isinstance(extra, (tuple, list)) or len(extra) != len(expected):
        raise ValueError(f"extra_solver_state for method {method.name!r} must be a tuple of {len(expected)} "
                         f"tensor(s), got {extra!r:.80}.")
    for i, (got, want) in enumerate(zip(extra, expected)):
        if not isinstance(got, torch.Tensor) or got.shape != want.shape or got.dtype != want.dtype:
            raise ValueError(f"extra_solver_state[{i}] must be a {want.dtype} tensor of shape {tuple(want.shape)}, "
                             f"got {getattr(got, 'dtype', type(got).__name__)} {tuple(getattr(got, 'shape', ()))}.")


def _check_y0(y0):
    if not isinstance(y0, torch.Tensor):
        raise TypeError(f"y0 must be a torch.Tensor, got {type(y0).__name__}.")
    if y0.dim() != 2 or y0.numel() == 0:
        raise ValueError(f"y0 must have shape (batch, d) with batch, d >= 1, got {tuple(y0.shape)}.")
    if not y0.is_floating_point():
        raise TypeError(f"y0 must be a floating-point tensor, got dtype {y0.dtype}.")
    if not bool(torch.isfinite(y0).all()):
        raise ValueError("y0 contains non-finite values (nan or inf).")
    return y0


def _check_ts(ts) -> list:
    if isinstance(ts, torch.Tensor):
        if ts.requires_grad:
            raise ValueError("ts must not require gradients (gradients with respect to times are not supported).")
        if ts.dim() != 1:
            raise ValueError(f"ts must be 1-D, got shape {tuple(ts.shape)}.")
        values = [float(t) for t in ts.detach().cpu().double()]
    elif isinstance(ts, (list, tuple)) and all(isinstance(t, (int, float)) for t in ts):
        values = [float(t) for t in ts]
    else:
        raise TypeError("ts must be a 1-D tensor or a list/tuple of floats.")
    if len(values) < 1:
        raise ValueError("ts must contain at least one time.")
    if not all(math.isfinite(t) for t in values):
        raise ValueError("ts contains non-finite times.")
    if any(b <= a for a, b in zip(values[:-1], values[1:])):
        raise ValueError("ts must be strictly increasing.")
    return values


def _positive_float(value, name: str, allow_zero: bool = False):
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.requires_grad:
            raise ValueError(f"{name} must be a scalar without gradient.")
        value = float(value)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}.")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {value}.")
    return float(value)


def _default_bm(sde, y0, ts_list, method, entropy, grid: Optional[Grid]):
    """The path of a solve without ``bm``: a :class:`BrownianGrid` on the fixed step nodes (nothing
    stored, so the adjoints' memory does not grow with the steps), else a :class:`BrownianPath`
    (adaptive steps, or a regulariser that queries times between the nodes)."""
    shape = (sde.batch_size, sde.noise_size)
    area = "space-time" if method.needs_area else "none"
    if grid is not None and grid.num_steps > 0:
        return BrownianGrid(grid.times, shape, dtype=y0.dtype, device=y0.device, entropy=entropy,
                            levy_area_approximation=area)
    t1 = ts_list[-1] if len(ts_list) > 1 else ts_list[0] + 1.0
    return BrownianPath(ts_list[0], t1, shape, dtype=y0.dtype, device=y0.device, entropy=entropy,
                        levy_area_approximation=area)


def _queries_off_grid(regularize) -> bool:
    """Whether the regulariser takes steps between the solve's nodes (the local one does)."""
    return isinstance(regularize, LocalErrorEstimate)


def _check_bm(bm, sde, y0, ts_list, method):
    """Validate a user's ``bm`` (``None`` is left for :func:`_default_bm`)."""
    if bm is None:
        return None
    shape = (sde.batch_size, sde.noise_size)
    if not callable(bm):
        raise TypeError(f"bm must be callable as bm(ta, tb), got {type(bm).__name__}.")
    bm_shape = getattr(bm, "shape", None)
    bm_dtype = getattr(bm, "dtype", None)
    bm_device = getattr(bm, "device", None)
    if bm_shape is None:   # a plain callable: ask it once
        sample = bm(ts_list[0], ts_list[-1]) if len(ts_list) > 1 else None
        if sample is not None and not isinstance(sample, torch.Tensor):
            raise TypeError(f"bm(ta, tb) must return a tensor, got {type(sample).__name__}.")
        bm_shape = None if sample is None else sample.shape
        bm_dtype = None if sample is None else sample.dtype
        bm_device = None if sample is None else sample.device
    if bm_shape is not None and tuple(bm_shape) != shape:
        raise ValueError(f"bm has shape {tuple(bm_shape)} but the SDE needs Brownian increments of shape "
                         f"(batch, m) = {shape} for noise_type={sde.noise_type!r}"
                         + (" (with logqp=True the state has one extra channel)." if isinstance(sde, LogqpSDE)
                            else "."))
    start, end = _bm_interval(bm)
    if start is not None and end is not None and (ts_list[0] < float(start) or ts_list[-1] > float(end)):
        raise ValueError(f"bm covers [{float(start)}, {float(end)}] but ts spans [{ts_list[0]}, {ts_list[-1]}].")
    if method.needs_area and getattr(bm, "levy_area_approximation", "none") == "none":
        raise ValueError(f"method {method.name!r} needs the space-time Lévy area: build bm with "
                         "levy_area_approximation='space-time'.")
    if bm_dtype is not None and bm_dtype != y0.dtype:
        raise TypeError(f"bm has dtype {bm_dtype} but y0 has dtype {y0.dtype}; build bm with dtype={y0.dtype}.")
    if bm_device is not None and not _same_device(torch.device(bm_device), y0.device):
        raise ValueError(f"bm is on device {bm_device} but y0 is on {y0.device}; build bm with device={y0.device}.")
    return bm


def _same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices can be the same: the same type, and the same index where both name one
    (``'cuda'`` without an index is taken to match any ``'cuda:k'``)."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _bm_interval(bm) -> tuple:
    """(start, end) of the interval a Brownian motion answers on, or (None, None) where it does not say: nde's
    paths (``t0``, ``t1``), torchsde's ``BrownianInterval`` (``_start``, ``_end``) and its ``BrownianPath`` and
    ``BrownianTree``, which wrap such an interval (``_interval``; torchsde's ``BrownianPath`` covers [t0, t0 + 1])."""
    for owner in (bm, getattr(bm, "_interval", None)):
        start = getattr(owner, "t0", getattr(owner, "_start", None))
        end = getattr(owner, "t1", getattr(owner, "_end", None))
        if start is not None and end is not None:
            return start, end
    return None, None


def _adjoint_params(sde: SDE, adjoint_params) -> tuple:
    """The tensors an adjoint mode differentiates: ``adjoint_params``, or the parameters of an ``nn.Module`` sde. An
    sde that is not a Module has no parameters to find: without ``adjoint_params`` its captured tensors would get
    no gradient, silently, so that is an error (as in :func:`sdeint_adjoint`)."""
    if adjoint_params is None:
        module = sde.module
        if not isinstance(module, torch.nn.Module):
            raise ValueError("adjoint_params: the sde is not an nn.Module, so its parameters cannot be found; pass "
                             "the tensors it uses (adjoint_params=() if none), or use gradient='direct'.")
        adjoint_params = tuple(module.parameters())
    if isinstance(adjoint_params, torch.Tensor):   # tuple() would split it into rows that f and g never use
        raise TypeError("adjoint_params must be a sequence of tensors, got a single tensor; wrap it: "
                        "adjoint_params=[tensor].")
    params = tuple(adjoint_params)
    for p in params:
        if not isinstance(p, torch.Tensor):
            raise TypeError(f"adjoint_params must contain tensors, got {type(p).__name__}.")
    # A tensor listed twice (say, a trunk shared by drift and diffusion modules listed one after the other) would get
    # its gradient once per entry: keep the first.
    unique: dict = {}
    for p in params:
        if p.requires_grad:
            unique.setdefault(id(p), p)
    return tuple(unique.values())


def _nodes_of_outputs(ts_list, step_times) -> list:
    index, out = {t: k + 1 for k, t in enumerate(step_times)}, [0]
    out += [index[t] for t in ts_list[1:]]
    return out


def _check_finite(ys, grid: Grid) -> None:
    """One host sync after the solve: a non-finite output raises :class:`nde.SolverError` naming where."""
    finite = torch.isfinite(ys).flatten(1).all(dim=1)
    if not bool(finite.all()):
        first = int((~finite).nonzero()[0])
        k = grid.out_node[first]
        raise SolverError(Status.NONFINITE, grid.out_time[first], grid.times[k] - grid.times[max(k - 1, 0)],
                          f"SDE state non-finite at output {first}; reduce dt or regularise the dynamics",
                          throw_hint=False)


def _logqp_setup(sde, y0, names, logqp):
    if not isinstance(logqp, bool):
        raise TypeError(f"logqp must be True or False, got {logqp!r}.")
    wrapped = SDE(sde, names)
    if not logqp:
        return y0, wrapped
    y0 = _check_y0(y0)
    return torch.cat([y0, y0.new_zeros(y0.shape[0], 1)], dim=1), LogqpSDE(wrapped)


def _torchsde_return(ys, extra_state: tuple, logqp: bool, extra: bool):
    if not isinstance(extra, bool):
        raise TypeError(f"extra must be True or False, got {extra!r}.")
    out = [ys]
    if logqp:
        ys, log_ratio = ys[..., :-1], ys[..., -1]
        out = [ys, log_ratio[1:] - log_ratio[:-1]]
    if extra:
        out.append(extra_state)
    return out[0] if len(out) == 1 else tuple(out)


def _reject_unknown(kwargs: dict, where: str) -> None:
    if kwargs:
        raise TypeError(f"{where} got unexpected keyword arguments {sorted(kwargs)}.")
