"""The reverse-time SDEs of a diffusion model as nde SDE objects (solvable by ``nde.solve_sde`` / ``nde.sdeint``).

Both objects follow the torchsde protocol of :mod:`nde.sde.protocol` on a flat state ``(batch, d)``,
``d = prod(state_shape)``, with time the increasing sampling clock u in [0, 1] of
:class:`~nde.diffusion.clock.SamplingClock` (u = 0 at ``t_start``, u = 1 at ``t_end``). The noise does not
depend on the state ("additive" in the SDE sense), stored as ``noise_type = "diagonal"`` (``g`` of shape
``(batch, d)``, no d x d matrices): the Ito and Stratonovich readings coincide, so ``sde_type`` may be
either and every nde SDE method applies (euler, milstein, srk, heun, euler_heun, midpoint, reversible_heun).

- :class:`ReverseSDE`: Song et al. 2021, Eq. 6, on x:
      dx = [f(t) x - g(t)^2 grad log p_t(x)] dt + g(t) dW_bar,   f = dlog alpha/dt,  g^2 = dsigma^2/dt - 2 f sigma^2,
  with grad log p_t = -eps/sigma. With g^2 = -2 sigma^2 dlambda/dt and dt = (dt/dlambda) dlambda this is,
  in the increasing variable lambda (the form SDE-DPM-Solver integrates, Lu et al. 2022b),
      dx = [a(lambda) x - 2 sigma eps(x, t)] dlambda + sqrt(2) sigma dW_lambda,   a = dlog alpha/dlambda.
- :class:`EDMSDE`: Karras et al. 2022, Eq. 6 (the backward member dx_-), on y = x/alpha with noise level
  rho = sigma/alpha as EDM's sigma(t) (so sigma_dot = 1 in rho-time):
      dy = -rho grad log p drho - beta(rho) rho^2 grad log p drho + sqrt(2 beta(rho)) rho dw,
  grad_y log p(y; rho) = -eps/rho. Written with the churn c = beta rho (beta in units of sigma_dot/sigma)
  and drho = -rho dlambda:
      dy = -(1 + c) rho eps(alpha y, t) dlambda + sqrt(2 c) rho dW_lambda.
  c = 0 is the probability-flow ODE; c = 1 is the reverse SDE above (y = x/alpha of it, Ito's formula);
  every c >= 0 has the same marginals p_t, larger c forgets more of x_T (more Langevin mixing).

On the clock both drifts are multiplied by lambda'(u) and both diffusions by sqrt(lambda'(u)).
``model(x, t)`` is the noise prediction with x ``(batch, *state_shape)`` and t ``(batch,)``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .clock import SamplingClock
from .models import call_model, check_model_schedule
from .schedules import NoiseSchedule

SDE_TYPES = ("ito", "stratonovich")


class _ClockedSDE(torch.nn.Module):
    """Shared parts: the clock, the flat state, the torchsde attributes, the model call."""

    noise_type = "diagonal"

    def __init__(self, model: Callable, schedule: NoiseSchedule, state_shape, clock: SamplingClock | None,
                 sde_type: str):
        super().__init__()
        if not callable(model):
            raise TypeError(f"model must be callable as model(x, t), got {type(model).__name__}")
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be an nde.diffusion.NoiseSchedule, got {type(schedule).__name__}")
        check_model_schedule(model, schedule)
        if sde_type not in SDE_TYPES:
            raise ValueError(f"sde_type must be one of {SDE_TYPES}, got {sde_type!r}")
        clock = SamplingClock(schedule) if clock is None else clock
        if not isinstance(clock, SamplingClock) or clock.schedule != schedule:
            raise ValueError("clock must be a SamplingClock of the same schedule")
        self.model, self.schedule, self.clock, self.sde_type = model, schedule, clock, sde_type
        self.state_shape = tuple(int(n) for n in state_shape)

    def _eps(self, x_flat: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Noise prediction on the flat state: (batch, d) -> (batch, d)."""
        x = x_flat.reshape(x_flat.shape[0], *self.state_shape)
        return call_model(self.model, x, t.to(x.dtype)).reshape(x_flat.shape)

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.state_shape:
            raise ValueError(f"x_T must have shape (batch, *{self.state_shape}), got {tuple(x.shape)}")
        return x.reshape(x.shape[0], -1)

    def _end_scale(self, like: torch.Tensor, t: float) -> torch.Tensor:
        return self.schedule.alpha(torch.tensor(t, dtype=torch.float64)).to(like)

    def f(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.f_and_g(u, y)[0]


class ReverseSDE(_ClockedSDE):
    """Reverse-time SDE of Song et al. 2021 on x, on the sampling clock (see module docstring).

    Args:
        model: noise prediction ``model(x, t)``.
        schedule: the noise schedule.
        state_shape: the shape of one sample, ``x_T.shape[1:]``.
        clock: the :class:`SamplingClock` (default: logSNR over the schedule's interval).
        sde_type: "ito" or "stratonovich" (the same SDE: its noise does not depend on x); pick the one the
            nde method solves.

    Use ``to_state(x_T)`` for the initial ``(batch, d)`` state at u = 0 and ``from_state(y)`` for the sample
    at u = 1::

        sde = ReverseSDE(model, schedule, x_T.shape[1:], sde_type="stratonovich")
        sol = nde.solve_sde(sde, sde.to_state(x_T), [0.0, 1.0], method="heun", dt=1 / 100)
        x_0 = sde.from_state(sol.ys[-1])
    """

    def __init__(self, model: Callable, schedule: NoiseSchedule, state_shape, clock: SamplingClock | None = None,
                 sde_type: str = "ito"):
        super().__init__(model, schedule, state_shape, clock, sde_type)

    def f_and_g(self, u: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift lambda' (a x - 2 sigma eps) and diffusion sqrt(2 lambda') sigma, both (batch, d)."""
        t, lam, dlam = self.clock(u)
        sigma = self.schedule.sigma(t)
        linear = (dlam * self.schedule.dlog_alpha_dlambda(lam)).to(x.dtype)
        drift = linear * x - (2.0 * dlam * sigma).to(x.dtype) * self._eps(x, t)
        return drift, self._diffusion(dlam, sigma, x)

    def g(self, u: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t, _, dlam = self.clock(u)
        return self._diffusion(dlam, self.schedule.sigma(t), x)

    @staticmethod
    def _diffusion(dlam: torch.Tensor, sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(2.0 * dlam).mul(sigma).to(x.dtype).expand_as(x)

    def to_state(self, x_T: torch.Tensor) -> torch.Tensor:
        """(batch, *state_shape) -> the flat (batch, d) state."""
        return self._flat(x_T)

    def from_state(self, state: torch.Tensor) -> torch.Tensor:
        """Flat state at u = 1 -> the sample (batch, *state_shape)."""
        return state.reshape(state.shape[0], *self.state_shape)


class EDMSDE(_ClockedSDE):
    """Karras et al. 2022 Eq. 6 (backward SDE with Langevin churn) on y = x/alpha, on the sampling clock.

    Args:
        model, schedule, state_shape, clock, sde_type: as :class:`ReverseSDE`.
        churn: c = beta(t) sigma(t)/sigma_dot(t) >= 0, the Langevin rate in units of sigma_dot/sigma: a float,
            or a callable mapping the noise level rho (0-d float64 tensor) to c (0-d tensor, >= 0).
            0 is the PF-ODE, 1 the reverse SDE of Song et al.
        churn_window: (rho_min, rho_max): c is zero outside this noise-level window (EDM's S_tmin, S_tmax).

    ``to_state(x_T)`` divides by alpha(t_start); ``from_state(y)`` multiplies by alpha(t_end).
    """

    def __init__(self, model: Callable, schedule: NoiseSchedule, state_shape, clock: SamplingClock | None = None,
                 sde_type: str = "stratonovich", churn: float | Callable = 1.0,
                 churn_window: tuple[float, float] = (0.0, math.inf)):
        super().__init__(model, schedule, state_shape, clock, sde_type)
        if not callable(churn):
            if isinstance(churn, bool) or not isinstance(churn, (int, float)) or not churn >= 0:
                raise ValueError(f"churn must be a float >= 0 or a callable rho -> c, got {churn!r}")
            churn = float(churn)
        low, high = (float(v) for v in churn_window)
        if not 0 <= low <= high:
            raise ValueError(f"churn_window must be (rho_min, rho_max) with 0 <= rho_min <= rho_max, "
                             f"got {churn_window!r}")
        self.churn, self.churn_window = churn, (low, high)

    def churn_at(self, rho: torch.Tensor) -> torch.Tensor:
        """The churn c(rho) (0-d float64), zero outside ``churn_window``."""
        c = self.churn(rho) if callable(self.churn) else torch.full_like(rho, self.churn)
        inside = (rho >= self.churn_window[0]) & (rho <= self.churn_window[1])
        return torch.where(inside, torch.as_tensor(c, dtype=rho.dtype, device=rho.device), torch.zeros_like(rho))

    def f_and_g(self, u: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift -lambda' (1 + c) rho eps(alpha y, t) and diffusion sqrt(2 c lambda') rho, both (batch, d)."""
        t, lam, dlam = self.clock(u)
        rho = torch.exp(-lam)
        churn = self.churn_at(rho)
        alpha = self.schedule.alpha(t).to(y.dtype)
        drift = (-dlam * (1.0 + churn) * rho).to(y.dtype) * self._eps(alpha * y, t)
        return drift, self._diffusion(dlam, churn, rho, y)

    def g(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _, lam, dlam = self.clock(u)
        rho = torch.exp(-lam)
        return self._diffusion(dlam, self.churn_at(rho), rho, y)

    @staticmethod
    def _diffusion(dlam, churn, rho, y):
        return torch.sqrt(2.0 * churn * dlam).mul(rho).to(y.dtype).expand_as(y)

    def to_state(self, x_T: torch.Tensor) -> torch.Tensor:
        """(batch, *state_shape) at t_start -> the flat state y = x/alpha."""
        x = self._flat(x_T)
        return x / self._end_scale(x, self.clock.t_start)

    def from_state(self, state: torch.Tensor) -> torch.Tensor:
        """Flat y at u = 1 -> the sample x = alpha(t_end) y, (batch, *state_shape)."""
        x = state * self._end_scale(state, self.clock.t_end)
        return x.reshape(state.shape[0], *self.state_shape)
