"""Gradient modes that do not store the solver's graph: stochastic adjoint and reversible Heun.

* :func:`backsolve` — the stochastic adjoint of Li et al. (2020), "Scalable gradients for
  stochastic differential equations", eqs. (4)–(6): the state and the adjoint are solved
  backwards in time as one Stratonovich SDE driven by the *same* Brownian increments
  (replayed, negated). Itô SDEs are converted with the drift correction
  ``f - 1/2 (grad g) g``. Gradients are those of the continuous problem, so they match the
  discretised forward pass only as ``dt -> 0``. Memory: the outputs and the noise, no graph.
* :func:`reversible_heun` — Kidger et al. (2021), "Efficient and accurate gradients for
  neural SDEs", Section 3: reversible Heun is algebraically invertible, so the backward pass
  reconstructs every step from the next one and back-propagates through that one step.
  This is the exact gradient of the discretisation (to round-off) with memory independent
  of the number of steps.
"""
from __future__ import annotations

import torch

from .._checks import first_order_only
from .integrate import Grid, NoiseSource, node_tensors, read_outputs, step_grid
from .methods import ReversibleHeun, g_and_gdg_prod

ADJOINT_METHODS = ("midpoint", "heun")


# ------------------------------------------------------------------------ reversible Heun
def reversible_heun(sde, y0, grid: Grid, noise: NoiseSource, params: tuple):
    """Solve with reversible Heun; backward by exact reconstruction. Returns ``(ys, (f, g, z))``."""
    return _ReversibleHeun.apply(sde, grid, noise, len(params), y0, *params)


class _ReversibleHeun(torch.autograd.Function):

    @staticmethod
    def forward(ctx, sde, grid, noise, num_params, y0, *params):
        method = ReversibleHeun()
        with torch.no_grad():
            extra = method.init(sde, node_tensors(grid, y0)[0], y0)
            y, extra, saved = step_grid(method, sde, y0, grid, noise, extra)
            ys = read_outputs(grid, saved)
        ctx.sde, ctx.grid, ctx.noise = sde, grid, noise
        ctx.save_for_backward(y, *extra, *params)
        return (ys, *extra)

    @staticmethod
    def backward(ctx, grad_ys, grad_f, grad_g, grad_z):
        first_order_only("the reversible-Heun adjoint (sdeint_adjoint)")
        sde, grid, noise = ctx.sde, ctx.grid, ctx.noise
        y1, f1, g1, z1, *params = ctx.saved_tensors
        times, node_t = grid.times, node_tensors(grid, y1)
        inject = _output_injections(grid, grad_ys)
        a_y = inject.get(grid.num_steps, torch.zeros_like(y1))
        a_z, a_f, a_g = _or_zeros(grad_z, z1), _or_zeros(grad_f, f1), _or_zeros(grad_g, g1)
        a_params = [torch.zeros_like(p) for p in params]
        adj_prod = _adjoint_of_prod(sde.noise_type)
        # (f1, g1) = F(z1) with a graph, for the vector-Jacobian product of this node.
        z1_leaf, (f1_graph, g1_graph) = _eval_with_graph(sde, node_t[-1], z1)
        for k in range(grid.num_steps - 1, -1, -1):
            h = times[k + 1] - times[k]
            dw, _ = noise(k)
            # Contributions of step k's y-update to (f_{k+1}, g_{k+1}); then back through F(z_{k+1}).
            a_f = a_f + a_y * (0.5 * h)
            a_g = a_g + adj_prod(a_y, 0.5 * dw)
            grads = _vjp((f1_graph, g1_graph), (z1_leaf, *params), (a_f, a_g))
            a_z = a_z + grads[0]
            a_params = [a + g for a, g in zip(a_params, grads[1:])]
            # Reconstruct node k (exact inverse of the step, Kidger et al. 2021, eq. (7)).
            with torch.no_grad():
                z0 = 2 * y1 - z1 - f1_graph * h - sde.prod(g1_graph, dw)
            z0_leaf, (f0_graph, g0_graph) = _eval_with_graph(sde, node_t[k], z0)
            with torch.no_grad():
                y0 = y1 - (f0_graph + f1_graph) * (0.5 * h) - sde.prod(g0_graph + g1_graph, 0.5 * dw)
            # Adjoints of (y_k, z_k, f_k, g_k) from step k's z- and y-updates.
            a_y, a_z, a_f, a_g = (a_y + 2 * a_z, -a_z, a_z * h + a_y * (0.5 * h),
                                  adj_prod(a_z, dw) + adj_prod(a_y, 0.5 * dw))
            if k in inject:
                a_y = a_y + inject[k]
            y1, z1, z1_leaf, f1_graph, g1_graph = y0, z0, z0_leaf, f0_graph, g0_graph
        # Node 0: z0 = y0 and (f0, g0) = F(y0).
        grads = _vjp((f1_graph, g1_graph), (z1_leaf, *params), (a_f, a_g))
        a_params = [a + g for a, g in zip(a_params, grads[1:])]
        grad_y0 = a_y + a_z + grads[0]
        return (None, None, None, None, grad_y0, *a_params)


def _eval_with_graph(sde, t: torch.Tensor, z: torch.Tensor):
    with torch.enable_grad():
        z_leaf = z.detach().requires_grad_(True)
        return z_leaf, sde.f_and_g(t, z_leaf)


# ---------------------------------------------------------------------------- backsolve
def backsolve(sde, method, y0, grid: Grid, noise: NoiseSource, extra0: tuple, params: tuple,
              adjoint_method: str = "midpoint"):
    """Forward with ``method`` (no graph), backward with the stochastic adjoint. Returns ``(ys, extra)``."""
    if adjoint_method not in ADJOINT_METHODS:
        raise ValueError(f"adjoint_method must be one of {ADJOINT_METHODS} (or 'adjoint_reversible_heun' with "
                         f"method='reversible_heun'), got {adjoint_method!r}.")
    if sde.sde_type == "ito" and sde.noise_type == "general":
        raise ValueError("sdeint_adjoint with an Itô SDE needs commutative noise (diagonal, scalar or additive); "
                         "for general noise write the SDE in Stratonovich form.")
    out = _Backsolve.apply(sde, method, grid, noise, adjoint_method, extra0, len(params), y0, *params)
    return out[0], tuple(out[1:])


class _Backsolve(torch.autograd.Function):

    @staticmethod
    def forward(ctx, sde, method, grid, noise, adjoint_method, extra0, num_params, y0, *params):
        with torch.no_grad():
            y, extra, saved = step_grid(method, sde, y0, grid, noise, extra0)
            ys = read_outputs(grid, saved)
        ctx.sde, ctx.grid, ctx.noise, ctx.adjoint_method = sde, grid, noise, adjoint_method
        ctx.nodes = sorted(saved)
        ctx.save_for_backward(*[saved[k] for k in ctx.nodes], *params)
        ctx.mark_non_differentiable(*extra)
        return (ys, *extra)

    @staticmethod
    def backward(ctx, grad_ys, *unused_grad_extra):
        first_order_only("the stochastic adjoint (sdeint_adjoint)")
        sde, grid, noise = ctx.sde, ctx.grid, ctx.noise
        saved = ctx.saved_tensors
        nodes = dict(zip(ctx.nodes, saved[:len(ctx.nodes)]))
        params = saved[len(ctx.nodes):]
        inject = _output_injections(grid, grad_ys)
        times, n, node_t = grid.times, grid.num_steps, node_tensors(grid, nodes[grid.num_steps])
        y = nodes[n]
        a = inject.get(n, torch.zeros_like(y))
        a_params = [torch.zeros_like(p) for p in params]
        drift = _stratonovich_drift(sde)
        step = _midpoint_aug if ctx.adjoint_method == "midpoint" else _heun_aug
        for k in range(n - 1, -1, -1):
            dw, _ = noise(k)
            y, a, a_params = step(sde, drift, params, node_t[k + 1], node_t[k], times[k] - times[k + 1], y, a,
                                  a_params, -dw)
            if k in nodes:
                y = nodes[k]
            if k in inject:
                a = a + inject[k]
        return (None,) * 7 + (a, *a_params)


def _stratonovich_drift(sde):
    """Drift of the SDE in Stratonovich form: ``f`` or ``f - 1/2 (grad g) g`` (Kloeden & Platen (4.9.10))."""
    if sde.sde_type == "stratonovich" or sde.noise_type == "additive":
        return sde.f

    def corrected(t, y):
        _, gdg = g_and_gdg_prod(sde, t, y)
        return sde.f(t, y) - 0.5 * gdg
    return corrected


def _aug_increment(sde, drift, params, t: torch.Tensor, h: float, y, a, dw):
    """Increment of the augmented backward SDE over one (negative) step ``h`` with noise ``dw``.

    ``phi = f h + g dw`` at ``y``; returns ``(phi, -a . dphi/dy, -a . dphi/dtheta)`` (Li et al. (2020) eq. (6)).
    """
    with torch.enable_grad():
        y_leaf = y.detach().requires_grad_(True)
        phi = sde.add_prod(drift(t, y_leaf) * h, sde.g(t, y_leaf), dw)
        grads = _vjp((phi,), (y_leaf, *params), (a,))
    return phi.detach(), -grads[0], [-g for g in grads[1:]]


def _midpoint_aug(sde, drift, params, t, t_end, h, y, a, a_params, dw):
    dy1, da1, dp1 = _aug_increment(sde, drift, params, t, h, y, a, dw)
    dy2, da2, dp2 = _aug_increment(sde, drift, params, t + 0.5 * h, h, y + 0.5 * dy1, a + 0.5 * da1, dw)
    return y + dy2, a + da2, [p + d for p, d in zip(a_params, dp2)]


def _heun_aug(sde, drift, params, t, t_end, h, y, a, a_params, dw):
    dy1, da1, dp1 = _aug_increment(sde, drift, params, t, h, y, a, dw)
    dy2, da2, dp2 = _aug_increment(sde, drift, params, t_end, h, y + dy1, a + da1, dw)
    return (y + 0.5 * (dy1 + dy2), a + 0.5 * (da1 + da2),
            [p + 0.5 * (d1 + d2) for p, d1, d2 in zip(a_params, dp1, dp2)])


# ------------------------------------------------------------------------------ helpers
def _output_injections(grid: Grid, grad_ys) -> dict:
    """Map node -> adjoint contribution of the output gradients (transpose of :func:`read_outputs`)."""
    inject: dict = {}
    if grad_ys is None:
        return inject
    for j in range(len(grid.out_time)):
        k, w_prev, w_k = grid.weights(j)
        inject[k] = inject.get(k, 0) + w_k * grad_ys[j]
        if w_prev is not None:
            inject[k - 1] = inject.get(k - 1, 0) + w_prev * grad_ys[j]
    return inject


def _vjp(outputs: tuple, inputs: tuple, grad_outputs: tuple) -> list:
    """Vector-Jacobian products, zeros for inputs that the outputs do not depend on."""
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if o.requires_grad]
    if not pairs:
        return [torch.zeros_like(x) for x in inputs]
    grads = torch.autograd.grad([o for o, _ in pairs], inputs, [g for _, g in pairs], allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]


def _or_zeros(grad, like):
    return torch.zeros_like(like) if grad is None else grad


def _adjoint_of_prod(noise_type: str):
    """Adjoint of ``prod(g, v)`` with respect to ``g``, given the output adjoint ``a``."""
    if noise_type == "diagonal":
        return torch.mul
    return lambda a, v: a.unsqueeze(-1) * v.unsqueeze(-2)
