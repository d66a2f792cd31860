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
from nde.interpolation.missing import check_lengths
from nde.models.neural_ode import as_time_tensor, check_sizes, check_solver_options


class CDEVectorField(nn.Module):
    """The ODE vector field ``g(t, z) = f(t, z) @ dX/dt(t)``.

    ``f(t, z)``: ``(*batch, hidden)`` -> ``(*batch, hidden, channels)``; ``dX/dt``: ``(*batch, channels)``.
    If ``f`` has a method ``prod``, ``f.prod(t, z, dX/dt)`` gives the product itself, ``(*batch, hidden)``
    (as in torchcde: a field can form it without the matrix).

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
            return self._product(t, z, self.path.derivative(t))
        hidden, rows = z[..., :-1], z[..., -1].detach().round().long()
        dz = self._product(t, hidden, self.path.derivative_rows(t, rows))
        return torch.cat([dz, torch.zeros_like(z[..., -1:])], dim=-1)

    def _product(self, t: torch.Tensor, z: torch.Tensor, dxdt: torch.Tensor) -> torch.Tensor:
        """``f(t, z) @ dX/dt`` ``(*batch, hidden)``, by ``f.prod`` where ``f`` has one (shape checked)."""
        if not hasattr(self.func, "prod"):
            return torch.einsum("...hc,...c->...h", self._matrix(t, z), dxdt)
        out = self.func.prod(t, z, dxdt)
        if not isinstance(out, torch.Tensor) or out.shape != z.shape:
            raise ValueError(f"func.prod must return the state's shape (*batch, hidden) = {tuple(z.shape)}, "
                             f"got {tuple(getattr(out, 'shape', ())) or type(out)}")
        return out

    def _matrix(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """``f(t, z)``, checked to be ``(*batch, hidden, channels)`` (a shape check, no host sync)."""
        out = self.func(t, z)
        expected = (*z.shape, self.path.channels)
        if not isinstance(out, torch.Tensor) or out.shape != expected:
            raise ValueError(f"func must return shape (*batch, hidden, channels) = {expected}, "
                             f"got {tuple(getattr(out, 'shape', ())) or type(out)}")
        return out


def _gradient_mode(adjoint) -> str | None:
    if isinstance(adjoint, bool):
        return "backsolve" if adjoint else "direct"
    return adjoint


def _check_within_path(t: torch.Tensor, X: ControlPath) -> None:
    """Raise a ``ValueError`` naming ``t`` if a time lies outside ``X.interval`` (beyond it the end
    cubics are extrapolated, which can blow up or stall an adaptive solve)."""
    start, end = X.interval.detach().to(torch.float64).tolist()
    times = t.detach().to(torch.float64)
    if bool(((times < start) | (times > end)).any()):
        raise ValueError(f"t must lie within X.interval [{start:g}, {end:g}], "
                         f"got times in [{float(times.min()):g}, {float(times.max()):g}]")


_TORCHCDE_ONLY = {
    "options": "pass nde.solve_ode's keywords directly (step_size=..., first_step=..., max_steps=...)",
    "backend": "nde solves the CDE as an ODE on its own core; leave the argument out",
}


def _check_cdeint_keywords(solver_kwargs: dict) -> None:
    """torchcde's own keywords get a pointer to nde's; any other unknown one a ``TypeError`` naming it."""
    for key, hint in _TORCHCDE_ONLY.items():
        if key in solver_kwargs:
            raise TypeError(f"`{key}` is torchcde's keyword; nde's cdeint takes nde.solve_ode's: {hint}")
    check_solver_options(solver_kwargs)


def _adjoint_inputs(func: nn.Module, X: ControlPath) -> tuple[torch.Tensor, ...]:
    """What the backsolve and discrete modes differentiate by default: ``func``'s parameters and the path's
    coefficients and knots where they require gradients (the data the path was built from), so that, as
    with ``direct``, gradients reach the data."""
    return (*func.parameters(), *(x for x in (X.coeffs, X.knots) if x.requires_grad))


def _knots_apart(X: ControlPath) -> ControlPath:
    """``X`` with its knots, where they require gradients, as an autograd node of their own (a view).

    The coefficients are built from the knots too; the adjoint modes' vector-Jacobian product with respect
    to the knots must take only their direct use in ``X(t)``, not run back through the coefficients' graph
    (freed after the first product: "backward through the graph a second time"), whose part reaches the
    knots through the coefficients' own gradient."""
    if not X.knots.requires_grad:
        return X
    return ControlPath(X.knots.view_as(X.knots), X.coeffs)


def cdeint(X: ControlPath, func: nn.Module, z0: torch.Tensor, t, *, adjoint=None, **solver_kwargs) -> torch.Tensor:
    """Solve the CDE ``dz = f(t, z) dX(t)``; torchcde's call ``cdeint(X, func, z0, t, adjoint=...)``.

    Args:
        X: the control path, batch shape ``(*batch,)`` (any number of batch dimensions, none included) and
            ``channels`` channels.
        func: ``nn.Module``, ``func(t, z)`` with ``z`` ``(*batch, hidden)`` returning
            ``(*batch, hidden, channels)``; or, if it has a method ``prod``, ``func.prod(t, z, dX/dt)``
            returning the product ``(*batch, hidden)`` (torchcde's protocol).
        z0: ``(*batch, hidden)`` initial state.
        t: ``(T,)`` increasing output times within ``X.interval`` (e.g. ``X.interval`` or
            ``X.grid_points``); the solve starts at ``t[0]`` with ``z(t[0]) = z0``.
        adjoint: a gradient mode of :func:`nde.solve_ode` (``"direct"``, ``"backsolve"``,
            ``"discrete"``), or torchcde's ``True`` / ``False`` (backsolve / direct). Default:
            the core's default. In every mode gradients reach ``func``'s parameters, ``z0`` and the data
            behind ``X``: without ``adjoint_params``, the adjoint modes differentiate the path's
            coefficients and knots too wherever they require gradients (torchcde's adjoint needs them
            passed by hand, and warns).
        **solver_kwargs: :func:`nde.solve_ode`'s keywords (``method``, ``rtol``, ``atol``, ``step_size``,
            ``per_sample``, ...), not torchdiffeq's: method names are nde's (torchcde's ``"rk4"`` is nde's
            ``"rk4_38"``, its fixed-step ``"heun2"`` nde's ``"heun"``), the default tolerances are
            ``solve_ode``'s (rtol = atol = 1e-6; torchcde's are 1e-4 and 1e-6), and torchcde's
            ``options`` and ``backend`` are errors that say what to pass instead. With ``per_sample=True``
            (one batch dimension) every sample takes its own steps, and ``t`` may be ``(batch, T)``, a grid
            per sample (e.g. ending at each sample's last time). ``controller`` defaults to :func:`nde.IController`,
            torchcde's (torchdiffeq's) step-size rule: the knots of the control path make the field's
            derivative jump, and there the core's PI controller, which may shrink a step after accepting
            one, took 434 and 476 evaluations against 344 and 296 (dopri5 at 1e-4, batch 32 and 128,
            32 knots; ``benchmarks/models.py``).

    Returns ``(*batch, T, hidden)`` (time second to last, as torchcde).
    """
    if not isinstance(X, ControlPath):
        raise TypeError(f"X must be an nde.interpolation.ControlPath, got {type(X)}")
    if not isinstance(func, nn.Module):
        raise TypeError(f"func must be an nn.Module, got {type(func)}")
    if not isinstance(z0, torch.Tensor) or not z0.is_floating_point():
        raise TypeError(f"z0 must be a floating-point tensor of shape (*batch, hidden), got {type(z0)}")
    if z0.ndim == 0 or z0.shape[:-1] != X.batch_shape:
        raise ValueError(f"z0 must have shape ({', '.join(map(str, X.batch_shape))}, hidden) to match X, "
                         f"got {tuple(z0.shape)}")
    if z0.dtype != X.coeffs.dtype or z0.device != X.coeffs.device:
        raise ValueError(f"z0 ({z0.dtype}, {z0.device}) must have X's dtype and device ({X.coeffs.dtype}, "
                         f"{X.coeffs.device}); convert one of them, e.g. X.to(z0)")
    _check_cdeint_keywords(solver_kwargs)
    if solver_kwargs.get("per_sample", False) and z0.ndim != 2:
        raise ValueError(f"per_sample=True needs one batch dimension, z0 of shape (batch, hidden) and X of batch "
                         f"shape (batch,); got z0 of shape {tuple(z0.shape)} (flatten the batch dimensions)")
    t = as_time_tensor(t, z0, per_sample=solver_kwargs.get("per_sample", False))
    _check_within_path(t, X)
    mode = _gradient_mode(adjoint)
    if mode is not None:
        solver_kwargs["adjoint"] = mode
    if mode in ("backsolve", "discrete") and solver_kwargs.get("adjoint_params") is None:
        X = _knots_apart(X)
        solver_kwargs["adjoint_params"] = _adjoint_inputs(func, X)
    if solver_kwargs.get("controller") is None:
        solver_kwargs["controller"] = nde.IController()
    if not solver_kwargs.get("per_sample", False):
        return nde.solve_ode(CDEVectorField(func, X), z0, t, **solver_kwargs).ys.movedim(0, -2)
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

    The hidden state always starts at the start of the path, ``t0 = X.interval[0]``, so ``z(t)`` is
    one trajectory whatever times are asked for. ``forward(X)`` returns ``readout(z(t_end))``
    ``(batch, out)``; ``forward(X, t)`` returns ``readout(z(t))`` ``(batch, len(t), out)`` for
    increasing ``t`` within ``X.interval`` (with ``per_sample=True`` also ``(batch, T)``), so
    ``forward(X, t)[:, k:]`` equals ``forward(X, t[k:])``. With per-sample ``lengths`` (integers
    in ``[1, L]``, ``(batch,)``) the output is ``readout(z)`` at each sample's last observation
    ``X.grid_points[lengths - 1]``: the state there, not at the shared final time (a cubic
    path keeps moving for a little after a sample's data end). As with :func:`cdeint`, ``X`` may have
    any batch shape (none included) in place of ``(batch,)``, ``lengths`` then of that shape.
    """

    def __init__(self, vector_field: nn.Module, initial: nn.Module, readout: nn.Module | None = None,
                 **solver_options):
        super().__init__()
        check_solver_options(solver_options)
        self.vector_field = vector_field
        self.initial = initial
        self.readout = nn.Identity() if readout is None else readout
        self.solver_options = solver_options

    def forward(self, X: ControlPath, t=None, lengths: torch.Tensor | None = None,
                **solver_kwargs) -> torch.Tensor:
        if not isinstance(X, ControlPath):
            raise TypeError(f"X must be an nde.interpolation.ControlPath, got {type(X)}")
        if t is not None and lengths is not None:
            raise ValueError("pass either t or lengths, not both")
        z0 = self._initial_state(X)
        options = {**self.solver_options, **solver_kwargs}
        if lengths is not None:
            lengths = check_lengths(lengths, X.batch_shape, X.grid_points.shape[0], z0.device)
            zs = cdeint(X, self.vector_field, z0, X.grid_points, **options)
            index = (lengths - 1)[..., None, None].expand(*lengths.shape, 1, zs.shape[-1])
            return self.readout(zs.gather(-2, index).squeeze(-2))
        if t is None:
            return self.readout(cdeint(X, self.vector_field, z0, X.interval, **options)[..., -1, :])
        return self.readout(self._from_path_start(X, z0, t, options))

    def _initial_state(self, X: ControlPath) -> torch.Tensor:
        """``initial(X(t0))``, checked to be ``(*batch, hidden)``."""
        z0 = self.initial(X.evaluate(X.interval[0]))
        if not isinstance(z0, torch.Tensor) or z0.ndim != len(X.batch_shape) + 1 or z0.shape[:-1] != X.batch_shape:
            raise ValueError(f"initial must return shape ({', '.join(map(str, X.batch_shape))}, hidden), "
                             f"got {tuple(getattr(z0, 'shape', ())) or type(z0)}")
        return z0

    def _from_path_start(self, X: ControlPath, z0: torch.Tensor, t, options: dict) -> torch.Tensor:
        """``z(t)`` ``(batch, T, hidden)`` of the solve from ``X.interval[0]``: ``t`` is prefixed with
        the path's start when it begins after it, and that output is dropped."""
        t = as_time_tensor(t, z0, per_sample=options.get("per_sample", False), increasing=True)
        at_start = t[..., 0] <= X.interval[0].to(t.dtype)
        if bool(at_start.all()):
            return cdeint(X, self.vector_field, z0, t, **options)
        if bool(at_start.any()):
            raise ValueError("t: per-sample grids must all start at X.interval[0] or all after it")
        start = X.interval[:1].to(t).expand(*t.shape[:-1], 1)
        return cdeint(X, self.vector_field, z0, torch.cat([start, t], dim=-1), **options)[..., 1:, :]


class MLPCDEField(nn.Module):
    """A ready-made CDE vector field: an MLP ``z -> tanh(...)`` reshaped to ``(batch, hidden, channels)``.

    The final ``tanh`` bounds the field, which Kidger et al. (2020, appendix) found to help stability.
    """

    def __init__(self, channels: int, hidden: int, width: int = 64, depth: int = 2):
        super().__init__()
        check_sizes(channels=channels, hidden=hidden, width=width)
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 0:
            raise ValueError(f"depth must be a non-negative int, got {depth!r}")
        layers: list[nn.Module] = []
        size = hidden
        for _ in range(depth):
            layers += [nn.Linear(size, width), nn.Softplus()]
            size = width
        layers += [nn.Linear(size, hidden * channels), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.hidden, self.channels = hidden, channels

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if z.shape[-1] != self.hidden:
            raise ValueError(f"z must be (batch, hidden={self.hidden}) for this MLPCDEField, got {tuple(z.shape)}; "
                             f"check the size of z0 (NeuralCDE: of initial's output)")
        return self.net(z).view(*z.shape[:-1], self.hidden, self.channels)
