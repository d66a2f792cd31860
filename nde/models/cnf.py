"""Continuous normalising flow (Chen et al. 2018, section 4; Grathwohl et al. 2019, FFJORD).

A sample of the base density ``p0 = N(0, I)`` at ``t0`` flows along ``dz/dt = f(t, z)`` to the
data at ``t1``. The log-density obeys the instantaneous change of variables (Chen et al. eq. 4)

    d log p(z(t)) / dt = -tr(df/dz),

so ``log p1(x) = log p0(z(t0)) - int_{t0}^{t1} tr(df/dz) dt``, computed by solving the augmented
state ``(z, l)`` with ``dl/dt = tr(df/dz)`` backwards from ``(x, 0)`` at ``t1`` to ``t0``, where
``l(t0) = -int tr``. The trace is exact (``dim`` vector-Jacobian products) or Hutchinson's
unbiased estimate ``E[eps^T (df/dz) eps]`` (FFJORD eq. 7) with one ``eps`` per solve.
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import nn

import nde
from nde.models.neural_ode import check_count, check_solver_options


class _TraceAugmented(nn.Module):
    """``(t, [z, l]) -> [f(t, z), tr(df/dz)]`` on states ``(batch, dim + 1)``.

    With ``row_channel=True`` (for the core's per-sample mode, which calls the field with only the rows
    still running) the state carries one more, constant channel holding each row's batch index, so each
    row keeps its own Hutchinson probe: states are ``(n, dim + 2)``.
    """

    def __init__(self, vector_field: nn.Module, trace: str, noise: torch.Tensor | None, create_graph: bool,
                 row_channel: bool = False):
        super().__init__()
        self.vector_field = vector_field
        self.trace = trace
        self.noise = noise
        self.create_graph = create_graph
        self.row_channel = row_channel

    def forward(self, t: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        if not self.row_channel:
            return self._augmented(t, state, self.noise)
        rows = state[..., -1].detach().round().long()
        out = self._augmented(t, state[..., :-1], None if self.noise is None else self.noise[rows])
        return torch.cat([out, torch.zeros_like(state[..., -1:])], dim=-1)

    def _augmented(self, t: torch.Tensor, state: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """``[f(t, z), tr(df/dz)]`` for ``state = [z, l]``, with the Hutchinson probes ``noise`` of its rows."""
        with torch.enable_grad():
            z = state[..., :-1]
            if not z.requires_grad:
                z = z.detach().requires_grad_(True)
            dz = self.vector_field(t, z)
            if not dz.requires_grad:       # a field without a graph to z: df/dz = 0
                trace = torch.zeros_like(dz[..., 0])
            elif self.trace == "exact":
                dim = z.shape[-1]
                trace = sum(self._vjp(dz[..., i].sum(), z, None, retain=i < dim - 1)[..., i] for i in range(dim))
            else:
                trace = (self._vjp(dz, z, noise, retain=False) * noise).sum(-1)
        return torch.cat([dz, trace.unsqueeze(-1)], dim=-1)

    def _vjp(self, out: torch.Tensor, z: torch.Tensor, cotangent: torch.Tensor | None, retain: bool) -> torch.Tensor:
        """``cotangent^T d out / dz``, ``(batch, dim)``; zeros where ``out`` does not depend on ``z``."""
        grad = torch.autograd.grad(out, z, cotangent, create_graph=self.create_graph,
                                   retain_graph=self.create_graph or retain, allow_unused=True)[0]
        return torch.zeros_like(z) if grad is None else grad


def _check_trace(trace: str) -> str:
    if trace not in ("hutchinson", "exact"):
        raise ValueError(f"trace must be 'hutchinson' or 'exact', got {trace!r}")
    return trace


def _check_times(t0, t1) -> tuple[float, float]:
    """``(t0, t1)`` (numbers or one-element tensors) as floats, checked to be finite and distinct (else a
    ``ValueError`` naming them)."""
    times = []
    for value, name in ((t0, "t0"), (t1, "t1")):
        if torch.is_tensor(value) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
        times.append(float(value))
    if times[0] == times[1]:
        raise ValueError(f"t0 and t1 must differ (the flow runs from t0 to t1), got t0 = t1 = {times[0]:g}")
    return times[0], times[1]


class CNF(nn.Module):
    """FFJORD-style continuous normalising flow on ``R^dim``.

    Args:
        vector_field: ``f(t, z)``, ``z`` of shape ``(batch, dim)`` -> ``(batch, dim)``; ``t`` a scalar tensor.
        dim: data dimension.
        trace: ``"hutchinson"`` (default; unbiased, one vector-Jacobian product per evaluation) or
            ``"exact"`` (``dim`` products; use for small ``dim`` and for evaluation).
        noise: Hutchinson probe distribution, ``"rademacher"`` (default, lower variance) or ``"gaussian"``.
        t0, t1: base and data times.
        **solver_options: defaults for :func:`nde.solve_ode` (``method``, ``rtol``, ``atol``, ``adjoint``).
    """

    def __init__(self, vector_field: nn.Module, dim: int, *, trace: str = "hutchinson", noise: str = "rademacher",
                 t0: float = 0.0, t1: float = 1.0, **solver_options):
        super().__init__()
        _check_trace(trace)
        if noise not in ("rademacher", "gaussian"):
            raise ValueError(f"noise must be 'rademacher' or 'gaussian', got {noise!r}")
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        check_solver_options(solver_options)
        self.vector_field = vector_field
        self.dim, self.trace, self.noise = dim, trace, noise
        self.t0, self.t1 = _check_times(t0, t1)
        self.solver_options = solver_options

    def _probe(self, like: torch.Tensor) -> torch.Tensor:
        if self.noise == "gaussian":
            return torch.randn_like(like)
        return torch.randint(0, 2, like.shape, device=like.device).to(like.dtype) * 2 - 1

    def base_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """``log N(z; 0, I)``, ``(batch, dim)`` -> ``(batch,)``."""
        return -0.5 * (z ** 2).sum(-1) - 0.5 * self.dim * math.log(2 * math.pi)

    def _check(self, x: torch.Tensor, name: str) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[-1] != self.dim:
            raise ValueError(f"{name} must be a tensor of shape (batch, {self.dim}), "
                             f"got {getattr(x, 'shape', type(x))}")

    def log_prob(self, x: torch.Tensor, trace: str | None = None, **solver_kwargs) -> torch.Tensor:
        """``log p1(x)``: ``(batch, dim)`` -> ``(batch,)``. ``trace`` overrides the default estimator."""
        self._check(x, "x")
        trace = self.trace if trace is None else _check_trace(trace)
        noise = self._probe(x) if trace == "hutchinson" else None
        options = {**self.solver_options, **solver_kwargs}
        rows = noise is not None and options.get("per_sample", False)
        func = _TraceAugmented(self.vector_field, trace, noise, create_graph=torch.is_grad_enabled(), row_channel=rows)
        state = torch.cat([x, x.new_zeros(x.shape[0], 1)], dim=-1)
        if rows:
            state = torch.cat([state, torch.arange(x.shape[0], dtype=x.dtype, device=x.device).unsqueeze(-1)], -1)
        t = torch.tensor([self.t1, self.t0], dtype=x.dtype, device=x.device)
        end = nde.solve_ode(func, state, t, **options).ys[-1]
        return self.base_log_prob(end[:, :self.dim]) + end[:, self.dim]

    def transform(self, z: torch.Tensor, **solver_kwargs) -> torch.Tensor:
        """Push base points ``z`` ``(batch, dim)`` from ``t0`` to ``t1``."""
        self._check(z, "z")
        t = torch.tensor([self.t0, self.t1], dtype=z.dtype, device=z.device)
        return nde.solve_ode(self.vector_field, z, t, **{**self.solver_options, **solver_kwargs}).ys[-1]

    def sample(self, n: int, device=None, dtype=None, **solver_kwargs) -> torch.Tensor:
        """``n`` samples ``(n, dim)`` of the learned density."""
        check_count(n, "n")
        param = next(self.parameters(), None)
        device = device if device is not None else (param.device if param is not None else None)
        dtype = dtype if dtype is not None else (param.dtype if param is not None else torch.get_default_dtype())
        return self.transform(torch.randn(n, self.dim, device=device, dtype=dtype), **solver_kwargs)
