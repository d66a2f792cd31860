"""The one-sided trigonometric interpolant's denoiser, converted to VP eps-prediction, is the VP model."""
import math

import torch

from nde.interpolants import (MixtureInterpolantFields, denoiser_from_velocity, one_sided_trigonometric,
                              standard_normal, vp_noise_prediction)
from nde.metrics import energy_mmd

BETA0, BETA1 = 0.1, 20.0


def vp_alpha(tau):
    return torch.exp(-0.25 * tau ** 2 * (BETA1 - BETA0) - 0.5 * tau * BETA0)


def vp_sigma(tau):
    return torch.sqrt(1 - vp_alpha(tau) ** 2)


def test_converted_denoiser_equals_exact_vp_noise_prediction(two_mixtures):
    _, rho1 = two_mixtures
    interp = one_sided_trigonometric()
    fields = MixtureInterpolantFields(interp, standard_normal(2, dtype=torch.float64), rho1)
    model = vp_noise_prediction(fields.denoiser, vp_alpha, vp_sigma)
    for tau in (0.05, 0.3, 0.7, 1.0):
        a, s = vp_alpha(torch.tensor(tau, dtype=torch.float64)), vp_sigma(torch.tensor(tau, dtype=torch.float64))
        noisy = rho1.diffused(a, s)
        x = noisy.sample(256)
        expected = -s * noisy.score(x)  # eps*(x, tau) = -sigma grad log q_tau(x)
        torch.testing.assert_close(model(x, torch.tensor(tau, dtype=torch.float64)), expected)


def test_denoiser_from_velocity_inverts_eq_4_19(two_mixtures):
    _, rho1 = two_mixtures
    interp = one_sided_trigonometric()
    fields = MixtureInterpolantFields(interp, standard_normal(2, dtype=torch.float64), rho1)
    x = torch.randn(64, 2, dtype=torch.float64)
    t = torch.rand(64, dtype=torch.float64) * 0.9 + 0.05
    torch.testing.assert_close(denoiser_from_velocity(interp, fields.velocity)(t, x), fields.denoiser(t, x))


def test_ddim_with_converted_model_samples_target(two_mixtures):
    """A 50-step DDIM (written here, independent of the library) on the converted model reaches rho1."""
    _, rho1 = two_mixtures
    interp = one_sided_trigonometric()
    fields = MixtureInterpolantFields(interp, standard_normal(2, dtype=torch.float64), rho1)
    model = vp_noise_prediction(fields.denoiser, vp_alpha, vp_sigma)
    gen = torch.Generator().manual_seed(0)
    taus = torch.linspace(1.0, 1e-3, 51, dtype=torch.float64)
    x = torch.randn(1000, 2, generator=gen, dtype=torch.float64)
    for tau, tau_next in zip(taus[:-1], taus[1:]):
        eps = model(x, tau)
        x0 = (x - vp_sigma(tau) * eps) / vp_alpha(tau)
        x = vp_alpha(tau_next) * x0 + vp_sigma(tau_next) * eps
    assert energy_mmd(x, rho1.sample(1000, gen)) < 0.01
    assert not math.isnan(float(x.sum()))


def test_converted_denoiser_equals_the_diffusion_modules_exact_noise_predictor(two_mixtures):
    """With nde.diffusion's own schedules (VP and VE: the conversion divides by sqrt(alpha^2 + sigma^2)) the
    converted model equals nde.diffusion's exact GaussianMixtureNoisePredictor of the same mixture."""
    from nde.diffusion import GaussianMixture as DiffusionMixture, GaussianMixtureNoisePredictor
    from nde.diffusion.schedules import VE, VPCosine, VPLinear
    _, rho1 = two_mixtures
    fields = MixtureInterpolantFields(one_sided_trigonometric(), standard_normal(2, dtype=torch.float64), rho1)
    covariances = rho1.variances[:, None].expand(-1, 2)
    exact_mixture = DiffusionMixture(rho1.weights, rho1.means, covariances)
    gen = torch.Generator().manual_seed(1)
    for schedule in (VPLinear(), VPCosine(), VE()):
        model = vp_noise_prediction(fields.denoiser, schedule.alpha, schedule.sigma)
        exact = GaussianMixtureNoisePredictor(exact_mixture, schedule)
        tau = torch.rand(64, generator=gen, dtype=torch.float64) * 0.9 + 0.05
        x = 4 * torch.randn(64, 2, generator=gen, dtype=torch.float64)
        torch.testing.assert_close(model(x, tau), exact(x, tau))
