"""The SDE stepping loops: the fixed step grid, the Brownian noise source, adaptive steps.

Fixed steps follow torchsde 0.2.6 exactly: nodes ``t_{k+1} = min(t_k + dt, ts[-1])`` from
``ts[0]``, outputs at ``ts`` by linear interpolation between the two nodes around them
(exact node values when ``ts`` lies on the grid). This is what makes results agree with
torchsde to round-off on the same Brownian path.

Adaptive steps use step doubling (one step of ``h`` against two of ``h/2``, the error of
the coarse step is estimated by their difference) with a PI controller; steps stop at every
output time, so no interpolation is needed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
import torch

from .._integrate import rms_norm, warn_forced_steps
from ..controller import PIController
from ..errors import SolverError, Status
from .brownian import BrownianGrid, BrownianPath

FIXED_MAX_STEPS = 1_000_000     # the ODE core's default
ADAPTIVE_MAX_STEPS = 100_000    # attempted steps; each costs three steps of the method


@dataclass
class Grid:
    """Step nodes and how outputs are read off them.

    ``times``: node times (floats, increasing, ``times[0] = ts[0]``, ``times[-1] = ts[-1]``).
    ``out_node[j]``: node ``k`` with ``times[k-1] < ts[j] <= times[k]`` (0 for ``j = 0``).
    ``out_time[j]``: ``ts[j]`` as a float.
    ``keep``: optional ``{node: None}``; stepping over the grid fills in the detached states of those
    nodes (the local regulariser reads them; they are not kept for the backward pass).
    """
    times: list
    out_node: list
    out_time: list
    keep: dict | None = None

    @property
    def num_steps(self) -> int:
        return len(self.times) - 1

    def needed_nodes(self) -> set:
        """Nodes whose states the outputs read."""
        nodes = set()
        for k, t in zip(self.out_node, self.out_time):
            nodes.add(k)
            if t != self.times[k]:
                nodes.add(k - 1)
        return nodes

    def weights(self, j: int):
        """``(k, w_prev, w_k)`` for output ``j``: ``y(ts[j]) = w_prev y_{k-1} + w_k y_k`` (w_prev None: exact node)."""
        k, t = self.out_node[j], self.out_time[j]
        if t == self.times[k]:
            return k, None, 1.0
        t0, t1 = self.times[k - 1], self.times[k]
        return k, (t1 - t) / (t1 - t0), (t - t0) / (t1 - t0)


def fixed_grid(ts: list, dt: float, max_steps: int = FIXED_MAX_STEPS) -> Grid:
    """torchsde's fixed-step grid over ``ts`` (see module docstring); more than ``max_steps`` steps
    is a :class:`nde.SolverError` raised before the grid is built."""
    needed = sum(math.ceil((b - a) / dt) for a, b in zip(ts[:-1], ts[1:]))
    if needed > max_steps:
        raise SolverError(Status.MAX_STEPS, ts[0], dt, f"the fixed grid needs about {needed} steps, "
                          f"max_steps={max_steps}; pass a larger dt or raise options['max_steps']", throw_hint=False)
    times, out_node = [ts[0]], [0]
    t = ts[0]
    for out_t in ts[1:]:
        while t < out_t:
            if t + dt == t:   # dt below the spacing of floats at t: the grid would never advance
                raise SolverError(Status.DT_UNDERFLOW, t, dt, "fixed SDE grid: t + dt == t in floating point; "
                                  "pass a larger dt or shift the times nearer to 0", throw_hint=False)
            t = min(t + dt, ts[-1])
            times.append(t)
        out_node.append(len(times) - 1)
    return Grid(times, out_node, list(ts))


class NoiseSource:
    """Brownian increments ``(dW_k, U_k)`` over the intervals of a node list.

    A :class:`BrownianGrid` on these nodes is asked for cell ``k`` (recomputed on every call,
    nothing stored); a :class:`BrownianPath` is asked for the whole grid at once (one vectorised
    draw, kept); any other ``bm`` following torchsde's protocol is called once per step.
    """

    def __init__(self, bm, times: list, need_area: bool):
        self.bm, self.times, self.need_area = bm, times, need_area
        self._dw = self._u = None
        self._cells = isinstance(bm, BrownianGrid) and bm.times == list(times)
        if isinstance(bm, BrownianPath) and len(times) > 1:
            out = bm.increments(times, return_U=need_area)
            dw, u = out if need_area else (out, None)
            self._dw = dw.unbind(0)
            self._u = u.unbind(0) if u is not None else None

    def __call__(self, k: int):
        if self._cells:
            out = self.bm.increment(k, self.need_area)
            return out if self.need_area else (out, None)
        if self._dw is not None:
            return self._dw[k], (self._u[k] if self._u is not None else None)
        ta, tb = self.times[k], self.times[k + 1]
        if self.need_area:
            return self.bm(ta, tb, return_U=True)
        return self.bm(ta, tb), None


def step_grid(method, sde, y0: torch.Tensor, grid: Grid, noise: NoiseSource, extra: tuple):
    """Step ``method`` over every node of ``grid``.

    Returns ``(y_last, extra, saved)``: the final state, the method's extra state, and the node states
    the outputs read (``{node index: state}``). The detached states of the nodes in ``grid.keep`` are
    written there (every gradient mode's forward pass runs through here)."""
    needed = grid.needed_nodes()
    saved = {0: y0}
    y, times, node_t, keep = y0, grid.times, node_tensors(grid, y0), grid.keep
    if keep is not None and 0 in keep:
        keep[0] = y0.detach()
    for k in range(grid.num_steps):
        dw, u = noise(k)
        y, extra = method.step(sde, node_t[k], node_t[k + 1], times[k + 1] - times[k], y, extra, dw, u)
        if k + 1 in needed:
            saved[k + 1] = y
        if keep is not None and k + 1 in keep:
            keep[k + 1] = y.detach()
    return y, extra, saved


def run_fixed(method, sde, y0: torch.Tensor, grid: Grid, noise: NoiseSource, extra: tuple):
    """Step ``method`` over ``grid``; returns ``(ys, extra)`` with ``ys`` of shape ``(len(ts), batch, d)``."""
    _, extra, saved = step_grid(method, sde, y0, grid, noise, extra)
    return read_outputs(grid, saved), extra


def node_tensors(grid: Grid, like: torch.Tensor) -> tuple:
    """Node times as 0-d tensors of ``like``'s dtype and device, made with one transfer."""
    return torch.tensor(grid.times, dtype=like.dtype, device=like.device).unbind(0)


def read_outputs(grid: Grid, node_values: dict) -> torch.Tensor:
    """Outputs at ``ts`` from node values (torchsde's linear interpolation formula)."""
    out = []
    for j in range(len(grid.out_time)):
        k, w_prev, w_k = grid.weights(j)
        out.append(node_values[k] if w_prev is None else w_prev * node_values[k - 1] + w_k * node_values[k])
    return torch.stack(out)


@dataclass
class AdaptiveStats:
    """Counts of one adaptive solve and, per accepted step, its start time, size and error ratio."""
    accepted: int = 0
    rejected: int = 0
    forced: int = 0                                   # accepted at dt_min with an error ratio above 1
    times: list = field(default_factory=list)        # end time of each accepted step
    mids: list = field(default_factory=list)         # its midpoint (the accepted state is two half steps)
    starts: list = field(default_factory=list)
    steps: list = field(default_factory=list)
    error_ratios: list = field(default_factory=list)


def run_adaptive(method, sde, y0, ts: list, bm, dt: float, rtol: float, atol: float, dt_min: float,
                 extra: tuple, controller: PIController, max_steps: int = ADAPTIVE_MAX_STEPS, on_accept=None):
    """Adaptive steps by step doubling, sized by the core's :class:`nde.PIController`.

    The error ratio of a step is ``rms((y_h - y_{h/2,h/2}) / (atol + rtol max(|y_h|, |y_{h/2,h/2}|)))``;
    it is accepted when ``<= 1`` (or when ``h <= dt_min``, with a warning after the solve). A non-finite
    ratio (a trial step that left the drift's domain or overflowed) is a rejection, shrunk by the
    controller's ``factor_min``, and a :class:`nde.SolverError` only at ``h <= dt_min``. The local error of a method of strong
    order ``p`` scales as ``h^(p + 1/2)``, the controller's exponent. Steps end exactly on output
    times. One host sync per attempted step (the accept decision). Returns ``(ys, extra, stats)``.

    ``on_accept(t, h, y, y_two, ratio)``: optional hook called on every accepted step with its start
    time and size (floats), the states at its start and end, and its error ratio as a tensor; with
    a hook and grad mode on, the ratio carries its autograd graph (the regularisers read it).
    """
    k = method.strong_order(sde.noise_type) + 0.5
    t, y, h = ts[0], y0, dt
    outputs, stats, prev_ratio = [y0], AdaptiveStats(), 1e-4
    for out_t in ts[1:]:
        while t < out_t:
            if stats.accepted + stats.rejected >= max_steps:
                raise SolverError(Status.MAX_STEPS, t, h, f"adaptive SDE solve, max_steps={max_steps}",
                                  throw_hint=False)
            to_out = _reaches(t, h, out_t)
            h_try = out_t - t if to_out else h
            t_mid, t_next = t + 0.5 * h_try, out_t if to_out else t + h_try
            at_min = min(h, h_try) <= dt_min   # h_try may exceed h = dt_min by the sliver it absorbed
            if t_next - t_mid <= 0 or t_mid - t <= 0:
                raise SolverError(Status.DT_UNDERFLOW, t, h_try, "adaptive SDE solve", throw_hint=False)
            y_full, y_two, extra_two = doubling_step(method, sde, t, t_mid, t_next, y, extra, bm)
            with torch.set_grad_enabled(on_accept is not None and torch.is_grad_enabled()):
                ratio_t = scaled_error(y_full, y_two, rtol, atol)
            ratio = float(ratio_t.detach())  # the one host synchronisation of the step
            finite = math.isfinite(ratio)
            if not finite and at_min:   # as the ODE core: a non-finite trial step is rejected and shrunk
                raise SolverError(Status.NONFINITE, t, h_try, "adaptive SDE solve: non-finite error estimate at "
                                  f"dt_min={dt_min}", throw_hint=False)
            accept = finite and (ratio <= 1.0 or at_min)
            if accept:
                stats.forced += ratio > 1.0
                if on_accept is not None:
                    on_accept(t, t_next - t, y, y_two, ratio_t)
                stats.starts.append(t)
                stats.steps.append(t_next - t)
                stats.mids.append(t_mid)
                t, y, extra = t_next, y_two, extra_two
                stats.accepted += 1
                stats.times.append(t)
                stats.error_ratios.append(ratio)
            else:
                stats.rejected += 1
            h = max(dt_min, controller.factor(ratio, prev_ratio, accept, k) * h_try)
            if accept:
                prev_ratio = ratio
        outputs.append(y)
    warn_forced_steps(stats.forced, dt_min, "dt_min")
    return torch.stack(outputs), extra, stats


def _reaches(t: float, h: float, out_t: float) -> bool:
    """Whether a step of ``h`` from ``t`` should end on ``out_t``: it gets there, or it stops short by a rounding
    sliver (``t`` summed from steps of 0.1 lands one float below 1.0), too small for a step of its own to halve."""
    return t + h >= out_t - max(1e-9 * h, 4 * math.ulp(out_t))


def doubling_step(method, sde, t: float, t_mid: float, t_next: float, y: torch.Tensor, extra: tuple, bm):
    """One step of ``method`` from ``(t, y)`` to ``t_next`` and the same interval as two half steps
    over ``t_mid``, on the Brownian path ``bm``. Returns ``(y_full, y_two, extra_two)`` (``(batch, d)``
    states and the method's extra state after the two half steps)."""
    need_area = method.needs_area
    t_, t_mid_, t_next_ = (torch.full((), s, dtype=y.dtype, device=y.device) for s in (t, t_mid, t_next))
    y_full, _ = method.step(sde, t_, t_next_, t_next - t, y, extra, *_draw(bm, t, t_next, need_area))
    y_half, extra_half = method.step(sde, t_, t_mid_, t_mid - t, y, extra, *_draw(bm, t, t_mid, need_area))
    y_two, extra_two = method.step(sde, t_mid_, t_next_, t_next - t_mid, y_half, extra_half,
                                   *_draw(bm, t_mid, t_next, need_area))
    return y_full, y_two, extra_two


def scaled_error(y_full: torch.Tensor, y_two: torch.Tensor, rtol: float, atol: float) -> torch.Tensor:
    """Step-doubling error ratio ``rms((y_full - y_two) / (atol + rtol max(|y_full|, |y_two|)))`` (0-d)."""
    scale = torch.maximum(y_full.abs(), y_two.abs()).mul(rtol).add(atol)
    return rms_norm((y_full - y_two) / scale)


def _draw(bm, ta: float, tb: float, need_area: bool):
    if need_area:
        return bm(ta, tb, return_U=True)
    return bm(ta, tb), None
