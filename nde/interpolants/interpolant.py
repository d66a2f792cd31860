"""Spatially linear stochastic interpolants x_t = alpha(t) x0 + beta(t) x1 + gamma(t) z.

Albergo, Boffi & Vanden-Eijnden, "Stochastic Interpolants: A Unifying Framework for Flows
and Diffusions" (arXiv 2303.08797), Def. 2.1, Sec. 3.2-3.3 and Sec. 4 (Table 4).
Time runs from the base density rho0 (t = 0) to the target rho1 (t = 1).

Two kinds share one class:

* **two-sided** (``one_sided=False``): x0 ~ rho0 and x1 ~ rho1 arbitrary, z ~ N(0, I) is the
  latent noise with scale gamma(t) (gamma(0) = gamma(1) = 0).
* **one-sided** (``one_sided=True``, Def. 3.3): the base is Gaussian, x0 ~ N(0, I) *is* the latent
  noise with scale alpha(t) (alpha(0) = 1, alpha(1) = 0) and gamma = 0.

The *latent* is the Gaussian variable (z, or x0 when one-sided); the denoiser eta(t, x) =
E[latent | x_t = x] (paper's eta_z, Remark 2.6) and the score is s = -eta / latent_scale(t).
Sign convention: eta is +E[z | x_t] as in the paper (the reference code stores -E[z | x_t]).

Field callables used throughout the package take ``(t, x)`` with ``t`` of shape ``(B,)`` and
``x`` of shape ``(B, d)`` (or ``(B, *state)``) and return a tensor shaped like ``x``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .gamma import Gamma

Coefficient = Callable[[torch.Tensor], torch.Tensor]


def expand_time(t: torch.Tensor | float, x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """Broadcast a scalar or ``(B,)`` time to ``(B,)`` on the device and dtype of ``x``.

    ``x`` (called ``name`` in errors) must be a floating-point ``(B, ...)`` tensor: cast to an integer dtype, a
    time in (0, 1) would truncate to 0.
    """
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or not x.is_floating_point():
        got = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"{name} must be a floating-point (B, *state) tensor, got a {got}")
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.dim() == 0:
        return t.expand(x.shape[0])
    if t.shape != x.shape[:1]:
        raise ValueError(f"t must be a scalar or have shape ({x.shape[0]},), got {tuple(t.shape)}")
    return t


def per_sample(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a ``(B,)`` (or 0-d) per-sample coefficient to broadcast against ``x`` of shape ``(B, *state)``."""
    if c.dim() > 0 and c.shape != x.shape[:1]:
        raise ValueError(f"a per-sample coefficient of shape {tuple(c.shape)} does not match the batch of x, "
                         f"shape {tuple(x.shape)}; times must have shape ({x.shape[0]},)")
    return c.reshape(c.shape + (1,) * (x.dim() - 1))


def check_shape(value: torch.Tensor, like: torch.Tensor, name: str, like_name: str) -> torch.Tensor:
    """``value`` if it is a tensor of the shape of ``like``; otherwise an error naming both."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(value).__name__}")
    if value.shape != like.shape:
        raise ValueError(f"{name} has shape {tuple(value.shape)}, expected {like_name}'s shape {tuple(like.shape)}")
    return value


def check_batch(t: torch.Tensor | float, x0: torch.Tensor, x1: torch.Tensor,
                z: torch.Tensor | None = None) -> torch.Tensor:
    """Check that x0 and z (if given) have x1's shape ``(B, *state)``; return t as ``(B,)`` (scalar or ``(B,)`` in)."""
    if not isinstance(x1, torch.Tensor) or x1.dim() < 1:
        raise TypeError(f"x1 must be a (B, *state) tensor, got {getattr(x1, 'shape', type(x1).__name__)}")
    for name, value in (("x0", x0), ("z", z)):
        if value is not None and (not isinstance(value, torch.Tensor) or value.shape != x1.shape):
            raise ValueError(f"x0, x1 and z must share the shape (B, *state): x1 has shape {tuple(x1.shape)}, "
                             f"{name} has {getattr(value, 'shape', type(value).__name__)}")
    return expand_time(t, x1, "x1")


class Interpolant:
    """x_t = alpha(t) x0 + beta(t) x1 + gamma(t) z with known time derivatives.

    Build one with :func:`linear`, :func:`trigonometric`, :func:`encoder_decoder`,
    :func:`one_sided_linear`, :func:`one_sided_trigonometric` or :func:`mirror`.
    """

    def __init__(self, name: str, alpha: Coefficient, alpha_dot: Coefficient, beta: Coefficient,
                 beta_dot: Coefficient, gamma: Gamma, one_sided: bool = False, stationary: bool = False):
        _check_gamma(gamma)
        if one_sided and not gamma.is_zero:
            raise ValueError("a one-sided interpolant must have gamma of kind 'zero'")
        self.name, self.gamma, self.one_sided = name, gamma, one_sided
        self.stationary = stationary  # I(t, x0, x1) = x1 for all t (mirror): d/dt I = 0, x0 unused
        self.alpha, self.alpha_dot, self.beta, self.beta_dot = alpha, alpha_dot, beta, beta_dot

    def __repr__(self) -> str:
        return f"Interpolant({self.name!r}, gamma={self.gamma}, one_sided={self.one_sided})"

    # --- the latent Gaussian variable ---------------------------------------------------------
    def latent_scale(self, t: torch.Tensor) -> torch.Tensor:
        """Coefficient of the Gaussian latent: alpha(t) if one-sided, else gamma(t)."""
        return self.alpha(t) if self.one_sided else self.gamma(t)

    def latent_scale_dot(self, t: torch.Tensor) -> torch.Tensor:
        return self.alpha_dot(t) if self.one_sided else self.gamma.dot(t)

    # --- the interpolant and its time derivative -----------------------------------------------
    def x_t(self, t: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """x_t of shape ``(B, *state)`` for ``t`` of shape ``(B,)`` (``z`` ignored when one-sided).

        x0, x1 and z must share the shape ``(B, *state)``; a scalar t is broadcast over the batch.
        """
        t = check_batch(t, x0, x1, z)
        out = per_sample(self.alpha(t), x0) * x0 + per_sample(self.beta(t), x1) * x1
        if self._uses_z(z):
            out = out + per_sample(self.gamma(t), z) * z
        return out

    def dt_interpolant(self, t: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """d/dt I(t, x0, x1) = alpha_dot x0 + beta_dot x1 (target of the v-loss)."""
        t = check_batch(t, x0, x1)
        return per_sample(self.alpha_dot(t), x0) * x0 + per_sample(self.beta_dot(t), x1) * x1

    def velocity_target(self, t: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor,
                        z: torch.Tensor | None = None) -> torch.Tensor:
        """d/dt x_t = d/dt I + gamma_dot z (target of the b-loss, paper Eq. 2.13)."""
        t = check_batch(t, x0, x1, z)
        out = self.dt_interpolant(t, x0, x1)
        if self._uses_z(z):
            out = out + per_sample(self.gamma.dot(t), z) * z
        return out

    def _uses_z(self, z: torch.Tensor | None) -> bool:
        """Whether the latent z enters x_t (two-sided, gamma != 0); then it must be given."""
        if self.one_sided or self.gamma.is_zero:
            return False
        if z is None:
            raise ValueError("z is required for a two-sided interpolant with gamma != 0")
        return True

    # --- conversions between fields --------------------------------------------------------------
    def score_from_denoiser(self, t: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
        """s = -eta / latent_scale(t) (paper Thm 2.3 / Remark 2.6; singular where the scale vanishes).

        ``t`` is a scalar or of shape ``(B,)``, ``eta`` of shape ``(B, *state)``.
        """
        t = expand_time(t, eta, "eta")
        return -eta / per_sample(self.latent_scale(t), eta)

    def velocity_from_denoiser(self, t: torch.Tensor, x: torch.Tensor, eta: torch.Tensor,
                               v: torch.Tensor | None = None) -> torch.Tensor:
        """Velocity b from the denoiser eta (and v = E[d/dt I | x_t] when two-sided).

        * one-sided: b = alpha_dot eta + (beta_dot / beta)(x - alpha eta) (paper Eq. 4.19); singular at t = 0.
        * two-sided: b = v + gamma_dot eta (Remark 2.10, b = v - gamma gamma_dot s). For the mirror
          interpolant v = 0, so b = gamma_dot eta (Remark 3.8) and ``v`` may be omitted.

        ``t`` is a scalar or of shape ``(B,)``; x, eta (and v) of shape ``(B, *state)``.
        """
        t = expand_time(t, x)
        if self.one_sided:
            a, ad = per_sample(self.alpha(t), x), per_sample(self.alpha_dot(t), x)
            b, bd = per_sample(self.beta(t), x), per_sample(self.beta_dot(t), x)
            return ad * eta + bd / b * (x - a * eta)
        if v is None:
            if not self.stationary:
                raise ValueError(f"v is required to build b from eta for the {self.name!r} interpolant")
            v = torch.zeros_like(x)
        return v + per_sample(self.gamma.dot(t), x) * eta


def _check_gamma(gamma: Gamma) -> Gamma:
    if not isinstance(gamma, Gamma):
        raise TypeError(f"gamma must be an nde.interpolants.Gamma, e.g. Gamma('brownian'), got {gamma!r}")
    return gamma


def _half_pi(t: torch.Tensor) -> torch.Tensor:
    return 0.5 * math.pi * t


def linear(gamma: Gamma | None = None) -> Interpolant:
    """alpha = 1 - t, beta = t (Table 4, 'linear'); gamma defaults to sqrt(2 t (1 - t))."""
    gamma = Gamma("brownian", a=2.0) if gamma is None else gamma
    return Interpolant("linear", lambda t: 1 - t, lambda t: -torch.ones_like(t),
                       lambda t: t, lambda t: torch.ones_like(t), gamma)


def trigonometric(gamma: Gamma | None = None) -> Interpolant:
    """alpha = sqrt(1 - gamma^2) cos(pi t / 2), beta = sqrt(1 - gamma^2) sin(pi t / 2) (Table 4, 'trig').

    Needs gamma < 1 on [0, 1] (``Gamma.maximum < 1``): where gamma = 1 both alpha and beta vanish.
    """
    gamma = _check_gamma(Gamma("brownian", a=2.0) if gamma is None else gamma)
    if not gamma.maximum < 1:
        raise ValueError(f"the trigonometric interpolant needs gamma < 1, but {gamma} reaches {gamma.maximum}")

    def root(t):
        return (1 - gamma(t) ** 2).clamp_min(0).sqrt()

    def root_dot(t):
        return -gamma.gamma_dot_gamma(t) / root(t)

    return Interpolant(
        "trigonometric",
        lambda t: root(t) * torch.cos(_half_pi(t)),
        lambda t: root_dot(t) * torch.cos(_half_pi(t)) - root(t) * 0.5 * math.pi * torch.sin(_half_pi(t)),
        lambda t: root(t) * torch.sin(_half_pi(t)),
        lambda t: root_dot(t) * torch.sin(_half_pi(t)) + root(t) * 0.5 * math.pi * torch.cos(_half_pi(t)),
        gamma)


def encoder_decoder() -> Interpolant:
    """alpha = cos^2(pi t) 1[t < 1/2], beta = cos^2(pi t) 1[t > 1/2], gamma = sin^2(pi t) (Table 4).

    x_t is pure noise at t = 1/2: the path encodes rho0 into N(0, I) and decodes it into rho1.
    """
    def first(t):
        return (t < 0.5).to(t.dtype)

    def second(t):
        return (t > 0.5).to(t.dtype)

    return Interpolant(
        "encoder_decoder",
        lambda t: torch.cos(math.pi * t) ** 2 * first(t),
        lambda t: -math.pi * torch.sin(2 * math.pi * t) * first(t),
        lambda t: torch.cos(math.pi * t) ** 2 * second(t),
        lambda t: -math.pi * torch.sin(2 * math.pi * t) * second(t),
        Gamma("sinesquared"))


def one_sided_linear() -> Interpolant:
    """x_t = (1 - t) z + t x1 with x0 = z ~ N(0, I) (Def. 3.3, linear; the reference notebooks' default)."""
    return Interpolant("one_sided_linear", lambda t: 1 - t, lambda t: -torch.ones_like(t),
                       lambda t: t, lambda t: torch.ones_like(t), Gamma("zero"), one_sided=True)


def one_sided_trigonometric() -> Interpolant:
    """x_t = cos(pi t / 2) z + sin(pi t / 2) x1 with z ~ N(0, I): a time-changed VP diffusion (Table 4)."""
    return Interpolant(
        "one_sided_trigonometric",
        lambda t: torch.cos(_half_pi(t)), lambda t: -0.5 * math.pi * torch.sin(_half_pi(t)),
        lambda t: torch.sin(_half_pi(t)), lambda t: 0.5 * math.pi * torch.cos(_half_pi(t)),
        Gamma("zero"), one_sided=True)


def mirror(gamma: Gamma | None = None) -> Interpolant:
    """x_t = x1 + gamma(t) z with x1 ~ rho1 at both ends (Def. 3.6 with K = x1); b = gamma_dot eta.

    The x0 argument of the methods is unused (alpha = 0); pass ``x1`` or zeros.
    """
    gamma = Gamma("brownian", a=1.0) if gamma is None else gamma
    return Interpolant("mirror", lambda t: torch.zeros_like(t), lambda t: torch.zeros_like(t),
                       lambda t: torch.ones_like(t), lambda t: torch.zeros_like(t), gamma, stationary=True)
