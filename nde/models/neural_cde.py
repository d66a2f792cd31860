"""Neural controlled differential equations (Kidger et al. 2020, eq. 4):

    z(t) = z(t0) + int_{t0}^{t} f_theta(s, z(s)) dX(s),

solved as the ODE dz/dt = f_theta(t, z) dX/dt(t) through the nde core (so every gradient
mode of :func:`nde.solve_ode` applies), with X a :class:`nde.interpolation.ControlPath`.
"""
from __future__ import annotations

import torch
from torch import nn

import nde
from nde.interpolation import ControlPath
from nde.models.neural_ode import as_time_tensor


class CDEVectorField(nn.Module):
    """The ODE vector field ``g(t, z) = f(t, z) @ dX/dt(t)``.

    ``f(t, z)``: ``(batch, hidden)`` -> ``(batch, hidden, channels)``; ``dX/dt``: ``(batch, channels)``.

    With ``row_channel=True`` (for the core's per-sample mode, which calls the field with only the
    rows still running and a time per row) the state carries one extra, constant last channel
    holding each row's batch index, so the right row of the path is used: ``z`` is
    ``(n, hidden + 1)`` and ``t`` is ``(n,)``.
    """

    def __init__(self, func: nn.Module, path: ControlPath, row_channel: bool = False):
        super().__init__()
        self.func = func
        self.path = path
        self.row_channel = row_channel

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if not self.row_channel:
            return torch.einsum("...hc,...c->...h", self.func(t, z), self.path.derivative(t))
        hidden, rows = z[..., :-1], z[..., -1].detach().round().long()
        dxdt = self.path.derivative_rows(t, rows)
        dz = torch.einsum("bhc,bc->bh", self.func(t, hidden), dxdt)
        return torch.cat([dz, torch.zeros_like(z[..., -1:])], dim=-1)


def _gradient_mode(adjoint) -> str | None:
    if isinstance(adjoint, bool):
        return "backsolve" if adjoint else "direct"
    return adjoint


def cdeint(X: ControlPath, func: nn.Module, z0: torch.Tensor, t, *, adjoint=None, **solver_kwargs) -> torch.Tensor:
    """Solve the CDE ``dz = f(t, z) dX(t)``; torchcde-compatible call.

    Args:
        X: the control path, batch shape ``(batch,)`` and ``channels`` channels.
        func: ``nn.Module``, ``func(t, z)`` with ``z`` ``(batch, hidden)`` returning
            ``(batch, hidden, channels)``.
        z0: ``(batch, hidden)`` initial state.
        t: ``(T,)`` increasing output times (e.g. ``X.interval`` or ``X.grid_points``).
        adjoint: a gradient mode of :func:`nde.solve_ode` (``"direct"``, ``"backsolve"``,
            ``"discrete"``), or torchcde's ``True`` / ``False`` (backsolve / direct). Default:
            the core's default. With ``"backsolve"`` gradients reach ``func``'s parameters and
            ``z0`` but not the path's coefficients (as torchdiffeq's ``odeint_adjoint``).
        **solver_kwargs: passed to :func:`nde.solve_ode` (``method``, ``rtol``, ``atol``,
            ``per_sample``, ...). With ``per_sample=True`` every sample takes its own steps, and
            ``t`` may be ``(batch, T)``, a grid per sample (e.g. ending at each sample's last time).
            ``controller`` defaults to :func:`nde.IController`, torchcde's (torchdiffeq's) step-size
            rule: the knots of the control path make the field's derivative jump, and there the core's
            PI controller, which may shrink a step after accepting one, took 434 and 476 evaluations
            against 344 and 296 (dopri5 at 1e-4, batch 32 and 128, 32 knots; ``benchmarks/models.py``).

    Returns ``(batch, T, hidden)`` (batch-first, as torchcde).
    """
    if not isinstance(X, ControlPath):
        raise TypeError(f"X must be an nde.interpolation.ControlPath, got {type(X)}")
    if not isinstance(func, nn.Module):
        raise TypeError(f"func must be an nn.Module, got {type(func)}")
    if z0.shape[:-1] != X.batch_shape:
        raise ValueError(f"z0 must have shape ({', '.join(map(str, X.batch_shape))}, hidden) to match X, "
                         f"got {tuple(z0.shape)}")
    t = as_time_tensor(t, z0, per_sample=solver_kwargs.get("per_sample", False))
    mode = _gradient_mode(adjoint)
    if mode is not None:
        solver_kwargs["adjoint"] = mode
    if solver_kwargs.get("controller") is None:
        solver_kwargs["controller"] = nde.IController()
    if not solver_kwargs.get("per_sample", False):
        return nde.solve_ode(CDEVectorField(func, X), z0, t, **solver_kwargs).ys.movedim(0, 1)
    rows = torch.arange(z0.shape[0], device=z0.device, dtype=z0.dtype).unsqueeze(-1)
    ys = nde.solve_ode(CDEVectorField(func, X, row_channel=True), torch.cat([z0, rows], -1), t, **solver_kwargs).ys
    return ys[..., :-1].movedim(0, 1)


class NeuralCDE(nn.Module):
    """A neural CDE model: ``z0 = initial(X(t0))``, ``dz = f(t, z) dX``, output ``readout(z)``.

    Args:
        vector_field: ``f(t, z)``, ``(batch, hidden)`` -> ``(batch, hidden, channels)``.
        initial: maps ``X(t0)`` ``(batch, channels)`` to ``z0`` ``(batch, hidden)``.
        readout: maps ``z`` ``(..., hidden)`` to outputs; default identity.
        **solver_options: defaults for :func:`nde.solve_ode` (``method``, ``rtol``, ``atol``,
            ``adjoint``, ...); ``forward``'s keywords override them.

    ``forward(X)`` returns ``readout(z(t_end))`` ``(batch, out)``; ``forward(X, t)`` returns
    ``readout(z(t))`` ``(batch, len(t), out)``. With per-sample ``lengths`` (integers,
    ``(batch,)``) the output is ``readout(z)`` at each sample's last observation
    ``X.grid_points[lengths - 1]``: the state there, not at the shared final time (a cubic
    path keeps moving for a little after a sample's data end).
    """

    def __init__(self, vector_field: nn.Module, initial: nn.Module, readout: nn.Module | None = None,
                 **solver_options):
        super().__init__()
        self.vector_field = vector_field
        self.initial = initial
        self.readout = nn.Identity() if readout is None else readout
        self.solver_options = solver_options

    def forward(self, X: ControlPath, t=None, lengths: torch.Tensor | None = None,
                **solver_kwargs) -> torch.Tensor:
        if not isinstance(X, ControlPath):
            raise TypeError(f"X must be an nde.interpolation.ControlPath, got {type(X)}")
        z0 = self.initial(X.evaluate(X.interval[0]))
        options = {**self.solver_options, **solver_kwargs}
        if lengths is not None:
            if t is not None:
                raise ValueError("pass either t or lengths, not both")
            lengths = torch.as_tensor(lengths, device=z0.device)
            if lengths.shape != z0.shape[:1] or lengths.is_floating_point():
                raise ValueError(f"lengths must be an integer tensor of shape ({z0.shape[0]},)")
            zs = cdeint(X, self.vector_field, z0, X.grid_points, **options)
            index = (lengths - 1).clamp(0, zs.shape[1] - 1).view(-1, 1, 1).expand(-1, 1, zs.shape[-1])
            return self.readout(zs.gather(1, index).squeeze(1))
        times = X.interval if t is None else t
        zs = cdeint(X, self.vector_field, z0, times, **options)
        return self.readout(zs[:, -1] if t is None else zs)


class MLPCDEField(nn.Module):
    """A ready-made CDE vector field: an MLP ``z -> tanh(...)`` reshaped to ``(batch, hidden, channels)``.

    The final ``tanh`` bounds the field, which Kidger et al. (2020, appendix) found to help stability.
    """

    def __init__(self, channels: int, hidden: int, width: int = 64, depth: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        size = hidden
        for _ in range(depth):
            layers += [nn.Linear(size, width), nn.Softplus()]
            size = width
        layers += [nn.Linear(size, hidden * channels), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.hidden, self.channels = hidden, channels

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(*z.shape[:-1], self.hidden, self.channels)
