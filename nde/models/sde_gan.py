"""SDE-GAN pieces (Kidger et al. 2021, "Neural SDEs as infinite-dimensional GANs", eq. 1-2).

Generator (a neural SDE, Stratonovich):
    X0 = zeta(V), V ~ N(0, I);   dX = mu(t, X) dt + sigma(t, X) o dW;   Y = l(X)
Discriminator (a neural CDE driven by the generated or real path Y, with time as a channel):
    H0 = xi(t0, Y0);   dH = f(t, H) dt + g(t, H) o dY;   D = m . H(T)
Trained as a Wasserstein GAN; the discriminator's Lipschitz constraint is enforced by weight
clipping (:func:`clip_lipschitz_`) and LipSwish activations (section 4 of the paper).
"""
from __future__ import annotations

import torch
from torch import nn

from nde.interpolation import linear_interpolation
from nde.interpolation.missing import check_finite_or_nan
from nde.models.neural_cde import cdeint
from nde._checks import flag
from nde.models.neural_ode import as_time_tensor, check_count, check_series, check_sizes, check_solver_options


class LipSwish(nn.Module):
    """``0.909 * x * sigmoid(x)``: SiLU scaled to Lipschitz constant 1 (Chen et al. 2019)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.909 * nn.functional.silu(x)


def lipswish_mlp(inp: int, width: int, out: int, depth: int = 1, final_tanh: bool = False) -> nn.Sequential:
    """MLP ``inp -> width (x depth) -> out`` with LipSwish, optionally a final tanh."""
    layers: list[nn.Module] = [nn.Linear(inp, width), LipSwish()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), LipSwish()]
    layers.append(nn.Linear(width, out))
    if final_tanh:
        layers.append(nn.Tanh())
    return nn.Sequential(*layers)


@torch.no_grad()
def clip_lipschitz_(module: nn.Module) -> None:
    """Clip every ``nn.Linear`` weight in ``module`` to ``[-1/out_features, 1/out_features]``
    in place (as in Kidger et al.'s reference code); call after each discriminator step."""
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module (e.g. the discriminator), got {type(module)}")
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            bound = 1.0 / layer.out_features
            layer.weight.clamp_(-bound, bound)


class SDEGenerator(nn.Module):
    """Neural SDE generator; also the ``sde`` object handed to :mod:`nde.sde` (``f``, ``g``).

    Args:
        data_dim: channels of the generated paths.
        initial_noise_dim: size of ``V``; noise_dim: Brownian dimension; hidden: size of ``X``.
        width, depth: MLP sizes of ``zeta``, ``mu``, ``sigma``.
        method, dt, adjoint: SDE solve (default reversible Heun with its exact O(1)-memory adjoint;
            ``adjoint`` is a bool).
    """

    sde_type = "stratonovich"
    noise_type = "general"

    def __init__(self, data_dim: int, initial_noise_dim: int = 4, noise_dim: int = 4, hidden: int = 16,
                 width: int = 32, depth: int = 1, *, method: str = "reversible_heun", dt: float = 0.1,
                 adjoint: bool = True):
        super().__init__()
        flag(adjoint, "adjoint")
        check_sizes(data_dim=data_dim, initial_noise_dim=initial_noise_dim, noise_dim=noise_dim, hidden=hidden,
                    width=width, depth=depth)
        self.initial = lipswish_mlp(initial_noise_dim, width, hidden, depth)
        self.drift = lipswish_mlp(1 + hidden, width, hidden, depth, final_tanh=True)
        self.diffusion = lipswish_mlp(1 + hidden, width, hidden * noise_dim, depth, final_tanh=True)
        self.readout = nn.Linear(hidden, data_dim)
        self.initial_noise_dim, self.noise_dim, self.hidden = initial_noise_dim, noise_dim, hidden
        self.method, self.dt, self.adjoint = method, dt, adjoint

    def _tx(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([t.to(x.dtype).expand(x.shape[0], 1), x], dim=-1)

    def f(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.drift(self._tx(t, x))

    def g(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.diffusion(self._tx(t, x)).view(x.shape[0], self.hidden, self.noise_dim)

    def forward(self, ts, batch_size: int) -> torch.Tensor:
        """``batch_size`` generated paths at ``ts``: ``(batch_size, len(ts), data_dim)``."""
        from nde.sde import sdeint, sdeint_adjoint  # the SDE core
        check_count(batch_size, "batch_size")
        weight = self.readout.weight
        ts = as_time_tensor(ts, weight.detach(), "ts")
        x0 = self.initial(torch.randn(batch_size, self.initial_noise_dim, device=weight.device, dtype=weight.dtype))
        solve = sdeint_adjoint if self.adjoint else sdeint
        xs = solve(self, x0, ts, method=self.method, dt=self.dt)
        return self.readout(xs.movedim(0, 1))


class _DiscriminatorField(nn.Module):
    """``(t, H) -> [f(t, H) | g(t, H)]`` of shape ``(batch, hidden, 1 + data_dim)``: the first
    column multiplies ``dt`` (the time channel of the path), the rest ``dY``."""

    def __init__(self, data_dim: int, hidden: int, width: int, depth: int):
        super().__init__()
        self.net = lipswish_mlp(1 + hidden, width, hidden * (1 + data_dim), depth, final_tanh=True)
        self.hidden, self.channels = hidden, 1 + data_dim

    def forward(self, t: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        th = torch.cat([t.to(h.dtype).expand(h.shape[0], 1), h], dim=-1)
        return self.net(th).view(h.shape[0], self.hidden, self.channels)


class CDEDiscriminator(nn.Module):
    """Neural CDE discriminator of paths ``ys`` ``(batch, T, data_dim)`` at ``ts`` ``(T,)``.

    The path ``(t, Y)`` is linearly interpolated (differentiable in ``ys``, so generator gradients
    pass through) and the CDE is solved by the ODE core with a fixed-step method on the
    observation grid, one step per gap unless ``step_size`` is given (``method="midpoint"`` by
    default; the paper uses reversible Heun).
    Returns scores ``(batch,)``.
    """

    def __init__(self, data_dim: int, hidden: int = 16, width: int = 32, depth: int = 1, *,
                 method: str = "midpoint", **solver_options):
        super().__init__()
        check_sizes(data_dim=data_dim, hidden=hidden, width=width, depth=depth)
        check_solver_options(solver_options)
        self.initial = lipswish_mlp(1 + data_dim, width, hidden, depth)
        self.field = _DiscriminatorField(data_dim, hidden, width, depth)
        self.readout = nn.Linear(hidden, 1)
        self.data_dim = data_dim
        self.solver_options = {"method": method, **solver_options}

    def forward(self, ys: torch.Tensor, ts) -> torch.Tensor:
        check_series(ys, "ys", self.data_dim)
        check_finite_or_nan(ys, "ys")
        ts = as_time_tensor(ts, ys, "ts", increasing=True)
        if ts.shape[0] != ys.shape[1]:
            raise ValueError(f"ts must have length {ys.shape[1]} to match ys, got {ts.shape[0]}")
        path_data = torch.cat([ts.view(1, -1, 1).expand(ys.shape[0], -1, 1), ys], dim=-1)
        X = linear_interpolation(path_data, ts)
        h0 = self.initial(X.evaluate(ts[0]))          # NaN-filled, unlike path_data[:, 0]
        # Output at every observation: a fixed-step method then steps on the observation grid
        # (one step per gap, however irregular), not on a grid of the smallest gap.
        hs = cdeint(X, self.field, h0, ts, **self.solver_options)
        return self.readout(hs[:, -1]).squeeze(-1)
