"""Stochastic samplers: the reverse SDE and EDM's churn, by closed-form updates or on the nde SDE core.

- :func:`reverse_sde`: the reverse-time SDE of Song et al. 2021 (:class:`~nde.diffusion.sdes.ReverseSDE`).
  ``method="dpm_solver++1"`` (default) is SDE-DPM-Solver++(1) (Lu et al. 2022b, Eq. 9), a closed-form
  exponential-integrator update, exact in the linear drift and the noise, first order in the data prediction:
      x_t = (sigma_t/sigma_s) e^{-h} x_s + alpha_t (1 - e^{-2h}) x0_s + sigma_t sqrt(1 - e^{-2h}) z.
  Any nde SDE method name (``euler``, ``milstein``, ``srk``, ``heun``, ``euler_heun``, ``midpoint``,
  ``reversible_heun``) instead solves the SDE with ``nde.solve_sde``, in fixed steps or adaptively, on a
  Brownian path that is reproducible from ``generator`` or given as ``bm``.
- :func:`edm_sde`: Karras et al. 2022, Eq. 6 (:class:`~nde.diffusion.sdes.EDMSDE`) with churn c = beta sigma /
  sigma_dot, solved on the nde SDE core (default Heun: the noise is additive, so Heun is the trapezoidal rule
  for the drift plus the exact noise increment).
- :func:`edm_sampler`: Karras et al. 2022, Algorithm 2, on y = x/alpha with noise level rho = sigma/alpha
  (dy/drho = eps): raise the noise from rho_i to rho_hat = (1 + gamma) rho_i by adding fresh noise
  ("churn"), then one Heun step of the PF-ODE from rho_hat to rho_{i+1}. With ``s_churn = 0`` it is the
  deterministic EDM Heun sampler (2 NFE per step).

Relation of Algorithm 2 to Eq. 6: a step of Algorithm 2 is a splitting of Eq. 6. Its Heun step from rho_hat
rather than rho_i adds the drift -gamma_i rho_i eps, and its churn adds variance (2 gamma_i + gamma_i^2) rho_i^2;
Eq. 6 over the same step (h_i = lambda_{i+1} - lambda_i) adds -c h_i rho eps and 2 c h_i rho^2. To first order
in gamma_i, Algorithm 2 is Eq. 6 with c_i = gamma_i / h_i; on logSNR steps (h = (lambda_end - lambda_start)/N,
gamma = s_churn/N) that is the constant churn c = s_churn / (lambda_end - lambda_start)
(:func:`edm_churn_equivalent`; tested to converge as N grows).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .._checks import check_generator
from ..sde import METHOD_NAMES, solve_sde
from .clock import SamplingClock
from .dpm_solver import _coefficients
from .models import call_model, check_model_schedule, check_x_T
from .parameterization import eps_to_x0
from .schedules import NoiseSchedule
from .sdes import EDMSDE, ReverseSDE
from .timesteps import check_steps, sampling_times

EXACT_METHOD = "dpm_solver++1"
REVERSE_SDE_METHODS = (EXACT_METHOD,) + METHOD_NAMES
_STRATONOVICH = ("euler_heun", "heun", "midpoint", "reversible_heun")
_DT_PAD = 1.0 + 1e-12  # steps of (1 + 1e-12)/N end on u = 1 after exactly N steps, despite round-off


def reverse_sde(model: Callable, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int,
                skip_type: str = "logSNR", t_start: float | None = None, t_end: float | None = None,
                generator: torch.Generator | None = None, method: str = EXACT_METHOD, bm=None,
                adaptive: bool = False, rtol: float = 1e-3, atol: float = 1e-3) -> torch.Tensor:
    """Sample the reverse-time SDE from x_T (B, *state) at ``t_start`` to ``t_end``; returns (B, *state).

    Args:
        steps: number of steps on the ``skip_type`` grid (:func:`sampling_times`). NFE = steps for
            ``"dpm_solver++1"``, steps x the method's evaluations per step (+1 validation call of the SDE
            core) otherwise. With ``adaptive=True``, 1/steps is the first trial step on the clock u in [0, 1].
        generator: seeds the noise (reproducible given x_T and the generator's state). On the SDE core it seeds
            the solve's default path on u in [0, 1] (:class:`nde.sde.BrownianGrid` on the step nodes, or
            :class:`nde.sde.BrownianPath` with ``adaptive=True``).
        method: ``"dpm_solver++1"`` (SDE-DPM-Solver++(1), closed form) or an nde SDE method name.
        bm: the Brownian path on u in [0, 1] with shape (B, prod(state)) (SDE-core methods only; ``srk``
            needs ``levy_area_approximation="space-time"``). Exclusive with ``generator``.
        adaptive, rtol, atol: adaptive step sizes on the SDE core (step doubling, nde.PIController).
    """
    check_x_T(x_T)
    if method == EXACT_METHOD:
        if bm is not None or adaptive:
            raise ValueError(f"bm and adaptive need an SDE-core method, got method={method!r}")
        return _dpm_solver_pp1(model, x_T, schedule, steps, skip_type, t_start, t_end, generator)
    _check_core_method(method)
    clock = SamplingClock(schedule, skip_type, t_start, t_end)
    sde = ReverseSDE(model, schedule, _state_shape(x_T), clock, _sde_type(method))
    return _solve_on_core(sde, x_T, steps, method, generator, bm, adaptive, rtol, atol)


def edm_sde(model: Callable, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int, churn: float | Callable = 1.0,
            s_tmin: float = 0.0, s_tmax: float = math.inf, method: str = "heun", skip_type: str = "edm",
            t_start: float | None = None, t_end: float | None = None, generator: torch.Generator | None = None,
            bm=None, adaptive: bool = False, rtol: float = 1e-3, atol: float = 1e-3) -> torch.Tensor:
    """EDM stochastic sampling, Karras et al. 2022 Eq. 6, solved by the nde SDE core; returns (B, *state).

    Args:
        churn: c = beta(t) sigma/sigma_dot >= 0 (float, or callable rho -> c); 0 is the PF-ODE, 1 the reverse
            SDE of Song et al. Algorithm 2's ``s_churn`` on N logSNR steps corresponds to
            :func:`edm_churn_equivalent`.
        s_tmin, s_tmax: the noise-level window (in rho = sigma/alpha) where the churn is on.
        method: an nde SDE method name (default ``"heun"``); steps, generator, bm, adaptive, rtol, atol as in
            :func:`reverse_sde`. NFE = steps x the method's evaluations per step (+1 validation call).

    Stability: at high noise the drift on y is linear with rate -(1 + c) per unit lambda, so Heun needs
    (1 + c) h <= 2 for a step h in lambda; with few steps (about 10 or fewer on VP schedules) it diverges where
    :func:`edm_sampler` (whose Heun step sees only the PF-ODE) does not (benchmarks/results/diffusion_stochastic_*).
    """
    _check_core_method(method)
    _check_churn_window(s_tmin, s_tmax)
    clock = SamplingClock(schedule, skip_type, t_start, t_end)
    sde = EDMSDE(model, schedule, _state_shape(x_T), clock, _sde_type(method), churn, (s_tmin, s_tmax))
    _check_churn_on_steps(sde, check_steps(steps))
    return _solve_on_core(sde, x_T, steps, method, generator, bm, adaptive, rtol, atol)


def edm_churn_equivalent(s_churn: float, schedule: NoiseSchedule, t_start: float | None = None,
                         t_end: float | None = None) -> float:
    """The churn c of Eq. 6 that Algorithm 2 with ``s_churn`` approximates on logSNR steps (see module docstring).

    c = s_churn / (lambda(t_end) - lambda(t_start)), valid while gamma = s_churn/N stays below sqrt(2) - 1.
    """
    clock = SamplingClock(schedule, "logSNR", t_start, t_end)
    return float(s_churn) / (clock.lambda_end - clock.lambda_start)


def edm_sampler(model: Callable, x_T: torch.Tensor, schedule: NoiseSchedule, steps: int, s_churn: float = 0.0,
                s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0, skip_type: str = "edm",
                t_start: float | None = None, t_end: float | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """EDM stochastic sampler (Karras et al. 2022, Algorithm 2); NFE = 2 * steps.

    Args:
        s_churn, s_tmin, s_tmax, s_noise: EDM's churn amount, the noise-level window (in rho = sigma/alpha)
            where churn is applied, and the scale of the added noise.
    """
    check_x_T(x_T)
    for name, value in (("s_churn", s_churn), ("s_noise", s_noise)):
        if not value >= 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    _check_churn_window(s_tmin, s_tmax)
    times = sampling_times(schedule, steps, skip_type, t_start, t_end)
    check_model_schedule(model, schedule)
    rhos = torch.exp(-schedule.lambda_(times)).tolist()
    gamma_max = min(s_churn / steps, math.sqrt(2.0) - 1.0)
    y = x_T / float(schedule.alpha(times[0]))
    for i in range(steps):
        rho, rho_next = rhos[i], rhos[i + 1]
        gamma = gamma_max if s_tmin <= rho <= s_tmax else 0.0
        rho_hat = rho * (1.0 + gamma)
        if gamma > 0:
            y = y + math.sqrt(rho_hat**2 - rho**2) * s_noise * _randn(y, generator)
        slope = _eps_at_rho(model, schedule, y, rho_hat)
        y_euler = y + (rho_next - rho_hat) * slope
        y = y + (rho_next - rho_hat) * 0.5 * (slope + _eps_at_rho(model, schedule, y_euler, rho_next))
    return float(schedule.alpha(times[-1])) * y


def _dpm_solver_pp1(model, x_T, schedule, steps, skip_type, t_start, t_end, generator):
    """SDE-DPM-Solver++(1); NFE = steps. Deterministic given x_T and ``generator``."""
    times = sampling_times(schedule, steps, skip_type, t_start, t_end)
    check_model_schedule(model, schedule)
    lam, alpha, sigma = _coefficients(schedule, times)
    x = x_T
    for i in range(steps):
        x0 = eps_to_x0(call_model(model, x, times[i]), x, alpha[i], sigma[i])
        h = lam[i + 1] - lam[i]
        decay = -math.expm1(-2.0 * h)
        noise = _randn(x, generator)
        x = ((sigma[i + 1] / sigma[i] * math.exp(-h)) * x + alpha[i + 1] * decay * x0
             + sigma[i + 1] * math.sqrt(decay) * noise)
    return x


def _solve_on_core(sde, x_T, steps, method, generator, bm, adaptive, rtol, atol) -> torch.Tensor:
    """Integrate ``sde`` over the clock u in [0, 1] with ``nde.solve_sde``; fixed steps du = 1/steps."""
    check_steps(steps)
    if bm is not None and generator is not None:
        raise ValueError("give at most one of bm and generator")
    if bm is not None and not callable(bm):
        raise TypeError(f"bm must be a Brownian path callable as bm(ua, ub), got {type(bm).__name__}")
    entropy = None
    if bm is None and check_generator(generator) is not None:
        entropy = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
    state = sde.to_state(x_T)
    options = {"grad_free": True} if method == "milstein" else None  # its correction is 0: g does not depend on x
    sol = solve_sde(sde, state, [0.0, 1.0], bm=bm, method=method, dt=_DT_PAD / steps, adaptive=adaptive,
                    rtol=rtol, atol=atol, entropy=entropy, options=options)
    return sde.from_state(sol.ys[-1])


def _check_core_method(method: str) -> None:
    if method not in METHOD_NAMES:
        raise ValueError(f"method must be one of {REVERSE_SDE_METHODS} ({EXACT_METHOD!r} for reverse_sde only), "
                         f"got {method!r}")


def _check_churn_window(s_tmin: float, s_tmax: float) -> None:
    if not 0 <= s_tmin <= s_tmax:
        raise ValueError(f"need 0 <= s_tmin <= s_tmax, got s_tmin={s_tmin}, s_tmax={s_tmax}")


def _check_churn_on_steps(sde: EDMSDE, steps: int) -> None:
    """A callable churn must be finite and >= 0 at the step times (checked once, on the host, before the solve)."""
    if not callable(sde.churn):
        return
    for u in torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64):
        rho = torch.exp(-sde.clock(u)[1])
        c = float(sde.churn_at(rho))
        if not 0 <= c < math.inf:
            raise ValueError(f"churn(rho) must be finite and >= 0, got {c} at rho={float(rho)}")


def _sde_type(method: str) -> str:
    return "stratonovich" if method in _STRATONOVICH else "ito"


def _state_shape(x_T: torch.Tensor) -> tuple:
    return tuple(check_x_T(x_T).shape[1:])


def _eps_at_rho(model: Callable, schedule: NoiseSchedule, y: torch.Tensor, rho: float) -> torch.Tensor:
    """dy/drho = eps(alpha y, t) at noise level rho = e^{-lambda}."""
    t = schedule.t_of_lambda(torch.tensor(-math.log(rho), dtype=torch.float64))
    return call_model(model, float(schedule.alpha(t)) * y, float(t))


def _randn(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like ``like``, drawn on the generator's device (for reproducibility)."""
    device = generator.device if check_generator(generator) is not None else like.device
    return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=device).to(like.device)
