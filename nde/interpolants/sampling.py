"""Generative dynamics of a stochastic interpolant: ODE, forward and backward SDEs.

Albergo, Boffi & Vanden-Eijnden (arXiv 2303.08797), Cor. 2.3: with velocity b and score s,
for any eps(t) >= 0 the following all have marginal rho(t):

* ODE            dX/dt = b(t, X)                                 (:func:`sample_ode`)
* forward SDE    dX = (b + eps s) dt + sqrt(2 eps) dW,  t: t0 -> t1 (:func:`sample_sde`, direction="forward")
* backward SDE   dX = (b - eps s) dt + sqrt(2 eps) dW^B, t: t1 -> t0 (direction="backward")

The ODE runs on the nde ODE core (adaptive ``nde.odeint``), the SDEs on the nde SDE core
(``nde.sdeint``, Euler-Maruyama with a fixed step). Fields take ``(t, x)`` with ``t`` of shape ``(B,)``.
Where b or s divide by gamma or alpha, integrate on [t_min, t_max] inside (0, 1).
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .._checks import check_generator, positive_int
from .interpolant import check_shape, expand_time, per_sample

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Diffusion = Callable[[torch.Tensor], torch.Tensor] | float


def _check_state(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.numel() == 0:
        raise ValueError(f"x must be a non-empty (batch, *state) tensor, got {getattr(x, 'shape', type(x))}")


def _check_interval(t0: float, t1: float) -> None:
    if not 0 <= t0 < t1 <= 1:
        raise ValueError(f"need 0 <= t0 < t1 <= 1, got t0={t0}, t1={t1}")


def _output_times(times: torch.Tensor | None, t0: float, t1: float) -> torch.Tensor:
    """float64 CPU output times: [t0, t1], or ``times`` checked to increase inside [t0, t1].

    Given times may overshoot [t0, t1] by their dtype's round-off (float32(0.999) > 0.999); they are clamped, and
    times within that round-off of t0 or t1 are snapped to it.
    """
    if times is None:
        return torch.tensor([float(t0), float(t1)], dtype=torch.float64)
    given = torch.as_tensor(times).detach()
    grid = given.to("cpu", torch.float64)
    slack = 4 * torch.finfo(given.dtype).eps * max(1.0, abs(t0), abs(t1)) if given.is_floating_point() else 0.0
    inside = grid.dim() == 1 and grid.numel() >= 2 and bool(((grid >= t0 - slack) & (grid <= t1 + slack)).all())
    grid = grid.clamp(t0, t1)
    grid = torch.where((grid - t0).abs() <= slack, float(t0), torch.where((grid - t1).abs() <= slack, float(t1), grid))
    if not inside or bool((grid.diff() <= 0).any()):
        raise ValueError(f"times must be a 1-D increasing tensor inside [t0, t1] = [{t0}, {t1}], got {given}")
    return grid


def sample_ode(b: Field, x: torch.Tensor, t0: float = 0.0, t1: float = 1.0, *, reverse: bool = False,
               times: torch.Tensor | None = None, method: str = "dopri5", rtol: float = 1e-5,
               atol: float = 1e-5) -> torch.Tensor:
    """Integrate dX/dt = b(t, X) from t0 to t1 (or from t1 back to t0 when ``reverse``).

    Args:
        b: velocity field.
        x: ``(B, *state)`` samples at the starting time.
        times: optional increasing output times in [t0, t1] (the path is returned, shape
            ``(len(times), B, *state)``, in the order of integration: decreasing times when
            ``reverse``); otherwise only the end state ``(B, *state)``. ``x`` is at t0 (t1 when ``reverse``)
            whether or not ``times`` contains it.
        method, rtol, atol: passed to ``nde.odeint`` (adaptive by default).

    b is only evaluated at times inside [t0, t1] (clamped), since adaptive solvers may probe
    past the end; choose [t0, t1] where b is finite.
    """
    from nde import odeint

    _check_state(x)
    _check_interval(t0, t1)
    grid = _output_times(times, t0, t1)
    # Integrate in tau from 0 to len; t = start + sign * tau keeps the solver's time increasing. The solve starts
    # at t0 (t1 when reverse), where x is, also when the output times do not contain it.
    start, sign = (float(t1), -1.0) if reverse else (float(t0), 1.0)
    order = grid.flip(0) if reverse else grid
    skip = int(float(order[0]) != start)
    order = torch.cat([order.new_tensor([start]), order]) if skip else order
    tau = (order - start).abs()

    lo, hi = float(order.min()), float(order.max())

    def rhs(s, y):
        # Adaptive solvers may probe past the last time; keep b inside [lo, hi], where it is defined.
        return sign * check_shape(b(expand_time(start + sign * s, y).clamp(lo, hi), y), y, "b(t, x)", "x")

    path = odeint(rhs, x, tau.to(x.device), method=method, rtol=rtol, atol=atol)
    return path[-1] if times is None else path[skip:]


def _epsilon(eps: Diffusion) -> Callable[[torch.Tensor], torch.Tensor]:
    """eps as a function of ``(B,)`` times returning ``(B,)`` (a float or 0-d result is broadcast)."""
    if not callable(eps):
        if isinstance(eps, torch.Tensor) and eps.numel() != 1:
            raise ValueError(f"eps must be a float or a callable eps(t), got a tensor of shape {tuple(eps.shape)}")
        if not 0 <= float(eps) < math.inf:
            raise ValueError(f"eps must be non-negative and finite, got {eps}")
        return lambda t: torch.full_like(t, float(eps))

    def checked(t: torch.Tensor) -> torch.Tensor:
        value = eps(t)
        value = value if isinstance(value, torch.Tensor) else torch.as_tensor(value, dtype=t.dtype, device=t.device)
        if value.dim() == 0:
            return value.to(t).expand(t.shape)
        if value.shape != t.shape:
            raise ValueError(f"eps(t) returned shape {tuple(value.shape)}, expected t's shape {tuple(t.shape)}")
        return value
    return checked


def _check_epsilon_on(eps: Callable[[torch.Tensor], torch.Tensor], times: torch.Tensor) -> None:
    """eps must be finite and >= 0 at the integration times (checked once, before the solve)."""
    values = eps(times)
    if not bool(((values >= 0) & torch.isfinite(values)).all()):
        raise ValueError(f"eps(t) must be finite and >= 0 on [t0, t1]; got {values.min().item()} "
                         f"to {values.max().item()} at the step times")


# sample_sde's methods and the SDE type each is declared with (the same equation: the noise is additive).
SDE_METHODS = {"euler": "ito", "heun": "stratonovich"}


class _InterpolantSDE(torch.nn.Module):
    """The forward or time-reversed interpolant SDE in torchsde form (diagonal noise) on flat states.

    Time tau runs forward from 0: t = t0 + tau (forward) or t = t1 - tau (backward), so that
    f = +(b + eps s) forward and f = -(b - eps s) backward; g = sqrt(2 eps) in both. g does not depend on the
    state (additive noise), so the Ito and Stratonovich forms are the same equation and either ``sde_type``
    may be declared (Stratonovich for the Heun method).
    """

    noise_type = "diagonal"

    def __init__(self, b: Field, s: Field, eps: Callable[[torch.Tensor], torch.Tensor], shape: torch.Size,
                 start: float, forward: bool, sde_type: str = "ito"):
        super().__init__()
        self.b, self.s, self.eps, self.shape, self.start, self.forward = b, s, eps, shape, start, forward
        self.sde_type = sde_type

    def _time(self, tau: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return expand_time(self.start + tau if self.forward else self.start - tau, y)

    def f(self, tau: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = y.reshape(self.shape)
        t = self._time(tau, y)
        e = per_sample(self.eps(t), x)
        score = check_shape(self.s(t, x), x, "s(t, x)", "x")
        eps_s = torch.where(e > 0, e * score, torch.zeros_like(x))  # eps s := 0 where eps = 0 (s may be inf)
        b = check_shape(self.b(t, x), x, "b(t, x)", "x")
        return (b + eps_s if self.forward else eps_s - b).flatten(1)

    def g(self, tau: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = self._time(tau, y)
        return (2 * self.eps(t)).sqrt()[:, None].expand_as(y)


def sample_sde(b: Field, s: Field, x: torch.Tensor, eps: Diffusion, t0: float = 0.0, t1: float = 1.0, *,
               steps: int = 200, direction: str = "forward", return_path: bool = False,
               generator: torch.Generator | None = None, method: str = "euler") -> torch.Tensor:
    """Fixed steps on the nde SDE core (``nde.sdeint``) for the forward or backward interpolant SDE (Cor. 2.3).

    forward:  dX = (b + eps s)(t, X) dt + sqrt(2 eps(t)) dW,     t0 -> t1
    backward: dX = (b - eps s)(t, X) dt + sqrt(2 eps(t)) dW^B,   t1 -> t0 (solved in tau = t1 - t)

    Args:
        eps: a constant >= 0 or a callable eps(t) on ``(B,)`` times. Where s is singular (an end where
            the latent scale vanishes) let eps vanish there too, e.g. eps(t) = eps0 * latent_scale(t):
            the product eps s is then finite, and it is taken as 0 wherever eps(t) = 0.
        steps: number of uniform steps.
        return_path: return ``(steps + 1, B, *state)`` (in the order of integration) instead of the end state.
        generator: seeds the Brownian path (reproducible sampling).
        method: "euler" (Euler-Maruyama: one drift evaluation per step, weak order 1) or "heun" (the
            Stratonovich Heun predictor-corrector, exact in form here because the noise is additive: two drift
            evaluations per step, strong order 1 and weak order 2 for additive noise).
    Returns the end state ``(B, *state)`` (at t1 forward, t0 backward).
    """
    from nde import BrownianPath, sdeint

    _check_state(x)
    _check_interval(t0, t1)
    if direction not in ("forward", "backward"):
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    steps = positive_int(steps, "steps")
    check_generator(generator)
    if method not in SDE_METHODS:
        raise ValueError(f"method must be one of {tuple(SDE_METHODS)}, got {method!r}")
    forward = direction == "forward"
    eps_fn = _epsilon(eps)
    sde = _InterpolantSDE(b, s, eps_fn, x.shape, t0 if forward else t1, forward, SDE_METHODS[method])
    span = float(t1) - float(t0)
    # Times in float64 (the state may be float32): the Brownian path must cover exactly the span of taus.
    taus = torch.linspace(0.0, span, steps + 1, dtype=torch.float64, device=x.device)
    _check_epsilon_on(eps_fn, (t0 + taus).to(x.dtype))
    y0 = x.flatten(1)
    entropy = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
    bm = BrownianPath(0.0, float(taus[-1]), y0.shape, dtype=x.dtype, device=x.device, entropy=entropy)
    grid = taus if return_path else taus[[0, -1]]
    ys = sdeint(sde, y0, grid, bm=bm, method=method, dt=span / steps)
    ys = ys.reshape(ys.shape[:1] + x.shape)
    return ys if return_path else ys[-1]


def _exact_divergence(f: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum_i d f_i / d x_i by one backward pass per dimension (cost O(d)); ``(B,)``. 0 where f ignores x."""
    flat = f.flatten(1)
    div = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    if not f.requires_grad:
        return div
    for i in range(flat.shape[1]):
        grad = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=True, allow_unused=True)[0]
        if grad is not None:
            div = div + grad.flatten(1)[:, i]
    return div


def _hutchinson_divergence(f: torch.Tensor, x: torch.Tensor, probe: torch.Tensor) -> torch.Tensor:
    """Unbiased estimate E_v[v^T (df/dx) v] with a fixed Rademacher probe v; ``(B,)``. 0 where f ignores x."""
    if not f.requires_grad:
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    grad = torch.autograd.grad((f * probe).sum(), x, allow_unused=True)[0]
    if grad is None:
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    return (grad * probe).flatten(1).sum(1)


def log_likelihood(b: Field, x: torch.Tensor, base_log_prob: Callable[[torch.Tensor], torch.Tensor],
                   t0: float = 0.0, t1: float = 1.0, *, divergence: str = "exact",
                   generator: torch.Generator | None = None, method: str = "dopri5",
                   rtol: float = 1e-5, atol: float = 1e-5) -> torch.Tensor:
    """log rho_hat(t1, x) through the probability-flow ODE (paper Lemma 2.5):

        log rho(t1, x) = log rho(t0, X_{t0}) - int_{t0}^{t1} div b(t, X_t) dt,

    with X solved backwards from X_{t1} = x on the nde ODE core, jointly with the integral.

    Args:
        x: ``(B, *state)`` points at t1.
        base_log_prob: log rho(t0, .) mapping ``(B, *state)`` to ``(B,)``.
        divergence: ``"exact"`` (d backward passes; small d) or ``"hutchinson"`` (one
            Rademacher probe per sample held fixed along the path; unbiased, for large d).
    Returns ``(B,)`` log-densities. Gradients are not propagated (evaluation only).
    """
    from nde import odeint

    _check_state(x)
    _check_interval(t0, t1)
    if divergence not in ("exact", "hutchinson"):
        raise ValueError(f"divergence must be 'exact' or 'hutchinson', got {divergence!r}")
    check_generator(generator)
    probe = None
    if divergence == "hutchinson":
        probe = torch.randint(0, 2, x.shape, generator=generator).to(x) * 2 - 1

    shape, d = x.shape, x[0].numel()

    def rhs(tau, state):
        with torch.enable_grad():
            y = state[:, :d].reshape(shape).detach().requires_grad_(True)
            t = expand_time(t1 - tau, y).clamp(t0, t1)  # solvers may probe past t0
            f = check_shape(b(t, y), y, "b(t, x)", "x")
            div = _exact_divergence(f, y) if probe is None else _hutchinson_divergence(f, y, probe)
        # Augmented state [X, Delta] in tau = t1 - t: dX/dtau = -b, dDelta/dtau = -div b, so Delta = -int div b dt.
        return torch.cat([-f.detach().flatten(1), -div.detach()[:, None]], dim=1)

    tau = torch.tensor([0.0, t1 - t0], dtype=x.dtype, device=x.device)
    state0 = torch.cat([x.detach().flatten(1), x.new_zeros(x.shape[0], 1)], dim=1)
    end = odeint(rhs, state0, tau, method=method, rtol=rtol, atol=atol)[-1]
    base = base_log_prob(end[:, :d].reshape(shape))
    if not isinstance(base, torch.Tensor) or base.shape != x.shape[:1]:
        raise ValueError(f"base_log_prob must return a tensor of shape ({x.shape[0]},), got "
                         f"{getattr(base, 'shape', type(base).__name__)}")
    return base + end[:, d]


def gaussian_log_prob(x: torch.Tensor) -> torch.Tensor:
    """log N(x; 0, I) per sample, ``(B,)`` (the base density of a one-sided interpolant)."""
    d = x[0].numel()
    return -0.5 * x.flatten(1).square().sum(1) - 0.5 * d * math.log(2 * math.pi)
