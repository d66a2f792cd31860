"""With the exact drift of a mixture-to-mixture interpolant, ODE and SDE samplers reproduce rho1
and the intermediate marginals; the ODE log-likelihood matches the exact log-density."""
import pytest
import torch

from nde.interpolants import (MixtureInterpolantFields, linear, log_likelihood, mirror, one_sided_trigonometric,
                              sample_ode, sample_sde, standard_normal, gaussian_log_prob)
from nde.metrics import energy_mmd, negative_log_likelihood

N = 1000


@pytest.fixture
def setup(two_mixtures):
    rho0, rho1 = two_mixtures
    interp = linear()
    fields = MixtureInterpolantFields(interp, rho0, rho1)
    gen = torch.Generator().manual_seed(0)
    return interp, fields, rho0, rho1, gen


def _reference_mmd(rho1, gen):
    return energy_mmd(rho1.sample(N, gen), rho1.sample(N, gen))


def test_ode_reproduces_target(setup):
    interp, fields, rho0, rho1, gen = setup
    x1 = sample_ode(fields.velocity, rho0.sample(N, gen), rtol=1e-6, atol=1e-6)
    assert energy_mmd(x1, rho1.sample(N, gen)) < 0.01
    entropy = negative_log_likelihood(rho1.sample(20000, gen), rho1.log_prob)
    assert abs(negative_log_likelihood(x1, rho1.log_prob) - entropy) < 0.15


def test_ode_backward_returns_base(setup):
    interp, fields, rho0, rho1, gen = setup
    x0 = sample_ode(fields.velocity, rho1.sample(N, gen), reverse=True, rtol=1e-6, atol=1e-6)
    assert energy_mmd(x0, rho0.sample(N, gen)) < 0.01


@pytest.mark.parametrize("eps", [0.5, 2.0])
def test_forward_sde_reproduces_target_and_midpoint(setup, eps):
    interp, fields, rho0, rho1, gen = setup
    path = sample_sde(fields.velocity, fields.score, rho0.sample(N, gen), eps, steps=100,
                      return_path=True, generator=gen)
    assert energy_mmd(path[-1], rho1.sample(N, gen)) < 0.01
    t_mid = torch.full((N,), 0.5, dtype=torch.float64)
    direct = interp.x_t(t_mid, rho0.sample(N, gen), rho1.sample(N, gen), torch.randn(N, 2, generator=gen,
                                                                                      dtype=torch.float64))
    assert energy_mmd(path[50], direct) < 0.01


def test_backward_sde_reproduces_base(setup):
    interp, fields, rho0, rho1, gen = setup
    x0 = sample_sde(fields.velocity, fields.score, rho1.sample(N, gen), 1.0, steps=100, direction="backward",
                    generator=gen)
    assert energy_mmd(x0, rho0.sample(N, gen)) < 0.01


def test_sde_without_drift_knowledge_fails_mmd(setup):
    """Control: a wrong drift (score sign flipped) is detected by the same MMD bound."""
    interp, fields, rho0, rho1, gen = setup
    x1 = sample_sde(fields.velocity, lambda t, x: -fields.score(t, x), rho0.sample(N, gen), 2.0, steps=100,
                    generator=gen)
    assert energy_mmd(x1, rho1.sample(N, gen)) > 0.05


def test_ode_intermediate_marginal(setup):
    interp, fields, rho0, rho1, gen = setup
    times = torch.tensor([0.0, 0.3, 1.0], dtype=torch.float64)
    path = sample_ode(fields.velocity, rho0.sample(N, gen), times=times, rtol=1e-6, atol=1e-6)
    t = torch.full((N,), 0.3, dtype=torch.float64)
    direct = interp.x_t(t, rho0.sample(N, gen), rho1.sample(N, gen), torch.randn(N, 2, generator=gen,
                                                                                 dtype=torch.float64))
    assert path.shape == (3, N, 2)
    assert energy_mmd(path[1], direct) < 0.01


def test_mirror_ode_keeps_samples_and_sde_resamples(two_mixtures):
    """Mirror interpolant: eps = 0 maps x1 to itself in law; eps > 0 still samples rho1."""
    _, rho1 = two_mixtures
    interp = mirror()
    fields = MixtureInterpolantFields(interp, standard_normal(2, dtype=torch.float64), rho1)  # alpha = 0: rho0 unused
    gen = torch.Generator().manual_seed(5)
    x = rho1.sample(N, gen)
    b = lambda t, y: interp.velocity_from_denoiser(t, y, fields.denoiser(t, y))  # noqa: E731
    out = sample_ode(b, x, 1e-3, 1 - 1e-3, rtol=1e-6, atol=1e-6)
    assert energy_mmd(out, rho1.sample(N, gen)) < 0.01
    resampled = sample_sde(b, fields.score, x, 1.0, 1e-3, 1 - 1e-3, steps=100, generator=gen)
    assert energy_mmd(resampled, rho1.sample(N, gen)) < 0.01
    assert (resampled - x).norm(dim=1).mean() > 0.1


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_log_likelihood_matches_exact_density(divergence, two_mixtures):
    _, rho1 = two_mixtures
    interp = one_sided_trigonometric()
    fields = MixtureInterpolantFields(interp, standard_normal(2, dtype=torch.float64), rho1)
    gen = torch.Generator().manual_seed(7)
    x = rho1.sample(200, gen)
    logp = log_likelihood(fields.velocity, x, gaussian_log_prob, 0.0, 1.0 - 1e-4,
                          divergence=divergence, generator=gen, rtol=1e-6, atol=1e-6)
    exact = fields.log_prob(torch.tensor(1.0 - 1e-4, dtype=torch.float64), x)
    if divergence == "exact":
        assert (logp - exact).abs().mean() < 0.01
    else:  # unbiased but noisy per sample: check the mean
        assert abs(float((logp - exact).mean())) < 0.1


def test_sampler_argument_errors(setup):
    interp, fields, rho0, rho1, gen = setup
    x = rho0.sample(4, gen)
    with pytest.raises(ValueError, match="direction"):
        sample_sde(fields.velocity, fields.score, x, 1.0, direction="sideways")
    with pytest.raises(ValueError, match="eps"):
        sample_sde(fields.velocity, fields.score, x, -1.0)
    with pytest.raises(ValueError, match="t0"):
        sample_sde(fields.velocity, fields.score, x, 1.0, 0.8, 0.2)
    with pytest.raises(ValueError, match="divergence"):
        log_likelihood(fields.velocity, x, gaussian_log_prob, divergence="magic")


def test_sde_with_vanishing_eps_at_singular_ends(setup):
    """eps(t) = eps0 gamma(t): s = -eta/gamma is infinite at t = 0 and 1, but eps s = -eps0 eta is finite;
    both directions stay finite and reach the right law."""
    interp, fields, rho0, rho1, gen = setup

    def score(t, x):
        return interp.score_from_denoiser(t, fields.denoiser(t, x))

    def eps(t):
        return 1.0 * interp.gamma(t)

    x1 = sample_sde(fields.velocity, score, rho0.sample(N, gen), eps, steps=100, generator=gen)
    x0 = sample_sde(fields.velocity, score, rho1.sample(N, gen), eps, steps=100, direction="backward",
                    generator=gen)
    assert energy_mmd(x1, rho1.sample(N, gen)) < 0.01
    assert energy_mmd(x0, rho0.sample(N, gen)) < 0.01


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_sde_noise_scale_and_reproducibility(direction):
    """b = s = 0: X_end - X_start ~ N(0, 2 eps (t1 - t0) I); the same generator seed gives the same samples."""
    zero = lambda t, x: torch.zeros_like(x)  # noqa: E731
    x = torch.zeros(20000, 2, dtype=torch.float64)
    out = sample_sde(zero, zero, x, 0.5, 0.2, 0.8, steps=20, direction=direction,
                     generator=torch.Generator().manual_seed(0))
    assert abs(float(out.var(0).mean()) - 2 * 0.5 * 0.6) < 0.02
    again = sample_sde(zero, zero, x, 0.5, 0.2, 0.8, steps=20, direction=direction,
                       generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
