import math

import pytest
import torch

from nde.diffusion.dpm_solver import ddim
from nde.diffusion.dpm_solver_v3 import DPMSolverV3, cumulative_exp_integral, taylor_derivatives
from nde.diffusion.mixtures import GaussianMixture, GaussianMixtureNoisePredictor, ring_mixture
from nde.diffusion.schedules import VPLinear
from nde.diffusion.statistics import ModelStatistics, estimate_statistics, lambda_grid

D = 3


@pytest.fixture
def gaussian():
    """Single Gaussian N(mu, diag(v)): eps* = sigma (x - alpha mu)/(alpha^2 v + sigma^2)."""
    mu = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    var = torch.tensor([0.3, 1.0, 0.05], dtype=torch.float64)
    schedule = VPLinear()
    mixture = GaussianMixture(torch.ones(1), mu[None], var[None])
    return schedule, mu, var, GaussianMixtureNoisePredictor(mixture, schedule)


def closed_form_l(schedule, lambdas, var):
    t = schedule.t_of_lambda(lambdas)
    a2, s2 = schedule.alpha(t)[:, None] ** 2, schedule.sigma(t)[:, None] ** 2
    return s2 / (a2 * var + s2)


def test_single_gaussian_statistics_recovered(gaussian):
    schedule, mu, var, model = gaussian
    gen = torch.Generator().manual_seed(1)
    data = mu + var.sqrt() * torch.randn(256, D, generator=gen, dtype=torch.float64)
    stats = estimate_statistics(model, data, schedule, n_grid=100, generator=gen, progress=False)
    l_true = closed_form_l(schedule, stats.lambdas, var)
    # The Jacobian is diagonal and x-independent here, so Hutchinson's estimator is exact.
    torch.testing.assert_close(stats.l, l_true, rtol=1e-10, atol=1e-12)
    # f = -l mu is constant over the data: Var(f) = 0, the guarded slope is 0 and b = df/dlambda = -l' mu
    # (up to the finite-difference error of l' on the grid).
    assert torch.equal(stats.s, torch.zeros_like(stats.s))
    dl_true = torch.func.jvp(lambda lam: closed_form_l(schedule, lam, var), (stats.lambdas,),
                             (torch.ones_like(stats.lambdas),))[1]
    b_true = -dl_true * mu
    assert (stats.b - b_true).abs().max() < 1e-2 * b_true.abs().max()  # O(dlambda^2) finite-difference error


def test_hutchinson_estimate_converges_for_nondiagonal_jacobian():
    schedule = VPLinear()
    cov = torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=torch.float64)
    mixture = GaussianMixture(torch.ones(1), torch.zeros(1, 2, dtype=torch.float64), cov[None])
    model = GaussianMixtureNoisePredictor(mixture, schedule)
    gen = torch.Generator().manual_seed(0)
    errors = []
    for k in (64, 4096):
        data = torch.randn(k, 2, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
        stats = estimate_statistics(model, data, schedule, n_grid=4, generator=gen, progress=False)
        t = schedule.t_of_lambda(stats.lambdas)
        a2, s2 = schedule.alpha(t) ** 2, schedule.sigma(t) ** 2
        exact = torch.stack([s * torch.linalg.inv(a * cov + s * torch.eye(2, dtype=torch.float64)).diagonal()
                             for a, s in zip(a2, s2)])
        errors.append((stats.l - exact).abs().max().item())
    assert errors[1] < errors[0] / 3  # Monte-Carlo error ~ 1/sqrt(K): 8x fewer expected, 3x required



def test_statistics_do_not_depend_on_batch_size():
    """batch_size is a memory knob: the noise and the probes used to be drawn per batch (probes interleaved with the
    next batch's noise), so the same generator gave l differing by 0.06 between batch_size=256 and 64."""
    schedule = VPLinear()
    mixture = ring_mixture()
    model = GaussianMixtureNoisePredictor(mixture, schedule)
    data = mixture.sample(256, torch.Generator().manual_seed(0))
    whole, batched = (estimate_statistics(model, data, schedule, n_grid=4, batch_size=size, n_probes=2,
                                          generator=torch.Generator().manual_seed(1), progress=False)
                      for size in (256, 37))
    for name in "lsb":
        # rtol 1e-6: the first grid point's s (~7e4, K = 256) amplifies the rounding of the streamed moments
        torch.testing.assert_close(getattr(batched, name), getattr(whole, name), rtol=1e-6, atol=1e-9)


def test_one_v3_step_with_exact_statistics_is_the_analytic_solution(gaussian):
    schedule, mu, var, model = gaussian
    n_grid = 2000
    lambdas = lambda_grid(schedule, n_grid)
    l = closed_form_l(schedule, lambdas, var)
    dl = torch.gradient(l, spacing=(lambdas,), dim=0, edge_order=2)[0]
    stats = ModelStatistics(lambdas, l, torch.zeros_like(l), -dl * mu, schedule.config(), schedule.t_start,
                            schedule.t_end)
    x_T = torch.randn(5, D, dtype=torch.float64)
    x_0 = DPMSolverV3(stats, schedule, steps=1).sample(model, x_T, order=1, use_corrector=False)
    ends = torch.tensor([schedule.t_start, schedule.t_end], dtype=torch.float64)
    (a_T, a_0), (s_T, s_0) = schedule.alpha(ends), schedule.sigma(ends)
    exact = a_0 * mu + (a_0**2 * var + s_0**2).sqrt() * (x_T - a_T * mu) / (a_T**2 * var + s_T**2).sqrt()
    torch.testing.assert_close(x_0, exact, rtol=1e-5, atol=1e-6)


def test_cumulative_exp_integral_matches_fine_trapezoid_including_large_exponents():
    grid = torch.linspace(-3.0, 5.0, 81, dtype=torch.float64)
    exponent = torch.stack([3 * grid + 0.2 * grid**2, 300 + 2 * torch.sin(grid)], dim=1)
    weight = torch.stack([torch.cos(grid), 1 + grid**2], dim=1)
    out = cumulative_exp_integral(exponent, grid, weight)
    fine = torch.linspace(-3.0, 5.0, 80 * 400 + 1, dtype=torch.float64)
    fine_exp = torch.stack([3 * fine + 0.2 * fine**2, 300 + 2 * torch.sin(fine)], dim=1)
    fine_w = torch.stack([torch.cos(fine), 1 + fine**2], dim=1)
    pieces = 0.5 * (torch.exp(fine_exp[1:]) * fine_w[1:] + torch.exp(fine_exp[:-1]) * fine_w[:-1]) * (fine[1] - fine[0])
    reference = torch.cat([torch.zeros(1, 2, dtype=torch.float64), pieces.cumsum(0)])[::400]
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, reference, rtol=2e-3, atol=1e-8)


def test_cumulative_exp_integral_exact_for_linear_exponent_and_weight():
    grid = torch.linspace(0.0, 2.0, 5, dtype=torch.float64)
    a, w = 1.7 * grid[:, None], (2 - grid)[:, None]
    exact = lambda x: ((2 - x) * torch.exp(1.7 * x) / 1.7 + torch.exp(1.7 * x) / 1.7**2) - (2 / 1.7 + 1 / 1.7**2)
    torch.testing.assert_close(cumulative_exp_integral(a, grid, w)[:, 0], exact(grid), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pseudo", [False, True])
def test_taylor_derivatives_exact_for_polynomials(pseudo):
    poly = lambda d: 0.5 + 2.0 * d - 1.5 * d**2 + 0.25 * d**3
    deltas = [-0.4, -1.1, -1.5]
    values = [torch.tensor(poly(d) - poly(0.0), dtype=torch.float64) for d in deltas]
    derivs = taylor_derivatives(deltas, values, pseudo)
    if pseudo:  # k-th derivative from the k most recent points: exact only for the top one on a degree-3 cubic
        assert math.isclose(derivs[2].item(), 6 * 0.25, rel_tol=1e-12)
        first = taylor_derivatives(deltas[:1], values[:1], False)[0]
        assert math.isclose(derivs[0].item(), first.item(), rel_tol=1e-12)
    else:
        assert [round(d.item(), 10) for d in derivs] == [2.0, -3.0, 1.5]


def test_save_load_roundtrip_and_mismatch_errors(tmp_path, gaussian):
    schedule, *_ = gaussian
    stats = ModelStatistics.degenerate(schedule, (D,), 10)
    path = tmp_path / "ems.pt"
    stats.save(path)
    loaded = ModelStatistics.load(path, schedule=schedule, n_grid=10, t_start=1.0, t_end=1e-3)
    assert torch.equal(loaded.l, stats.l) and loaded.schedule == schedule.config()
    with pytest.raises(ValueError, match="schedule"):
        ModelStatistics.load(path, schedule=VPLinear(beta_1=10.0))
    with pytest.raises(ValueError, match="N=10"):
        ModelStatistics.load(path, n_grid=20)
    with pytest.raises(ValueError, match="t_end"):
        ModelStatistics.load(path, t_end=1e-4)
    with pytest.raises(ValueError, match="state shape"):
        DPMSolverV3(stats, schedule, 5).sample(lambda x, t: x, torch.zeros(2, D + 1))
    torch.save({"l": stats.l}, path)
    with pytest.raises(ValueError, match="format version"):
        ModelStatistics.load(path)


def test_too_many_steps_for_grid_is_an_error(gaussian):
    schedule, *_ = gaussian
    with pytest.raises(ValueError, match="too many"):
        DPMSolverV3(ModelStatistics.degenerate(schedule, (D,), 10), schedule, steps=20)


def test_time_steps_snap_to_the_grid(gaussian):
    schedule, *_ = gaussian
    stats = ModelStatistics.degenerate(schedule, (D,), 120)
    solver = DPMSolverV3(stats, schedule, steps=8, skip_type="logSNR")
    assert solver.indexes == [15 * k for k in range(9)]  # uniform logSNR steps land exactly on grid points
    torch.testing.assert_close(schedule.lambda_(solver.times), stats.lambdas[solver.indexes])
    edm = DPMSolverV3(stats, schedule, steps=8, skip_type="edm")
    assert edm.indexes[0] == 0 and edm.indexes[-1] == 120 and edm.indexes == sorted(set(edm.indexes))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_statistics_on_cuda_match_cpu():
    """Same data, probes and noise (drawn on the CPU generator) on CUDA and CPU give the same l, s, b."""
    schedule = VPLinear()
    mixture = GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[1.0, 0.0], [-1.0, 0.5]], dtype=torch.float64),
                              torch.tensor([[0.2, 0.3], [0.4, 0.1]], dtype=torch.float64))
    data = mixture.sample(128, torch.Generator().manual_seed(0))
    out = []
    for device in ("cpu", "cuda"):
        model = GaussianMixtureNoisePredictor(mixture.to(device=device), schedule)
        stats = estimate_statistics(model, data.to(device), schedule, n_grid=6,
                                    generator=torch.Generator().manual_seed(1), progress=False)
        out.append((stats.l, stats.s, stats.b))
    for cpu, cuda in zip(*out):
        torch.testing.assert_close(cuda, cpu, rtol=1e-9, atol=1e-11)


def test_v3_samples_on_the_statistics_interval_and_refuses_another(tmp_path):
    """The schedule's (or the call's) t_start/t_end must be the statistics' interval: VPLinear(t_end=1e-2) with
    statistics for t_end=1e-3 sampled down to 1e-3; with matching statistics degenerate v3 order 1 is DDIM there."""
    means = torch.tensor([[1.0, 0.0], [-1.0, 0.5]], dtype=torch.float64)
    model = GaussianMixtureNoisePredictor(GaussianMixture(torch.tensor([0.3, 0.7]), means, 0.2), VPLinear())
    x_T = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    short = VPLinear(t_end=1e-2)
    with pytest.raises(ValueError, match=r"computed for t_end=0.001, but t_end=0.01 is the schedule's"):
        DPMSolverV3(ModelStatistics.degenerate(VPLinear(), (2,), 50), short, 5)
    stats = ModelStatistics.degenerate(short, (2,), 50)
    solver = DPMSolverV3(stats, short, 5)
    assert float(solver.times[-1]) == pytest.approx(1e-2, rel=1e-9)
    torch.testing.assert_close(solver.sample(model, x_T, order=1), ddim(model, x_T, short, 5), rtol=1e-10, atol=1e-10)
    late = ModelStatistics.degenerate(VPLinear(), (2,), 50, t_start=0.5)
    with pytest.raises(ValueError, match="t_start=1.0 is the schedule's"):
        DPMSolverV3(late, VPLinear(), 5)
    with pytest.raises(ValueError, match="t_start=0.6 was passed"):
        DPMSolverV3(late, VPLinear(), 5, t_start=0.6)
    torch.testing.assert_close(DPMSolverV3(late, VPLinear(), 5, t_start=0.5).sample(model, x_T, order=1),
                               ddim(model, x_T, VPLinear(), 5, t_start=0.5), rtol=1e-10, atol=1e-10)
    path = tmp_path / "ems.pt"
    stats.save(path)
    with pytest.raises(ValueError, match="t_end"):
        ModelStatistics.load(path, schedule=VPLinear())
    assert ModelStatistics.load(path, schedule=VPLinear(), t_end=1e-2).t_end == 1e-2


def test_statistics_from_too_few_samples_are_refused_by_the_solver():
    """K = 16 samples of a 2-D ring mixture give |s| ~ 3e3: e^{-S} overflows the tables, and sampling returned NaN."""
    mixture = ring_mixture()
    model = GaussianMixtureNoisePredictor(mixture, VPLinear())
    data = mixture.sample(16, torch.Generator().manual_seed(0))
    stats = estimate_statistics(model, data, VPLinear(), n_grid=20, generator=torch.Generator().manual_seed(0),
                                progress=False)
    with pytest.raises(ValueError, match=r"statistics are unusable: the DPM-Solver-v3 tables B, C are not finite "
                                         r"\(max \|s\| = 3\.22e\+03.*estimated from K=16 data samples"):
        DPMSolverV3(stats, VPLinear(), 5)
    steep = ModelStatistics.degenerate(VPLinear(), (2,), 20)
    steep.s[:] = 1e3
    with pytest.raises(ValueError, match=r"tables I, C are not finite .* given directly"):
        DPMSolverV3(steep, VPLinear(), 5)
