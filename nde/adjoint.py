"""Gradient modes that do not keep the forward autograd graph.

* ``discrete``: the exact gradient of the discretised forward pass. The forward solve runs without
  a graph and keeps one checkpoint ``(t, dt, y)`` per step; the backward pass recomputes each step
  under autograd, in reverse, and pulls the adjoint through it. Memory O(steps × state); the
  gradient equals backpropagation through the solver (``direct``) to round-off.
* ``backsolve``: the continuous adjoint (Chen et al. 2018, eq. 4; Pontryagin), solving the augmented
  system ``(y, a, g)`` backwards in time with its own tolerances. Memory independent of the number
  of steps; the gradient is accurate to the adjoint solve's tolerance. ``norm="seminorm"`` leaves the
  parameter adjoint out of the error norm (Kidger, Chen & Lyons 2021).

Both are ``torch.autograd.Function``s whose inputs are the initial state and the parameters.
Gradients with respect to the output times are added by the API layer (see ``nde.odeint``).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

from ._checks import first_order_only
from ._integrate import (Config, Record, Result, error_ratio, integrate_per_sample, integrate_shared,
                         needs_end_slope, output_value, partial_step, rms_norm)
from ._rk import host_tensor, interpolate, rk_step, stage_times, stiffness_estimate


@dataclass
class Problem:
    """A solve, packaged so that a gradient mode can run it forwards and replay it."""

    func: Callable                    # (t, y) -> dy on the internal (flat) state
    t_out: list | torch.Tensor        # increasing floats (shared) or (batch, T) tensor (per-sample)
    cfg: Config
    per_sample: bool
    last: Result | None = None        # the forward Result of the latest run (stats, heuristics)

    def run(self, y0: torch.Tensor, **overrides) -> Result:
        cfg = replace(self.cfg, **overrides) if overrides else self.cfg
        run = integrate_per_sample if self.per_sample else integrate_shared
        self.last = run(self.func, y0, self.t_out, cfg)
        return self.last

    def output_times(self) -> list | torch.Tensor:
        """The output times of the latest run: ``t_out``, or for an event solve ([t0, inf]) its
        initial time and the time of the event."""
        if self.last is not None and self.last.t_event is not None:
            return [self.t_out[0], self.last.t_event]
        return self.t_out


def _grads(outputs, inputs, grad_outputs):
    """autograd.grad that tolerates unused inputs (zeros) and outputs without a graph."""
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if o.requires_grad and g is not None]
    if not pairs:
        return [torch.zeros_like(x) for x in inputs]
    got = torch.autograd.grad([o for o, _ in pairs], inputs, [g for _, g in pairs], allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(got, inputs)]


# --------------------------------------------------------------------------------------------
# Discrete adjoint
# --------------------------------------------------------------------------------------------

class DiscreteAdjoint(torch.autograd.Function):
    """(ys, R) = solve(y0; params) with the exact discrete gradient by checkpointed recomputation.

    ``R`` is the global regulariser's value (0 when the problem has none); its gradient is replayed
    step by step together with the state's."""

    @staticmethod
    def forward(ctx, problem: Problem, y0: torch.Tensor, *params: torch.Tensor):
        with torch.no_grad():
            result = problem.run(y0, record=True)
            reg = problem.cfg.regularizer
            value = reg.reduce(torch.stack(result.reg_terms)) if reg is not None and result.reg_terms \
                else y0.new_zeros(())
        ctx.problem, ctx.records, ctx.params, ctx.y0 = problem, result.records, params, y0.detach()
        ctx.reg_terms = result.reg_terms
        return result.ys, value

    @staticmethod
    def backward(ctx, grad_ys: torch.Tensor, grad_reg: torch.Tensor):
        first_order_only("adjoint='discrete'")
        problem, params = ctx.problem, ctx.params
        weights = None
        if problem.cfg.regularizer is not None and ctx.reg_terms:
            leaf = torch.stack(ctx.reg_terms).detach().requires_grad_(True)
            with torch.enable_grad():
                (weights,) = torch.autograd.grad(problem.cfg.regularizer.reduce(leaf), leaf, grad_reg)
        if problem.per_sample:
            grad_y0, grad_params = _replay_per_sample(problem, ctx.records, grad_ys, params, ctx.y0)
        else:
            grad_y0, grad_params = _replay_shared(problem, ctx.records, grad_ys, params, weights)
        return (None, grad_y0, *grad_params)


def _replay_shared(problem: Problem, records: list[Record], grad_ys: torch.Tensor, params, reg_weights=None):
    """Pull the adjoint back through the recorded steps, last first. A step whose first stage was carried
    from the previous step (``rec.k1``) takes it as a second input: its adjoint ``adj_k1`` is pulled into
    the previous step's last stage."""
    cfg, func = problem.cfg, problem.func
    coeffs, tdt = cfg.coeffs, cfg.t_dtype
    adj, adj_k1 = torch.zeros_like(grad_ys[0]), None
    g_params = [torch.zeros_like(p) for p in params]
    for index in range(len(records) - 1, -1, -1):
        rec = records[index]
        y_in = rec.y.detach().requires_grad_(True)
        k1_in = None if rec.k1 is None else rec.k1.detach().requires_grad_(True)
        dev = y_in.device
        with torch.enable_grad():
            k1 = k1_in if k1_in is not None else \
                func(host_tensor(rec.t, tdt, dev) if rec.k1_t is None else rec.k1_t, y_in)
            times = rec.stage_t or stage_times(rec.t, rec.dt, coeffs, tdt, dev)
            step = rk_step(func, rec.t, rec.dt, y_in, k1, coeffs, times,
                           want_stiffness=reg_weights is not None and problem.cfg.regularizer.needs_stiffness)
            k_next = None
            if any(needs_end_slope(kind, coeffs.tableau) for _, _, kind in rec.outputs):
                k_next = func(host_tensor(rec.t + rec.dt, tdt, dev), step.y1)
            outs = [partial_step(func, rec.t, rec.dt, theta, y_in, k1, coeffs, tdt, dev) if kind == "step"
                    else output_value(step, y_in, rec.dt, theta, kind, coeffs, k_next)
                    for _, theta, kind in rec.outputs]
            targets, target_grads = [step.y1, *outs], [adj, *(grad_ys[j] for j, _, _ in rec.outputs)]
            if adj_k1 is not None:   # the next step started from this step's last stage
                targets.append(step.ks[-1])
                target_grads.append(adj_k1)
            if reg_weights is not None:
                targets.append(_reg_term(problem.cfg, step, y_in, rec.dt))
                target_grads.append(reg_weights[index])
        got = _grads(targets, [y_in, *params] + ([k1_in] if k1_in is not None else []), target_grads)
        adj, adj_k1 = got[0], (got.pop() if k1_in is not None else None)
        for acc, g in zip(g_params, got[1:]):
            acc.add_(g)
    return adj + grad_ys[0], g_params


def _reg_term(cfg: Config, step, y_in: torch.Tensor, dt: float) -> torch.Tensor:
    """The global regulariser's term of one replayed step (as computed in the forward loop)."""
    norm = cfg.norm or rms_norm
    ratio = error_ratio(step, y_in, cfg.rtol, cfg.atol, norm)
    rho = stiffness_estimate(step, cfg.coeffs, norm) if cfg.regularizer.needs_stiffness else None
    return cfg.regularizer.term(ratio, dt, rho, cfg.coeffs.tableau)


def _replay_per_sample(problem: Problem, records: list[Record], grad_ys: torch.Tensor, params, y0: torch.Tensor):
    """As :func:`_replay_shared`, row by row. With carried first stages (``rec.k1``, every step's) the
    adjoint of the rows' first stages ends at f(t0, y0), which is pulled back into ``y0`` and the parameters."""
    cfg, func = problem.cfg, problem.func
    coeffs, tdt = cfg.coeffs, cfg.t_dtype
    adj = torch.zeros_like(grad_ys[0])                        # (batch, d)
    carried = bool(records) and records[0].k1 is not None
    adj_k1 = torch.zeros_like(adj) if carried else None       # (batch, d): adjoint of each row's first stage
    g_params = [torch.zeros_like(p) for p in params]
    t_out = problem.t_out
    for rec in reversed(records):
        y_in = rec.y.detach().requires_grad_(True)
        k1_in = rec.k1.detach().requires_grad_(True) if carried else None
        # Rejected rows replay a step of 0: their results are not used, and a trial step that overflowed would
        # turn their zero adjoint into NaN (0·inf) in every parameter's gradient.
        dt_rows = torch.where(rec.accept, rec.dt, 0.0)
        dt = dt_rows.to(y_in.dtype)
        with torch.enable_grad():
            k1 = k1_in if carried else func(rec.t, y_in)
            step = rk_step(func, rec.t, dt, y_in, k1, coeffs, stage_times(rec.t, dt_rows, coeffs, tdt, y_in.device))
            acc = rec.accept.unsqueeze(1)
            y_next = torch.where(acc, step.y1, y_in)
            t_new = rec.t_next
            outs, out_grads = [], []
            for idx, mask, theta in rec.outputs:
                t_q = t_out[rec.rows].gather(1, idx.unsqueeze(1)).squeeze(1)
                value = interpolate(step, y_in, dt, theta, coeffs)
                value = torch.where((t_q == t_new).unsqueeze(1), step.y1, value)
                outs.append(value)
                out_grads.append(grad_ys[idx, rec.rows] * mask.unsqueeze(1).to(y_in.dtype))
            targets, target_grads = [y_next, *outs], [adj[rec.rows], *out_grads]
            if carried:
                targets.append(torch.where(acc, step.ks[-1], k1_in))
                target_grads.append(adj_k1[rec.rows])
        got = _grads(targets, [y_in, *params] + ([k1_in] if carried else []), target_grads)
        if carried:
            adj_k1 = adj_k1.index_put((rec.rows,), got.pop())
        adj = adj.index_put((rec.rows,), got[0])
        for acc_p, g in zip(g_params, got[1:]):
            acc_p.add_(g)
    if carried:   # the first steps started from f(t0, y0)
        y_leaf = y0.detach().requires_grad_(True)
        with torch.enable_grad():
            got = _grads([func(t_out[:, 0], y_leaf)], [y_leaf, *params], [adj_k1])
        adj = adj + got[0]
        for acc_p, g in zip(g_params, got[1:]):
            acc_p.add_(g)
    return adj + grad_ys[0], g_params


# --------------------------------------------------------------------------------------------
# Continuous (backsolve) adjoint
# --------------------------------------------------------------------------------------------

@dataclass
class AdjointConfig:
    """Tolerances, method and norm of the backward (adjoint) solve.

    The error norm of the augmented state (y, a, g) is torchdiffeq's: the largest of the forward solve's norm of y
    and of a (a tuple state's mixed norm, a custom ``options["norm"]``) and the RMS of each parameter's g;
    ``seminorm`` leaves g out. ``norm``: the user's ``adjoint_options["norm"]`` instead, called as torchdiffeq calls
    it, with ``(t, *y, *a, *g)``: t the adjoint of time, a zero 0-d tensor here (nde adds time gradients outside
    the backward solve), y and a as the user's tensors (``unflatten``: flat state -> tuple), g shaped like the
    parameters."""

    cfg: Config
    seminorm: bool = False
    norm: Callable | None = None
    unflatten: Callable | None = None


class BacksolveAdjoint(torch.autograd.Function):
    """ys = solve(y0; params), gradient by solving the adjoint ODE backwards (Chen et al. 2018, Alg. 1)."""

    @staticmethod
    def forward(ctx, problem: Problem, adjoint: AdjointConfig, y0: torch.Tensor, *params: torch.Tensor):
        with torch.no_grad():
            result = problem.run(y0)
        ctx.problem, ctx.adjoint, ctx.params = problem, adjoint, params
        ctx.save_for_backward(result.ys)
        return result.ys

    @staticmethod
    def backward(ctx, grad_ys: torch.Tensor):
        first_order_only("adjoint='backsolve' (odeint_adjoint)")
        (ys,) = ctx.saved_tensors
        problem, adjoint, params = ctx.problem, ctx.adjoint, ctx.params
        grad_y0, grad_params = _backsolve(problem, adjoint, ys, grad_ys, params)
        return (None, None, grad_y0, *grad_params)


def _backsolve(problem: Problem, adjoint: AdjointConfig, ys, grad_ys, params):
    """Integrate (y, a, g) from the last output time to the first, adding ∂L/∂y(t_i) at each t_i."""
    func = problem.func
    if problem.per_sample:
        t_list = problem.t_out[0].tolist()          # shared output times (checked by the API layer)
        batch = ys.shape[1]

        def f(t, y):
            return func(t.expand(batch), y)
    else:
        t_list, f = problem.output_times(), func
    shape, n_state = ys.shape[1:], ys[0].numel()
    sizes = [n_state, n_state] + [p.numel() for p in params]
    trainable = [p for p in params]

    def augmented(s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """d/ds of (y, a, g) in reversed time s = −t: (−f, aᵀ∂f/∂y, aᵀ∂f/∂θ)."""
        y = z[:n_state].view(shape)
        a = z[n_state:2 * n_state].view(shape)
        with torch.enable_grad():
            y_ = y.detach().requires_grad_(True)
            dy = f(-s, y_)
            vjps = _grads([dy], [y_, *trainable], [a])
        parts = [-dy.reshape(-1), vjps[0].reshape(-1)] + [v.reshape(-1) for v in vjps[1:]]
        return torch.cat([p.to(z.dtype) for p in parts])

    state_norm = (None if problem.per_sample else problem.cfg.norm) or rms_norm
    no_time = ys.new_zeros(())

    def norm(z: torch.Tensor) -> torch.Tensor:
        y, a, *g = torch.split(z, sizes)
        y, a = y.view(shape), a.view(shape)
        if adjoint.norm is not None:
            g = [piece.view_as(p) for piece, p in zip(g, params)]
            return adjoint.norm((no_time, *adjoint.unflatten(y), *adjoint.unflatten(a), *g))
        norms = [state_norm(y), state_norm(a)]
        if not adjoint.seminorm:
            norms += [rms_norm(piece) for piece in g if piece.numel() > 0]
        return torch.stack(norms).max()

    cfg = replace(adjoint.cfg, norm=norm, record=False, dense=False, heuristics=False,
                  step_points=tuple(sorted(-p for p in adjoint.cfg.step_points)),   # in s = −t
                  jump_points=tuple(sorted(-p for p in adjoint.cfg.jump_points)))
    a = grad_ys[-1]
    g = [torch.zeros_like(p) for p in params]
    for i in range(len(t_list) - 1, 0, -1):
        z0 = torch.cat([ys[i].reshape(-1), a.reshape(-1)] + [x.reshape(-1) for x in g])
        s_span = [-t_list[i], -t_list[i - 1]]
        span_cfg = cfg if cfg.grid is None else replace(cfg, grid=_backward_grid(cfg.grid, t_list[i - 1], t_list[i]))
        with torch.no_grad():
            z1 = integrate_shared(augmented, z0, s_span, span_cfg).ys[-1]
        pieces = torch.split(z1, sizes)
        a = pieces[1].view(shape) + grad_ys[i - 1]
        g = [piece.view_as(p) for piece, p in zip(pieces[2:], params)]
    return a, g


def _backward_grid(grid: tuple[float, ...], t_prev: float, t_next: float) -> tuple[float, ...]:
    """The forward fixed grid's points inside (t_prev, t_next), with both ends, in reversed time s = −t: the
    backward solve over one output interval retraces the forward steps there (a grid from
    ``options['grid_constructor']`` spans all output times; used whole, each interval stepped over nothing)."""
    inside = [-g for g in reversed(grid) if t_prev < g < t_next]
    return (-t_next, *inside, -t_prev)


def default_adjoint_cfg(cfg: Config, rtol, atol, coeffs=None, options=None) -> Config:
    """The backward solve's configuration: the forward one with its own tolerances/method (and no
    event: it runs between the forward solve's output times)."""
    return replace(cfg, rtol=rtol, atol=atol, coeffs=coeffs or cfg.coeffs, first_step=None,
                   throw=True, event=None, **(options or {}))


__all__ = ["Problem", "DiscreteAdjoint", "BacksolveAdjoint", "AdjointConfig", "default_adjoint_cfg"]
