"""Stochastic samplers on the nde SDE core: the reverse SDE (Song et al. 2021) and EDM's Eq. 6 with churn.

Truths used: closed-form marginals and the closed-form regression of x_0 on x_T for Gaussian data, Song's
form of the reverse SDE written with t-derivatives of the schedule, Ito's formula between the two SDE
objects, the discrete time-step schedules, the exact mode masses of a mixture, SDE-DPM-Solver++(1), and a
fine solve on the same Brownian path.
"""
import math

import pytest
import torch

from nde.diffusion import (EDM, EDMSDE, SKIP_TYPES, VE, GaussianMixture, GaussianMixtureNoisePredictor, ReverseSDE,
                           SamplingClock, VPCosine, VPLinear, edm_churn_equivalent, edm_sampler, edm_sde, reverse_sde,
                           sampling_times)
from nde.sde import BrownianPath

SCHEDULE = VPLinear()
T_START = 0.3  # a short interval keeps the dependence of x_0 on x_T measurable
MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)
VAR = torch.tensor([0.25, 0.5], dtype=torch.float64)


def _at(t: float):
    t = torch.tensor(t, dtype=torch.float64)
    return SCHEDULE.alpha(t), SCHEDULE.sigma(t)


@pytest.fixture(scope="module")
def gaussian():
    """Single diagonal Gaussian N(MEAN, diag VAR), its exact model, and 4000 exact samples of q_{T_START}."""
    model = GaussianMixtureNoisePredictor(GaussianMixture(torch.ones(1), MEAN[None], VAR[None]), SCHEDULE)
    alpha, sigma = _at(T_START)
    z = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return model, alpha * MEAN + torch.sqrt(alpha**2 * VAR + sigma**2) * z


def _closed_form(churn: float):
    """Mean, variance of x at t_end and the slope of E[x_end | x_T] (per dimension) for churn c.

    On y = x/alpha the drift of Eq. 6 is -(1 + c) rho^2 (y - mu)/(s^2 + rho^2) dlambda, whose solution scales
    y - mu by ((s^2 + rho_1^2)/(s^2 + rho_0^2))^{(1+c)/2}."""
    (a0, s0), (a1, s1) = _at(T_START), _at(SCHEDULE.t_end)
    rho0, rho1 = s0 / a0, s1 / a1
    kappa = ((VAR + rho1**2) / (VAR + rho0**2)) ** ((1.0 + churn) / 2.0)
    return a1 * MEAN, a1**2 * VAR + s1**2, a1 / a0 * kappa


SAMPLERS = {  # name: (sampler(model, x_T, generator), churn of the SDE it solves)
    "reverse-euler": (lambda m, x, g: reverse_sde(m, x, SCHEDULE, 100, t_start=T_START, method="euler",
                                                  generator=g), 1.0),
    "reverse-milstein": (lambda m, x, g: reverse_sde(m, x, SCHEDULE, 100, t_start=T_START, method="milstein",
                                                     generator=g), 1.0),
    "reverse-heun": (lambda m, x, g: reverse_sde(m, x, SCHEDULE, 50, t_start=T_START, method="heun", generator=g), 1.0),
    "reverse-srk": (lambda m, x, g: reverse_sde(m, x, SCHEDULE, 30, t_start=T_START, method="srk", generator=g), 1.0),
    "reverse-heun-adaptive": (lambda m, x, g: reverse_sde(m, x, SCHEDULE, 10, t_start=T_START, method="heun",
                                                          generator=g, adaptive=True, rtol=1e-2, atol=1e-2), 1.0),
    "dpm_solver++1": (lambda m, x, g: reverse_sde(m, x, SCHEDULE, 200, t_start=T_START, generator=g), 1.0),
    "edm-heun-c0": (lambda m, x, g: edm_sde(m, x, SCHEDULE, 50, churn=0.0, t_start=T_START, generator=g), 0.0),
    "edm-heun-c0.5": (lambda m, x, g: edm_sde(m, x, SCHEDULE, 50, churn=0.5, t_start=T_START, generator=g), 0.5),
    "edm-heun-c2": (lambda m, x, g: edm_sde(m, x, SCHEDULE, 50, churn=2.0, t_start=T_START, generator=g), 2.0),
}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_single_gaussian_marginal_and_memory_of_x_T(gaussian, name):
    """Mean, variance and the regression slope of x_0 on x_T match the closed form within 4.5 standard errors
    (+0.01 for the discretisation). The slope depends on the churn, so it checks the SDE, not only p_0."""
    model, x_T = gaussian
    sampler, churn = SAMPLERS[name]
    x = sampler(model, x_T, torch.Generator().manual_seed(1))
    mean, var, slope = _closed_form(churn)
    n = x.shape[0]
    xc, tc = x - x.mean(0), x_T - x_T.mean(0)
    slope_hat = (xc * tc).sum(0) / (tc * tc).sum(0)
    resid = xc - slope_hat * tc
    slope_se = torch.sqrt(resid.pow(2).mean(0) / (tc * tc).sum(0))
    assert ((x.mean(0) - mean).abs() < 4.5 * torch.sqrt(var / n) + 0.01).all(), (x.mean(0), mean)
    assert ((x.var(0) - var).abs() < 4.5 * var * math.sqrt(2.0 / n) + 0.01).all(), (x.var(0), var)
    assert ((slope_hat - slope).abs() < 4.5 * slope_se + 0.01).all(), (slope_hat, slope)


def test_churn_changes_the_memory_of_x_T():
    """The closed-form slopes used above really separate the churn values (else the test would be vacuous)."""
    slopes = [_closed_form(c)[2] for c in (0.0, 0.5, 1.0, 2.0)]
    assert all(bool((a - b > 0.05).all()) for a, b in zip(slopes[:-1], slopes[1:]))


def test_algorithm_2_is_a_splitting_of_eq_6(gaussian):
    """Algorithm 2's mean map (s_noise = 0) on logSNR steps converges, at first order, to the mean map of Eq. 6
    with churn c = s_churn / (lambda_end - lambda_start); Eq. 6 on the SDE core (Heun, zero Brownian path)
    converges to the same closed form."""
    model, x_T = gaussian
    x_T = x_T[:64]
    churn = edm_churn_equivalent(8.0, SCHEDULE, t_start=T_START)
    mean, _, slope = _closed_form(churn)
    (a0, _), (a1, _) = _at(T_START), _at(SCHEDULE.t_end)
    exact = a1 * (MEAN + slope * a0 / a1 * (x_T / a0 - MEAN))
    errors = [(edm_sampler(model, x_T, SCHEDULE, n, s_churn=8.0, s_noise=0.0, skip_type="logSNR", t_start=T_START)
               - exact).abs().max().item() for n in (50, 200)]
    assert errors[1] < 0.01 and errors[0] / errors[1] > 3.0, errors  # first order: 4x fewer steps, ~4x error
    zero_path = lambda ta, tb: torch.zeros(64, 2, dtype=torch.float64)
    errors = [(edm_sde(model, x_T, SCHEDULE, n, churn=churn, skip_type="logSNR", t_start=T_START, bm=zero_path)
               - exact).abs().max().item() for n in (25, 50)]
    assert errors[1] < 5e-3 and errors[0] / errors[1] > 3.0, errors  # Heun on the mean ODE: second order


@pytest.mark.parametrize("schedule", [VPLinear(), VPCosine(), VE(), EDM()], ids=lambda s: s.config()["name"])
@pytest.mark.parametrize("skip_type", ["logSNR", "time_uniform", "edm"])
def test_reverse_sde_is_songs_form(schedule, skip_type):
    """Drift and diffusion equal (dt/du)(f x - g^2 score) and g sqrt(|dt/du|), f = dlog alpha/dt,
    g^2 = dsigma^2/dt - 2 f sigma^2 (all by autograd of the schedule in t), score = -eps/sigma."""
    gmm = GaussianMixture(torch.tensor([0.4, 0.6]), torch.tensor([[1.0, 0.0], [-1.0, 2.0]], dtype=torch.float64), 0.3)
    model = GaussianMixtureNoisePredictor(gmm, schedule)
    clock = SamplingClock(schedule, skip_type)
    sde = ReverseSDE(model, schedule, (2,), clock)
    x = torch.randn(5, 2, dtype=torch.float64)
    for u in (0.05, 0.5, 0.95):
        u = torch.tensor(u, dtype=torch.float64)
        t = clock(u)[0].detach().requires_grad_(True)
        sigma2 = schedule.sigma(t) ** 2
        dsigma2, = torch.autograd.grad(sigma2, t)
        t = t.detach()
        f = schedule.dlog_alpha_dt(t)
        g2 = dsigma2 - 2.0 * f * sigma2.detach()
        dt_du = _finite_difference(lambda v: clock(v)[0], u)
        score = -model(x, t.expand(5)) / schedule.sigma(t)
        drift, diffusion = sde.f_and_g(u, x)
        torch.testing.assert_close(drift, -dt_du.abs() * (f * x - g2 * score), rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(diffusion, torch.sqrt(g2 * dt_du.abs()).expand(5, 2), rtol=1e-6, atol=1e-10)
        torch.testing.assert_close(sde.g(u, x), diffusion)


def _finite_difference(fn, u, h=1e-6):
    return (fn(u + h) - fn(u - h)) / (2 * h)


def test_edm_sde_with_churn_one_is_the_reverse_sde_of_y():
    """Ito's formula for y = x/alpha(t(u)): f_y = (f_x - (dlog alpha/du) x)/alpha, g_y = g_x/alpha."""
    gmm = GaussianMixture(torch.tensor([0.4, 0.6]), torch.tensor([[1.0, 0.0], [-1.0, 2.0]], dtype=torch.float64), 0.3)
    model = GaussianMixtureNoisePredictor(gmm, SCHEDULE)
    clock = SamplingClock(SCHEDULE, "edm")
    reverse, edm = ReverseSDE(model, SCHEDULE, (2,), clock), EDMSDE(model, SCHEDULE, (2,), clock, churn=1.0)
    x = torch.randn(5, 2, dtype=torch.float64)
    for u in (0.1, 0.6, 0.9):
        u = torch.tensor(u, dtype=torch.float64)
        alpha = SCHEDULE.alpha(clock(u)[0])
        dlog_alpha = _finite_difference(lambda v: SCHEDULE.log_alpha(clock(v)[0]), u)
        f_x, g_x = reverse.f_and_g(u, x)
        f_y, g_y = edm.f_and_g(u, x / alpha)
        torch.testing.assert_close(f_y, (f_x - dlog_alpha * x) / alpha, rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(g_y, g_x / alpha)


@pytest.mark.parametrize("skip_type", SKIP_TYPES)
def test_clock_steps_are_the_sampling_times(skip_type):
    clock = SamplingClock(SCHEDULE, skip_type)
    steps = 7
    times = torch.stack([clock(torch.tensor(k / steps, dtype=torch.float64))[0] for k in range(steps + 1)])
    torch.testing.assert_close(times, sampling_times(SCHEDULE, steps, skip_type), rtol=1e-9, atol=1e-12)
    for u in (0.2, 0.7):
        u = torch.tensor(u, dtype=torch.float64)
        torch.testing.assert_close(clock(u)[2], _finite_difference(lambda v: clock(v)[1], u), rtol=1e-6, atol=0.0)


@pytest.fixture(scope="module")
def mixture():
    gmm = GaussianMixture(torch.tensor([0.5, 0.25, 0.25]),
                          torch.tensor([[2.0, 0.0], [-2.0, 1.0], [0.0, -2.0]], dtype=torch.float64), 0.1)
    return gmm, GaussianMixtureNoisePredictor(gmm, SCHEDULE)


MIXTURE_SAMPLERS = {
    "reverse-heun": lambda m, x, g: reverse_sde(m, x, SCHEDULE, 50, method="heun", generator=g),
    "reverse-euler": lambda m, x, g: reverse_sde(m, x, SCHEDULE, 100, method="euler", generator=g),
    "edm-heun": lambda m, x, g: edm_sde(m, x, SCHEDULE, 30, churn=1.0, generator=g),
}


@pytest.mark.parametrize("name", list(MIXTURE_SAMPLERS))
def test_sde_core_samplers_reproduce_mode_masses(mixture, name):
    gmm, model = mixture
    x_T = torch.randn(2000, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    run = lambda seed: MIXTURE_SAMPLERS[name](model, x_T, torch.Generator().manual_seed(seed))
    x = run(1)
    masses = torch.bincount(gmm.nearest_component(x), minlength=3).double() / x.shape[0]
    assert (masses - torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)).abs().sum() < 0.08, masses
    assert torch.equal(x, run(1))  # reproducible given x_T and the generator
    assert not torch.equal(x, run(2))


def test_sde_core_agrees_in_distribution_with_dpm_solver_pp1(mixture):
    """Heun on the SDE core (50 steps) and SDE-DPM-Solver++(1) (300 steps), independent noise: mode masses,
    means and variances agree within 4.5 standard errors of the difference."""
    gmm, model = mixture
    x_T = torch.randn(4000, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    core = reverse_sde(model, x_T, SCHEDULE, 50, method="heun", generator=torch.Generator().manual_seed(5))
    exact = reverse_sde(model, x_T, SCHEDULE, 300, generator=torch.Generator().manual_seed(6))
    n = x_T.shape[0]
    masses = [torch.bincount(gmm.nearest_component(x), minlength=3).double() / n for x in (core, exact)]
    mass_se = torch.sqrt(masses[1] * (1 - masses[1]) * 2 / n)
    assert ((masses[0] - masses[1]).abs() < 4.5 * mass_se).all(), masses
    mean_se = torch.sqrt((core.var(0) + exact.var(0)) / n)
    assert ((core.mean(0) - exact.mean(0)).abs() < 4.5 * mean_se).all()
    sq = [(x - x.mean(0)) ** 2 for x in (core, exact)]
    var_se = torch.sqrt((sq[0].var(0) + sq[1].var(0)) / n)
    assert ((core.var(0) - exact.var(0)).abs() < 4.5 * var_se).all(), (core.var(0), exact.var(0))


@pytest.fixture(scope="module")
def fine_paths():
    """A 2-component mixture, 100 starts, one Brownian path on the clock, and fine SRK solves on it."""
    gmm = GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[1.0, 0.5], [-1.0, 0.0]], dtype=torch.float64), 0.5)
    model = GaussianMixtureNoisePredictor(gmm, SCHEDULE)
    x_T = torch.randn(100, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    bm = BrownianPath(0.0, 1.0, (100, 2), dtype=torch.float64, entropy=8, levy_area_approximation="space-time")
    fine = {"reverse": reverse_sde(model, x_T, SCHEDULE, 128, method="srk", bm=bm),
            "edm": edm_sde(model, x_T, SCHEDULE, 128, churn=0.5, method="srk", bm=bm)}
    return model, x_T, bm, fine


@pytest.mark.parametrize("form, method, order", [("reverse", "euler", 1.0), ("reverse", "heun", 1.0),
                                                 ("reverse", "srk", 1.5), ("edm", "heun", 1.0)])
def test_strong_convergence_on_the_same_brownian_path(fine_paths, form, method, order):
    """RMS error against the fine SRK solve on the same path, 8 -> 16 -> 32 steps; additive noise: euler and
    heun have strong order 1, srk 1.5 (measured: 2)."""
    model, x_T, bm, fine = fine_paths
    if form == "reverse":
        run = lambda n: reverse_sde(model, x_T, SCHEDULE, n, method=method, bm=bm)
    else:
        run = lambda n: edm_sde(model, x_T, SCHEDULE, n, churn=0.5, method=method, bm=bm)
    errors = [(run(n) - fine[form]).pow(2).mean().sqrt().item() for n in (8, 16, 32)]
    slope = math.log2(errors[1] / errors[2])
    assert slope > order - 0.25, f"{form}/{method}: errors {errors}, measured order {slope:.2f}"


def test_edm_sde_with_churn_one_matches_the_reverse_sde_pathwise(fine_paths):
    """Same Brownian path, same clock: the x-form and the y-form of the reverse SDE give the same sample (up to
    the SRK errors, ~1e-3 at 128 steps), unlike Eq. 6 with another churn."""
    model, x_T, bm, fine = fine_paths
    edm = edm_sde(model, x_T, SCHEDULE, 128, churn=1.0, method="srk", bm=bm, skip_type="logSNR")
    assert (edm - fine["reverse"]).pow(2).mean().sqrt().item() < 3e-3
    assert (fine["edm"] - fine["reverse"]).pow(2).mean().sqrt().item() > 0.1


def test_adaptive_error_follows_the_tolerance(fine_paths):
    model, x_T, bm, fine = fine_paths
    errors = [(reverse_sde(model, x_T, SCHEDULE, 10, method="heun", bm=bm, adaptive=True, rtol=tol, atol=tol)
               - fine["reverse"]).pow(2).mean().sqrt().item() for tol in (1e-1, 1e-2)]
    assert errors[1] < 0.5 * errors[0] and errors[1] < 0.05, errors


@pytest.mark.parametrize("method", ["heun", "euler"])
def test_float32_and_image_shaped_states(mixture, method):
    _, model = mixture
    flat = lambda x, t: model(x.reshape(x.shape[0], 2).double(), t.double()).reshape(x.shape).to(x.dtype)
    x_T = torch.randn(6, 1, 2, 1)
    for out in (reverse_sde(flat, x_T, SCHEDULE, 5, method=method), edm_sde(flat, x_T, SCHEDULE, 5, method=method)):
        assert out.dtype == torch.float32 and out.shape == x_T.shape and torch.isfinite(out).all()


def test_bad_arguments(mixture):
    _, model = mixture
    x_T = torch.randn(4, 2, dtype=torch.float64)
    bm = BrownianPath(0.0, 1.0, (4, 2), dtype=torch.float64, entropy=0)
    cases = [
        (lambda: reverse_sde(model, x_T, SCHEDULE, 5, method="rk4"), ValueError, "method"),
        (lambda: edm_sde(model, x_T, SCHEDULE, 5, method="dpm_solver++1"), ValueError, "method"),
        (lambda: reverse_sde(model, x_T, SCHEDULE, 0, method="heun"), ValueError, "steps"),
        (lambda: reverse_sde(model, x_T, SCHEDULE, 5, bm=bm), ValueError, "bm"),
        (lambda: reverse_sde(model, x_T, SCHEDULE, 5, method="heun", bm=bm, generator=torch.Generator()),
         ValueError, "bm"),
        (lambda: reverse_sde(model, x_T, SCHEDULE, 5, method="heun", bm=3), TypeError, "bm"),
        (lambda: reverse_sde(model, x_T, SCHEDULE, 5, method="heun", skip_type="cosine"), ValueError, "skip_type"),
        (lambda: reverse_sde(model, x_T[0], SCHEDULE, 5, method="heun"), ValueError, "x_T"),
        (lambda: edm_sde(model, x_T, SCHEDULE, 5, churn=-1.0), ValueError, "churn"),
        (lambda: edm_sde(model, x_T, SCHEDULE, 5, s_tmin=2.0, s_tmax=1.0), ValueError, "s_tmin"),
        (lambda: EDMSDE(model, SCHEDULE, (2,), churn_window=(1.0, -1.0)), ValueError, "churn_window"),
        (lambda: ReverseSDE(model, SCHEDULE, (2,), sde_type="levy"), ValueError, "sde_type"),
        (lambda: ReverseSDE(model, "vp", (2,)), TypeError, "schedule"),
        (lambda: ReverseSDE(model, SCHEDULE, (2,), clock=SamplingClock(VE())), ValueError, "clock"),
        (lambda: ReverseSDE(model, SCHEDULE, (3,)).to_state(x_T), ValueError, "x_T"),
        (lambda: SamplingClock(SCHEDULE, t_start=0.1, t_end=0.5), ValueError, "t_end"),
    ]
    for call, error, word in cases:
        with pytest.raises(error, match=word):
            call()


@pytest.mark.gpu
def test_cuda_samplers_are_reproducible_and_match_the_closed_form():
    """On CUDA (not run without a GPU): device kept, reproducible given a CUDA generator, marginal variance right."""
    model = GaussianMixtureNoisePredictor(GaussianMixture(torch.ones(1), MEAN[None], VAR[None]).to(device="cuda"),
                                          SCHEDULE)
    x_T = torch.randn(4000, 2, dtype=torch.float64, device="cuda")
    run = lambda: reverse_sde(model, x_T, SCHEDULE, 50, method="heun", generator=torch.Generator("cuda").manual_seed(0))
    x = run()
    assert x.device.type == "cuda" and torch.equal(x, run())
    _, var, _ = _closed_form(1.0)
    assert ((x.var(0).cpu() - var).abs() < 4.5 * var * math.sqrt(2.0 / 4000) + 0.01).all()
