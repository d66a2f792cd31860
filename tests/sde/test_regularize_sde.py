"""Regularisers on SDE solves: values recomputed by hand on geometric Brownian motion, gradient routing,
every gradient mode, and clear errors for combinations that cannot work."""
import math
import random

import pytest
import torch

from nde import regularize as R
from nde.sde import BrownianPath, solve_sde

from tests.sde.models import GBM

F64 = torch.float64
Y0 = torch.tensor([[1.0], [0.5], [2.0]], dtype=F64)


def _path(t1=1.0, seed=3):
    return BrownianPath(0.0, t1, (3, 1), dtype=F64, entropy=seed)


def _em_step(sde, y, h, dw):
    """Euler–Maruyama on GBM, written out: y (1 + μ h + σ dW)."""
    return y * (1 + sde.mu * h + sde.sigma * dw)


def _doubling_ratio(sde, bm, t, h, y, rtol, atol):
    """Step-doubling error ratio of Euler–Maruyama from (t, y), recomputed from the path's increments."""
    full = _em_step(sde, y, h, bm(t, t + h))
    two = _em_step(sde, _em_step(sde, y, h / 2, bm(t, t + h / 2)), h / 2, bm(t + h / 2, t + h))
    scale = atol + rtol * torch.maximum(full.abs(), two.abs())
    return ((full - two) / scale).pow(2).mean().sqrt()


def test_error_estimate_of_one_step_is_the_hand_computed_step_doubling_ratio():
    sde, bm, h, rtol, atol = GBM("ito"), _path(0.2), 0.2, 0.5, 0.5
    sol = solve_sde(sde, Y0, [0.0, h], bm=bm, method="euler", adaptive=True, dt=h, rtol=rtol, atol=atol,
                    regularize=R.ErrorEstimate())
    assert int(sol.stats["n_accepted"]) == 1 and int(sol.stats["n_rejected"]) == 0
    expected = _doubling_ratio(sde, bm, 0.0, h, Y0, rtol, atol) * h
    assert sol.regularization.item() == pytest.approx(expected.item(), rel=1e-12)
    # dt is fixed by the output time, so the gradient is that of the hand-computed value (and of FD)
    grad = torch.autograd.grad(sol.regularization, [sde.mu, sde.sigma])
    ref = torch.autograd.grad(expected, [sde.mu, sde.sigma])
    for a, b in zip(grad, ref):
        assert a.item() == pytest.approx(b.item(), rel=1e-10)
    eps = 1e-6
    with torch.no_grad():
        sde.mu += eps
        up = solve_sde(sde, Y0, [0.0, h], bm=bm, method="euler", adaptive=True, dt=h, rtol=rtol, atol=atol,
                       regularize=R.ErrorEstimate()).regularization
        sde.mu -= 2 * eps
        down = solve_sde(sde, Y0, [0.0, h], bm=bm, method="euler", adaptive=True, dt=h, rtol=rtol, atol=atol,
                         regularize=R.ErrorEstimate()).regularization
        sde.mu += eps
    assert grad[0].item() == pytest.approx(((up - down) / (2 * eps)).item(), rel=1e-6)


def test_sum_mean_and_density_agree_with_the_recorded_heuristics():
    sde, ts = GBM("ito"), [0.0, 0.5, 1.0]
    kw = dict(bm=_path(), method="milstein", adaptive=True, dt=0.1, rtol=1e-2, atol=1e-2)
    sols = {name: solve_sde(sde, Y0, ts, regularize=reg, **kw) for name, reg in
            (("sum", R.ErrorEstimate()), ("mean", R.ErrorEstimate("mean")), ("density", R.StepDensity()))}
    ratio, dt = sols["sum"].heuristics["error_ratio"], sols["sum"].heuristics["dt"]
    assert len(ratio) > 5
    assert sols["sum"].regularization.item() == pytest.approx((ratio * dt).sum().item(), rel=1e-12)
    assert sols["mean"].regularization.item() == pytest.approx((ratio * dt).mean().item(), rel=1e-12)
    k = 1.0 + 0.5   # Milstein: strong order 1, step-doubling error ~ h^1.5
    assert sols["density"].regularization.item() == pytest.approx((ratio ** (1 / k)).sum().item(), rel=1e-12)


def test_stiffness_of_a_linear_drift_is_its_rate():
    """Drift μ y: the secant estimate is exactly |μ|, so Σ ρ dt / S = μ (t1 − t0) / 2 for Euler."""
    sde = GBM("ito", mu=-3.0, sigma=0.3)
    kw = dict(bm=_path(), method="euler", adaptive=True, dt=0.05, rtol=1e-2, atol=1e-2)
    sol = solve_sde(sde, Y0, [0.0, 1.0], regularize=R.StiffnessEstimate(), **kw)
    assert sol.regularization.item() == pytest.approx(3.0 * 1.0 / 2.0, rel=1e-10)
    assert int(sol.stats["nfe_regularization"]) == int(sol.stats["n_accepted"]) + 1
    (grad,) = torch.autograd.grad(sol.regularization, [sde.mu])
    assert grad.item() == pytest.approx(-0.5, rel=1e-10)     # d/dμ of |μ|/2 at μ = −3
    sol = solve_sde(sde, Y0, [0.0, 1.0], regularize=R.StiffnessEstimate("abs", "max"), **kw)
    assert sol.regularization.item() == pytest.approx(3.0 / 2.0, rel=1e-10)


def _hand_em_nodes(sde, bm, times):
    ys = [Y0]
    for a, b in zip(times[:-1], times[1:]):
        ys.append(_em_step(sde, ys[-1], b - a, bm(a, b)))
    return ys


@pytest.mark.parametrize("sampling", ["unbiased", "biased"])
def test_local_value_on_a_fixed_grid_is_one_hand_computed_step(sampling):
    sde, bm, dt, rtol, atol = GBM("ito"), _path(), 0.1, 1e-2, 1e-2
    reg = R.LocalErrorEstimate(sampling, method=None)
    sol = solve_sde(sde, Y0, [0.0, 1.0], bm=bm, method="euler", dt=dt, rtol=rtol, atol=atol, regularize=reg,
                    generator=random.Random(7))
    # the same draw, by hand: node grid, sampled time, interpolated detached state, one doubled step
    times = [0.0]
    while times[-1] < 1.0:
        times.append(min(times[-1] + dt, 1.0))
    t_r, _ = reg.sample_times(0.0, 1.0, times[:-1], [b - a for a, b in zip(times[:-1], times[1:])],
                                random.Random(7))[0]
    j = max(i for i in range(len(times) - 1) if times[i] <= t_r)
    with torch.no_grad():
        nodes = _hand_em_nodes(sde, bm, times)
    theta = (t_r - times[j]) / (times[j + 1] - times[j])
    y_r = (1 - theta) * nodes[j] + theta * nodes[j + 1]
    h = min(dt, 1.0 - t_r)
    expected = _doubling_ratio(sde, bm, t_r, h, y_r, rtol, atol) * h
    if sampling == "biased":
        assert theta == 0.0
    assert sol.regularization.item() == pytest.approx(expected.item(), rel=1e-10)
    grad = torch.autograd.grad(sol.regularization, [sde.mu, sde.sigma])
    ref = torch.autograd.grad(expected, [sde.mu, sde.sigma])
    for a, b in zip(grad, ref):
        assert a.item() == pytest.approx(b.item(), rel=1e-9)


def test_local_gradient_reaches_the_parameters_and_not_the_state():
    sde = GBM("ito")
    y0 = Y0.clone().requires_grad_(True)
    for adaptive in (False, True):
        sol = solve_sde(sde, y0, [0.0, 0.5, 1.0], bm=_path(), method="milstein", adaptive=adaptive, dt=0.05,
                        rtol=1e-2, atol=1e-2, regularize=R.LocalErrorEstimate(), generator=random.Random(1))
        g_y0, g_mu = torch.autograd.grad(sol.regularization, [y0, sde.mu], allow_unused=True)
        assert g_y0 is None
        assert g_mu is not None and g_mu.abs().item() > 0
    # a global regulariser differentiates through the whole solve, the state included
    sol = solve_sde(sde, y0, [0.0, 1.0], bm=_path(), method="milstein", adaptive=True, dt=0.05, rtol=1e-2,
                    atol=1e-2, regularize=R.ErrorEstimate())
    g_y0, = torch.autograd.grad(sol.regularization, [y0])
    assert g_y0.abs().sum().item() > 0


@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("gradient,method,sde_type", [("backsolve", "milstein", "ito"),
                                                      ("backsolve", "midpoint", "stratonovich"),
                                                      ("reversible", "reversible_heun", "stratonovich")])
def test_local_regulariser_is_the_same_under_every_gradient_mode(adaptive, gradient, method, sde_type):
    """The main solve's gradient mode changes how the loss is differentiated, not the regulariser: the
    detached state and the live step are the same, so value and gradient match direct mode to round-off."""
    out = {}
    for mode in ("direct", gradient):
        sde = GBM(sde_type)
        reg = R.LocalErrorEstimate("mixture", n_samples=2, step="solver", method=None)
        sol = solve_sde(sde, Y0, [0.0, 0.5, 1.0], bm=_path(), method=method, adaptive=adaptive, dt=0.05,
                        rtol=1e-2, atol=1e-2, gradient=mode, regularize=reg, generator=random.Random(4))
        (sol.regularization + 0.0 * sol.ys.sum()).backward()
        out[mode] = (sol.regularization.item(), sde.mu.grad.item(), sde.sigma.grad.item(),
                     int(sol.stats["nfe_regularization"]))
    assert out["direct"][3] == out[gradient][3] > 0
    for a, b in zip(out["direct"][:3], out[gradient][:3]):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-14)


def test_local_density_and_per_sample_norm():
    sde, bm = GBM("ito"), _path()
    kw = dict(bm=bm, method="euler", dt=0.1, rtol=1e-2, atol=1e-2, generator=random.Random(2))
    err = solve_sde(sde, Y0, [0.0, 1.0], regularize=R.LocalErrorEstimate("biased", step="solver"), **kw)
    kw["generator"] = random.Random(2)
    dens = solve_sde(sde, Y0, [0.0, 1.0], regularize=R.LocalErrorEstimate("biased", quantity="density",
                                                                          step="solver"), **kw)
    # same sampled step: density = (t1 − t0)·EEst^(1/k)/h with EEst = error/h, k = 1 (Euler: 1/2 + 1/2)
    h = 0.1
    assert dens.regularization.item() == pytest.approx(1.0 * (err.regularization.item() / h) / h, rel=1e-9)
    kw["generator"] = random.Random(2)
    rows = solve_sde(sde, Y0, [0.0, 1.0], regularize=R.LocalErrorEstimate("biased", step="solver",
                                                                          norm="per_sample"), **kw)
    # mean of per-row RMS ≤ RMS over the batch (one noise dimension per row here: mean |e| ≤ rms e)
    assert rows.regularization.item() <= err.regularization.item() * (1 + 1e-12)
    assert rows.regularization.item() > 0


def test_unsupported_combinations_name_the_argument():
    sde, ts = GBM("ito"), [0.0, 1.0]
    with pytest.raises(ValueError, match="regularize.*adaptive=True"):
        solve_sde(sde, Y0, ts, method="euler", regularize=R.ErrorEstimate())
    with pytest.raises(ValueError, match="regularize.*gradient='direct'"):
        solve_sde(sde, Y0, ts, method="milstein", adaptive=True, gradient="backsolve", regularize=R.StepDensity())
    strat = GBM("stratonovich")
    with pytest.raises(ValueError, match="regularize.*reversible_heun"):
        solve_sde(strat, Y0, ts, method="reversible_heun", adaptive=True, regularize=R.StiffnessEstimate())
    with pytest.raises(ValueError, match="regularize.method"):
        solve_sde(sde, Y0, ts, method="euler", regularize=R.LocalErrorEstimate(method="dopri5"))
    with pytest.raises(TypeError, match="regularize"):
        solve_sde(sde, Y0, ts, method="euler", regularize=R.RNODE())
    with pytest.raises(TypeError, match="regularize"):
        solve_sde(sde, Y0, ts, method="euler", regularize="error")



@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("gradient", ["direct", "backsolve"])
def test_local_regulariser_of_a_single_output_time_is_zero(adaptive, gradient):
    """Nothing is integrated, so there is no step to regularise: 0, as on an ODE solve (it raised IndexError)."""
    sol = solve_sde(GBM("ito"), Y0, [0.0], method="euler", adaptive=adaptive, gradient=gradient,
                    regularize=R.LocalErrorEstimate(), generator=random.Random(0))
    assert sol.regularization.item() == 0.0 and int(sol.stats["nfe_regularization"]) == 0
    assert torch.equal(sol.ys, Y0.unsqueeze(0))


@pytest.mark.parametrize("method,sde_type", [("reversible_heun", "stratonovich"), ("midpoint", "stratonovich"),
                                             ("euler", "ito")])
def test_local_regulariser_counts_the_drift_evaluations_it_makes(method, sde_type):
    """stats["nfe_regularization"] = the drift calls the regulariser adds (reversible Heun's live step starts with
    one evaluation of its own, which was not counted)."""
    class Counted(GBM):
        calls = 0

        def f(self, t, y):
            Counted.calls += 1
            return super().f(t, y)

    sde, counts = Counted(sde_type), []
    for reg in (None, R.LocalErrorEstimate(n_samples=2)):
        Counted.calls = 0
        sol = solve_sde(sde, Y0, [0.0, 1.0], bm=_path(), method=method, dt=0.1, regularize=reg,
                        generator=random.Random(0))
        counts.append(Counted.calls)
    assert int(sol.stats["nfe_regularization"]) == counts[1] - counts[0]

def test_srk_stability_size_is_the_rk3_interval():
    from nde.sde.methods import SRK
    s = SRK().stability_size("diagonal")
    assert abs(1 - s + s ** 2 / 2 - s ** 3 / 6) == pytest.approx(1.0, abs=1e-4)
    assert not math.isclose(s, 2.0)


def test_benchmark_quick_smoke_run():
    """``python -m benchmarks.regularization_sde --quick`` runs end to end (writes no result files)."""
    from benchmarks import regularization_sde
    rows = regularization_sde.main(["--quick", "--device", "cpu", "--variants", "vanilla", "ernsde",
                                    "local_unbiased"])
    assert [r["variant"] for r in rows] == ["vanilla", "ernsde", "local_unbiased"]
    for r in rows:
        assert math.isfinite(r["test_loss"]) and r["testing_nfe"] > 0 and r["train_nfe_per_iter"] >= r["testing_nfe"] / 2
