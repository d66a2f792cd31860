"""Empirical convergence orders against the closed-form solution of a linear ODE."""
import math

import pytest
import torch

import nde

A = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=torch.float64)
Y0 = torch.tensor([[1.0, 0.5]], dtype=torch.float64)


def linear(t, y):
    return y @ A.T


def exact(t):
    return torch.linalg.matrix_exp(A * t) @ Y0[0]


@pytest.mark.parametrize("method,order,steps", [
    ("euler", 1, (0.02, 0.01)), ("midpoint", 2, (0.05, 0.025)), ("rk4", 4, (0.1, 0.05)),
    ("heun", 2, (0.05, 0.025)), ("heun3", 3, (0.05, 0.025)), ("fehlberg2", 2, (0.05, 0.025)),
    ("fehlberg2_fsal", 2, (0.05, 0.025)), ("adaptive_heun", 2, (0.05, 0.025)),
    ("heun2", 2, (0.05, 0.025)), ("bosh3", 3, (0.1, 0.05)), ("dopri5", 5, (0.2, 0.1)),
    ("tsit5", 5, (0.2, 0.1)), ("dopri8", 8, (0.5, 0.25))])
def test_measured_order(method, order, steps):
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    errs = []
    for h in steps:
        sol = nde.solve_ode(linear, Y0, t, method=method, step_size=h)
        errs.append((sol.ys[-1, 0] - exact(1.0)).abs().max().item())
    measured = math.log2(errs[0] / errs[1])
    # at least the method's order (tsit5 and dopri8 approach theirs from above at these steps)
    assert order - 0.3 < measured < order + 1.5, f"{method}: measured order {measured:.2f}"


@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_dense_output_is_at_least_fourth_order(method):
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    errs = []
    for h in (0.2, 0.1):
        sol = nde.solve_ode(linear, Y0, t, method=method, step_size=h)
        tq = torch.linspace(0.03, 0.97, 13, dtype=torch.float64)
        ref = torch.stack([exact(float(v)) for v in tq])
        errs.append((sol.evaluate(tq)[:, 0] - ref).abs().max().item())
    assert math.log2(errs[0] / errs[1]) > 3.6


def pendulum(t, y):
    """Nonlinear and non-autonomous: a linear problem checks only some of the order conditions."""
    return torch.stack([y[..., 1], -torch.sin(y[..., 0]) + 0.3 * torch.cos(t) * y[..., 1] ** 2], -1)


@pytest.mark.parametrize("method,order", [("dopri5", 4), ("tsit5", 4), ("dopri8", 5), ("bosh3", 3)])
def test_dense_output_local_error_has_the_declared_order(method, order):
    """One step of size h from y0, its dense output at θ in (0, 1) against a tight solve: the error falls as
    h^(order+1). dopri8's extension (nde.tableaus._continuous_extension) is derived from the order
    conditions of every rooted tree up to order 5; a linear field would not test most of them."""
    from nde._rk import Coefficients, interpolate, rk_step, stage_times
    tab = nde.TABLEAUS[method]
    assert tab.dense_order == order
    coeffs = Coefficients.build(tab, torch.float64, torch.float64, "cpu")
    y0 = torch.tensor([[0.8, -0.3]], dtype=torch.float64)
    errs = []
    for h in (0.4, 0.2):
        step = rk_step(pendulum, 0.0, h, y0, pendulum(torch.tensor(0.0), y0), coeffs,
                       stage_times(0.0, h, coeffs, torch.float64, "cpu"))
        err = 0.0
        for theta in (0.23, 0.5, 0.81):
            ref = nde.solve_ode(pendulum, y0, torch.tensor([0.0, theta * h], dtype=torch.float64), method="dopri8",
                                rtol=1e-14, atol=1e-14).ys[-1]
            err = max(err, (interpolate(step, y0, h, theta, coeffs) - ref).abs().max().item())
        errs.append(err)
    assert math.log2(errs[0] / errs[1]) > order + 0.6, errs


def test_continuous_extension_of_order_six_does_not_exist_for_dopri8():
    from nde.tableaus import _DP8_A, _DP8_B, _DP8_C, _continuous_extension
    with pytest.raises(ValueError, match="order 6"):
        _continuous_extension(_DP8_C, _DP8_A + (_DP8_B[:13],), _DP8_B, 6)


@pytest.mark.parametrize("method,order,steps", [("dopri5", 4, (0.3, 0.15)), ("tsit5", 4, (0.3, 0.15)),
                                               ("bosh3", 3, (0.2, 0.1)), ("adaptive_heun", 2, (0.1, 0.05))])
def test_adaptive_method_on_a_fixed_grid_outputs_its_own_interpolant(method, order, steps):
    """solve_ode(step_size=) with an adaptive method: outputs between grid points come from the method's
    dense output (equal to Solution.evaluate), so their error falls at the method's order, or its
    interpolant's where that is lower (dopri5, tsit5: 4); linear interpolation (interp="linear") is second
    order: 3e-2 for dopri5 at h = 0.3 here, against 2.5e-5."""
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    errs = []
    for h in steps:
        sol = nde.solve_ode(linear, Y0, t, method=method, step_size=h)
        assert torch.equal(sol.ys[1], sol.evaluate(t[1]))
        errs.append((sol.ys[1, 0] - exact(0.5)).abs().max().item())
    assert math.log2(errs[0] / errs[1]) > order - 0.5, errs
    if order >= 4:
        linear_out = nde.solve_ode(linear, Y0, t, method=method, step_size=steps[0], interp="linear").ys[1, 0]
        assert (linear_out - exact(0.5)).abs().max().item() > 100 * errs[0]


@pytest.mark.parametrize("method", ["fehlberg2", "fehlberg2_fsal"])
def test_fehlberg2_error_falls_with_tolerance(method):
    """Fehlberg's RK1(2) estimate (weights ±1/512) measures the first-order solution's error, so the
    propagated second-order solution's global error is ~400x the tolerance here (torchdiffeq's
    fehlberg2 too, tests/core/test_vs_torchdiffeq.py); it must still fall in proportion."""
    t = torch.linspace(0, 3, 7, dtype=torch.float64)
    ref = torch.stack([exact(float(v)) for v in t])
    errs = [(nde.solve_ode(linear, Y0, t, method=method, rtol=tol, atol=tol).ys[:, 0] - ref).abs().max().item()
            for tol in (1e-4, 1e-6)]
    assert errs[1] < errs[0] / 30, errs


@pytest.mark.parametrize("method", ["adaptive_heun", "heun2", "bosh3", "dopri5", "tsit5", "dopri8"])
def test_adaptive_error_scales_with_tolerance(method):
    t = torch.linspace(0, 3, 7, dtype=torch.float64)
    ref = torch.stack([exact(float(v)) for v in t])
    for tol in ((1e-4, 1e-6) if "heun" in method else (1e-5, 1e-8)):
        sol = nde.solve_ode(linear, Y0, t, method=method, rtol=tol, atol=tol)
        err = (sol.ys[:, 0] - ref).abs().max().item()
        assert err < 50 * tol, f"{method} at tol {tol}: error {err:.2e}"


def test_decreasing_time_integrates_backwards():
    t = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    y1 = exact(1.0).unsqueeze(0)
    sol = nde.solve_ode(linear, y1, t, rtol=1e-10, atol=1e-10)
    assert torch.allclose(sol.ys[-1], Y0, atol=1e-8)
    assert torch.allclose(sol.ys[1, 0], exact(0.5), atol=1e-8)


@pytest.mark.parametrize("method", ["dopri5", "adaptive_heun"])
def test_cubic_outputs_on_a_fixed_grid_take_no_extra_evaluation_when_the_method_carries_the_end_slope(method):
    """interp="cubic" needs f(t1, y1) only from methods that do not carry it as their last stage."""
    t = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    plain = nde.solve_ode(linear, Y0, t, method=method, step_size=0.1)
    cubic = nde.solve_ode(linear, Y0, t, method=method, step_size=0.1, interp="cubic")
    assert int(cubic.stats["nfe"]) == int(plain.stats["nfe"]) == 1 + 10 * nde.TABLEAUS[method].new_evals_per_step
