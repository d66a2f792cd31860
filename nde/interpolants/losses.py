"""Quadratic objectives whose minimisers are the interpolant's fields.

Albergo, Boffi & Vanden-Eijnden (arXiv 2303.08797). Each loss is the per-sample integrand of
the paper's objective at given times ``t`` (shape ``(B,)``), summed over the state and
averaged over the batch; minimising over the field returns the conditional expectation:

* :func:`velocity_loss`      L_b = 1/2 |b|^2 - (d/dt I + gamma_dot z) . b          (Eq. 2.13)
* :func:`interpolant_velocity_loss` L_v = 1/2 |v|^2 - d/dt I . v                     (Remark 2.10)
* :func:`score_loss`         L_s = 1/2 |s|^2 + latent . s / latent_scale          (Eq. 2.16)
* :func:`denoiser_loss`      L_eta = 1/2 |eta|^2 - latent . eta                      (Eq. 2.19)

The latent is z (two-sided) or x0 ~ N(0, I) (one-sided). ``antithetic=True`` evaluates the
field at x_t^+ and x_t^- (the latent flipped) and averages (paper Sec. 6): the 1/latent_scale
term of L_s then cancels to leading order, so its variance stays bounded as t -> 0 or 1.
The losses are not bounded below by zero; they equal 1/2 E|field - target|^2 minus a constant.
Shapes: t ``(B,)`` (or a scalar), x0, x1 and z ``(B, *state)``; the field must return ``(B, *state)``.
"""
from __future__ import annotations

from typing import Callable

import torch

from .._checks import check_generator, sample_count
from .interpolant import Interpolant, check_batch, check_shape, per_sample

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).flatten(1).sum(1)


def _latent(interpolant: Interpolant, x0: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
    if interpolant.one_sided:
        return x0
    if z is None:
        raise ValueError("z is required for a two-sided interpolant")
    return z


def _flip(interpolant: Interpolant, x0: torch.Tensor, z: torch.Tensor | None):
    """(x0, z) with the latent negated."""
    if interpolant.one_sided:
        return -x0, z
    return x0, None if z is None else -z


def _objective(name: str, field: Field, interpolant: Interpolant, t, x0, x1, z, antithetic: bool,
               integrand: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Mean over the batch of ``integrand(value, x0, z)`` at x_t (and at the antithetic x_t^-).

    ``t`` must already be checked (:func:`check_batch`); ``name`` is the field's name for shape errors.
    """
    def value_at(x0_, z_):
        x_t = interpolant.x_t(t, x0_, x1, z_)
        return check_shape(field(t, x_t), x_t, f"{name}(t, x)", "x")

    total = integrand(value_at(x0, z), x0, z)
    if antithetic:
        x0m, zm = _flip(interpolant, x0, z)
        total = 0.5 * (total + integrand(value_at(x0m, zm), x0m, zm))
    return total.mean()


def velocity_loss(b: Field, interpolant: Interpolant, t: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor,
                  z: torch.Tensor | None = None, antithetic: bool = True) -> torch.Tensor:
    """L_b (Eq. 2.13); minimised by b(t, x) = E[d/dt x_t | x_t = x]."""
    t = check_batch(t, x0, x1, z)

    def integrand(value, x0_, z_):
        return 0.5 * _dot(value, value) - _dot(interpolant.velocity_target(t, x0_, x1, z_), value)
    return _objective("b", b, interpolant, t, x0, x1, z, antithetic, integrand)


def interpolant_velocity_loss(v: Field, interpolant: Interpolant, t: torch.Tensor, x0: torch.Tensor,
                              x1: torch.Tensor, z: torch.Tensor | None = None,
                              antithetic: bool = False) -> torch.Tensor:
    """L_v (Remark 2.10); minimised by v(t, x) = E[d/dt I | x_t = x]."""
    t = check_batch(t, x0, x1, z)

    def integrand(value, x0_, z_):
        return 0.5 * _dot(value, value) - _dot(interpolant.dt_interpolant(t, x0_, x1), value)
    return _objective("v", v, interpolant, t, x0, x1, z, antithetic, integrand)


def score_loss(s: Field, interpolant: Interpolant, t: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor,
               z: torch.Tensor | None = None, antithetic: bool = True) -> torch.Tensor:
    """L_s (Eq. 2.16); minimised by the score s = grad log rho_t. Keep ``antithetic=True`` near the ends."""
    t = check_batch(t, x0, x1, z)

    def integrand(value, x0_, z_):
        latent = _latent(interpolant, x0_, z_)
        return 0.5 * _dot(value, value) + _dot(latent / per_sample(interpolant.latent_scale(t), latent), value)
    return _objective("s", s, interpolant, t, x0, x1, z, antithetic, integrand)


def denoiser_loss(eta: Field, interpolant: Interpolant, t: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor,
                  z: torch.Tensor | None = None, antithetic: bool = False) -> torch.Tensor:
    """L_eta (Eq. 2.19); minimised by eta(t, x) = E[latent | x_t = x] (paper sign: s = -eta / scale)."""
    t = check_batch(t, x0, x1, z)

    def integrand(value, x0_, z_):
        return 0.5 * _dot(value, value) - _dot(_latent(interpolant, x0_, z_), value)
    return _objective("eta", eta, interpolant, t, x0, x1, z, antithetic, integrand)


def sample_times(n: int, t_min: float = 1e-4, t_max: float = 1 - 1e-4, generator: torch.Generator | None = None,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """``(n,)`` uniform times on [t_min, t_max] (the paper caps t0 = 1e-4 where fields divide by gamma)."""
    if not 0 <= t_min < t_max <= 1:
        raise ValueError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
    n = sample_count(n)
    check_generator(generator)
    return (t_min + (t_max - t_min) * torch.rand(n, generator=generator, dtype=dtype)).to(device)
