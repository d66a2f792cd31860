"""Convert a one-sided trigonometric interpolant into a VP noise-prediction model.

The one-sided trigonometric interpolant x_t = cos(pi t / 2) z + sin(pi t / 2) x1 (paper Table 4)
and a diffusion x_tau = alpha_tau x_data + sigma_tau eps share the same Gaussian paths after a
change of time and scale. With r = sqrt(alpha^2 + sigma^2) (r = 1 for VP):

    x_tau / r = cos(pi t / 2) eps + sin(pi t / 2) x_data,   t(tau) = (2 / pi) atan2(alpha_tau, sigma_tau),

so the diffusion's noise prediction is the interpolant's denoiser:
eps_hat(x, tau) = E[eps | x_tau = x] = eta(t(tau), x / r).

Conventions: diffusion time tau has data at small tau (alpha ~ 1) and noise at large tau; it
maps to interpolant time t = 1 at data and t = 0 at noise. eta is the paper's +E[z | x_t].
The returned callable has the ``model(x, tau)`` signature of noise-prediction diffusion models,
so VP samplers (DDIM, DPM-Solver) can sample the interpolant without knowing about it.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .interpolant import Interpolant, per_sample, expand_time

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def vp_noise_prediction(denoiser: Field, alpha: Callable[[torch.Tensor], torch.Tensor],
                        sigma: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """eps-prediction ``model(x, tau)`` from the denoiser ``eta(t, x)`` of a one-sided trigonometric interpolant.

    Args:
        denoiser: eta(t, x) = E[z | x_t = x] of :func:`~nde.interpolants.one_sided_trigonometric`.
        alpha, sigma: the diffusion schedule's alpha_tau and sigma_tau as functions of ``(B,)`` times
            (e.g. the ``alpha`` and ``sigma`` methods of an :class:`nde.diffusion.schedules.NoiseSchedule`;
            VP or not, since x is divided by sqrt(alpha^2 + sigma^2)).
    """
    def model(x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        tau = expand_time(tau, x)
        a, s = alpha(tau), sigma(tau)
        t = (2 / math.pi) * torch.atan2(a, s)
        return denoiser(t, x / per_sample(torch.sqrt(a ** 2 + s ** 2), x))
    return model


def denoiser_from_velocity(interpolant: Interpolant, b: Field) -> Field:
    """eta(t, x) from the velocity of a one-sided interpolant by inverting Eq. 4.19:

    eta = (b - (beta_dot / beta) x) / (alpha_dot - beta_dot alpha / beta)   (singular at t = 0, where beta = 0).
    """
    if not interpolant.one_sided:
        raise ValueError("denoiser_from_velocity needs a one-sided interpolant")

    def eta(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t = expand_time(t, x)
        a, ad = interpolant.alpha(t), interpolant.alpha_dot(t)
        bt, bd = interpolant.beta(t), interpolant.beta_dot(t)
        ratio = per_sample(bd / bt, x)
        return (b(t, x) - ratio * x) / per_sample(ad - bd * a / bt, x)
    return eta
