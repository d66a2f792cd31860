import math

import pytest
import torch

from nde.diffusion import (DPMSolverV3, GaussianMixture, GaussianMixtureNoisePredictor, ModelStatistics, VPLinear,
                           ddim, dpm_solver_pp, edm_sampler, probability_flow_reference, reverse_sde, ring_mixture,
                           unipc)

SCHEDULE = VPLinear()


@pytest.fixture(scope="module")
def problem():
    """A smooth 2-D two-component mixture, 64 noise samples and the adaptive (dopri8, 1e-11) reference."""
    gmm = GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[1.0, 0.5], [-1.0, 0.0]], dtype=torch.float64), 0.5)
    model = GaussianMixtureNoisePredictor(gmm, SCHEDULE)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = probability_flow_reference(model, x_T, SCHEDULE, rtol=1e-11, atol=1e-11)
    return model, x_T, ref


DEGENERATE = ModelStatistics.degenerate(SCHEDULE, (2,), 2000)
SAMPLERS = {  # name: (sampler(model, x_T, nfe), expected order)
    "ddim": (lambda m, x, n: ddim(m, x, SCHEDULE, n), 1),
    "dpm++2m": (lambda m, x, n: dpm_solver_pp(m, x, SCHEDULE, n, order=2), 2),
    "dpm++3m": (lambda m, x, n: dpm_solver_pp(m, x, SCHEDULE, n, order=3), 3),
    "unipc-bh1-2": (lambda m, x, n: unipc(m, x, SCHEDULE, n, order=2, variant="bh1"), 3),
    "unipc-bh2-3": (lambda m, x, n: unipc(m, x, SCHEDULE, n, order=3, variant="bh2"), 4),
    "v3-degenerate-1": (lambda m, x, n: DPMSolverV3(DEGENERATE, SCHEDULE, n).sample(m, x, order=1), 1),
    "v3-degenerate-2": (lambda m, x, n: DPMSolverV3(DEGENERATE, SCHEDULE, n).sample(m, x, order=2,
                                                                                   use_corrector=False), 2),
    "v3-degenerate-3-pc": (lambda m, x, n: DPMSolverV3(DEGENERATE, SCHEDULE, n).sample(m, x, order=3), 3),
    "edm-heun": (lambda m, x, n: edm_sampler(m, x, SCHEDULE, n // 2, skip_type="logSNR"), 2),
}


@pytest.mark.parametrize("name", list(SAMPLERS))
def test_measured_convergence_order(problem, name):
    model, x_T, ref = problem
    sampler, order = SAMPLERS[name]
    errors = [(sampler(model, x_T, n) - ref).pow(2).mean().sqrt().item() for n in (20, 40, 80)]
    slope = math.log(errors[1] / errors[2]) / math.log(2.0)
    assert slope > order - 0.3, f"{name}: RMS errors {errors}, measured order {slope:.2f}"


def test_degenerate_first_order_v3_is_ddim(problem):
    model, x_T, _ = problem
    stats = ModelStatistics.degenerate(SCHEDULE, (2,), 100)
    v3 = DPMSolverV3(stats, SCHEDULE, 10).sample(model, x_T, order=1, use_corrector=False)
    torch.testing.assert_close(v3, ddim(model, x_T, SCHEDULE, 10, t_start=1.0, t_end=1e-3), rtol=1e-10, atol=1e-10)


def test_ddim_step_formula(problem):
    model, x_T, _ = problem
    times = torch.tensor([1.0, 0.3], dtype=torch.float64)
    a, s, lam = SCHEDULE.alpha(times), SCHEDULE.sigma(times), SCHEDULE.lambda_(times)
    eps = model(x_T, times[0].expand(64))
    x0 = (x_T - s[0] * eps) / a[0]
    expected = s[1] / s[0] * x_T + a[1] * (1 - torch.exp(lam[0] - lam[1])) * x0
    torch.testing.assert_close(ddim(model, x_T, SCHEDULE, 1, skip_type="time_uniform", t_end=0.3), expected)


def test_v3_corrector_keeps_N_and_half_rule(problem):
    model, x_T, _ = problem
    v3 = DPMSolverV3(DEGENERATE, SCHEDULE, 6)
    ems = v3._on(x_T)
    hist = [(k, x_T + 0.1 * k, model(x_T + 0.1 * k, v3.times[k].expand(64))) for k in range(3)]
    step, x_new, eps_new = v3._correct(hist, 3, False, ems)
    l = ems["l"][v3.indexes[2]]
    n_old = v3.sigmas[2] * hist[-1][2] - l * hist[-1][1]
    torch.testing.assert_close(v3.sigmas[2] * eps_new - l * x_new, n_old)
    assert not torch.allclose(x_new, hist[-1][1])
    assert [v3.corrector_allowed(k, half=True) for k in range(6)] == [float(t) > 0.5 for t in v3.times[:6]]
    assert all(v3.corrector_allowed(k, half=False) for k in range(6))


def test_samplers_preserve_dtype_and_shape():
    gmm = ring_mixture(dtype=torch.float32)
    model = GaussianMixtureNoisePredictor(gmm, SCHEDULE)
    x_T = torch.randn(8, 2)
    stats = ModelStatistics.degenerate(SCHEDULE, (2,), 50)
    outs = [ddim(model, x_T, SCHEDULE, 5), dpm_solver_pp(model, x_T, SCHEDULE, 5, order=3),
            unipc(model, x_T, SCHEDULE, 5), DPMSolverV3(stats, SCHEDULE, 5).sample(model, x_T)]
    for out in outs:
        assert out.dtype == torch.float32 and out.shape == (8, 2) and torch.isfinite(out).all()


@pytest.mark.parametrize("sampler", ["reverse_sde", "edm_churn"])
def test_stochastic_samplers_reproduce_mode_masses(sampler):
    gmm = GaussianMixture(torch.tensor([0.5, 0.25, 0.25]),
                          torch.tensor([[2.0, 0.0], [-2.0, 1.0], [0.0, -2.0]], dtype=torch.float64), 0.1)
    model = GaussianMixtureNoisePredictor(gmm, SCHEDULE)
    gen = torch.Generator().manual_seed(3)
    x_T = torch.randn(2000, 2, generator=gen, dtype=torch.float64)
    if sampler == "reverse_sde":
        run = lambda g: reverse_sde(model, x_T, SCHEDULE, 100, generator=g)
    else:
        run = lambda g: edm_sampler(model, x_T, SCHEDULE, 30, s_churn=10.0, generator=g)
    x = run(torch.Generator().manual_seed(1))
    masses = torch.bincount(gmm.nearest_component(x), minlength=3).double() / x.shape[0]
    assert (masses - torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)).abs().sum() < 0.08
    assert torch.equal(x, run(torch.Generator().manual_seed(1)))  # deterministic given x_T and the seed
    assert not torch.equal(x, run(torch.Generator().manual_seed(2)))


def test_bad_arguments(problem):
    model, x_T, _ = problem
    with pytest.raises(ValueError, match="order"):
        dpm_solver_pp(model, x_T, SCHEDULE, 5, order=4)
    with pytest.raises(ValueError, match="variant"):
        unipc(model, x_T, SCHEDULE, 5, variant="bh3")
    with pytest.raises(ValueError, match="steps"):
        ddim(model, x_T, SCHEDULE, 0)
    with pytest.raises(ValueError, match="skip_type"):
        ddim(model, x_T, SCHEDULE, 5, skip_type="cosine")
    with pytest.raises(ValueError, match="schedule"):
        DPMSolverV3(DEGENERATE, VPLinear(beta_1=19.0), 5)
