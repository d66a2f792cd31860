"""Stochastic interpolants (Albergo, Boffi & Vanden-Eijnden, arXiv 2303.08797).

See docs/transport.md for conventions (time 0 = base, 1 = target; eta = +E[z | x_t]).
"""
from .datasets import checkerboard, checkerboard_cell_masses, checkerboard_log_prob, two_moons
from .exact import MixtureInterpolantFields
from .exact_boxes import BoxUniformFields
from .gamma import Gamma
from .interpolant import (Interpolant, encoder_decoder, linear, mirror, one_sided_linear,
                          one_sided_trigonometric, trigonometric)
from .losses import (denoiser_loss, interpolant_velocity_loss, sample_times, score_loss,
                     velocity_loss)
from .mixture import GaussianMixture, ring_mixture, standard_normal
from .networks import MLP, TimeConditionedMLP
from .training import InterpolantTask
from .sampling import gaussian_log_prob, log_likelihood, sample_ode, sample_sde
from .vp import denoiser_from_velocity, vp_noise_prediction

__all__ = [
    "Gamma", "Interpolant", "linear", "trigonometric", "encoder_decoder", "one_sided_linear",
    "one_sided_trigonometric", "mirror", "velocity_loss", "interpolant_velocity_loss", "score_loss",
    "denoiser_loss", "sample_times", "sample_ode", "sample_sde", "log_likelihood", "gaussian_log_prob",
    "vp_noise_prediction", "denoiser_from_velocity", "MixtureInterpolantFields", "BoxUniformFields", "GaussianMixture",
    "ring_mixture", "standard_normal", "checkerboard", "checkerboard_log_prob", "checkerboard_cell_masses",
    "two_moons", "TimeConditionedMLP", "MLP", "InterpolantTask",
]
