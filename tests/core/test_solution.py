"""Solution: dense evaluation, statistics, and the solver heuristics against closed forms."""
import math

import pytest
import torch

import nde


def test_evaluate_matches_outputs_and_closed_form():
    t = torch.linspace(0, 2, 5, dtype=torch.float64)
    y0 = torch.tensor([1.0, -2.0], dtype=torch.float64)
    sol = nde.solve_ode(lambda t, y: -y, y0, t, rtol=1e-9, atol=1e-9)
    assert torch.allclose(sol.evaluate(t), sol.ys, atol=1e-12)
    tq = torch.tensor([0.13, 1.37], dtype=torch.float64)
    assert torch.allclose(sol.evaluate(tq), y0 * torch.exp(-tq).unsqueeze(1), atol=1e-7)
    with pytest.raises(ValueError, match="outside the solved interval"):
        sol.evaluate(3.0)


@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_stiffness_estimate_is_the_eigenvalue_of_a_linear_problem(method):
    lam = 7.5
    sol = nde.solve_ode(lambda t, y: -lam * y, torch.ones(3, dtype=torch.float64),
                        torch.tensor([0.0, 1.0], dtype=torch.float64), method=method)
    assert torch.allclose(sol.heuristics["stiffness"], torch.full_like(sol.heuristics["stiffness"], lam), rtol=1e-8)


def test_error_ratio_is_the_scaled_local_error():
    sol = nde.solve_ode(lambda t, y: torch.cos(t) * y, torch.ones(1, dtype=torch.float64),
                        torch.tensor([0.0, 3.0], dtype=torch.float64), rtol=1e-6, atol=1e-6)
    ratios = sol.heuristics["error_ratio"]
    assert ratios.shape == sol.heuristics["dt"].shape == (int(sol.stats["n_accepted"]),)
    assert bool((ratios <= 1).all()) and bool((ratios > 0).all())
    assert sol.heuristics["dt"].sum().item() >= 3.0 - 1e-12  # accepted steps cover the interval


def test_stats_count_every_function_evaluation():
    calls = []

    def f(t, y):
        calls.append(1)
        return -y
    sol = nde.solve_ode(f, torch.ones(2), torch.tensor([0.0, 5.0]), method="dopri5")
    assert int(sol.stats["nfe"]) == len(calls)
    assert int(sol.stats["nfe"]) == 2 + 6 * (int(sol.stats["n_accepted"]) + int(sol.stats["n_rejected"]))


def test_interp_cubic_is_hermite_also_for_a_method_with_its_own_interpolant():
    """dopri5 taking fixed steps with interp="cubic" gave its own dense output, identical to the default."""
    f = lambda t, y: torch.sin(3 * y) - y   # noqa: E731
    y0 = torch.tensor([0.7, -0.2], dtype=torch.float64)
    nodes = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    at_nodes = nde.solve_ode(f, y0, nodes, method="dopri5", step_size=0.5).ys
    theta, h = 0.3, 0.5
    y_a, y_b = at_nodes[1], at_nodes[2]
    t2, t3 = theta ** 2, theta ** 3
    hermite = ((2 * t3 - 3 * t2 + 1) * y_a + (-2 * t3 + 3 * t2) * y_b
               + (t3 - 2 * t2 + theta) * h * f(None, y_a) + (t3 - t2) * h * f(None, y_b))
    t = torch.tensor([0.0, 0.5 + theta * h, 1.0], dtype=torch.float64)
    cubic = nde.solve_ode(f, y0, t, method="dopri5", step_size=0.5, interp="cubic").ys[1]
    dense = nde.solve_ode(f, y0, t, method="dopri5", step_size=0.5).ys[1]
    torch.testing.assert_close(cubic, hermite, rtol=1e-12, atol=1e-12)
    assert (cubic - dense).abs().max() > 1e-8


@pytest.mark.parametrize("per_sample", [False, True])
def test_heuristics_of_a_decreasing_solve_are_in_the_users_time(per_sample):
    """From t = 1 down to 0: the steps are those of the mirrored forward problem z' = −f(−s, z) on [−1, 0], read
    back in the user's time (t was −1 … 0, times the user's problem does not have)."""
    f = lambda t, y: -y * (1 + (t[:, None] if per_sample else t))  # noqa: E731
    mirrored = lambda s, y: -f(-s, y)  # noqa: E731
    y0 = torch.ones(3, 1, dtype=torch.float64)
    back = nde.solve_ode(f, y0, torch.tensor([1.0, 0.0], dtype=torch.float64), per_sample=per_sample).heuristics
    fwd = nde.solve_ode(mirrored, y0, torch.tensor([-1.0, 0.0], dtype=torch.float64), per_sample=per_sample).heuristics
    torch.testing.assert_close(back["t"], -fwd["t"], rtol=0, atol=1e-12, equal_nan=True)
    torch.testing.assert_close(back["dt"], -fwd["dt"], rtol=0, atol=1e-12, equal_nan=True)
    torch.testing.assert_close(back["error_ratio"], fwd["error_ratio"], equal_nan=True)
    first = back["t"][0]
    assert bool((first == 1.0).all()) and bool((back["dt"][~back["dt"].isnan()] < 0).all())


@pytest.mark.parametrize("adjoint", ["direct", "backsolve", "discrete"])
def test_evaluate_gradient_is_exact_or_refused(adjoint):
    """y' = −a·y: d/dy0 of y(1) + y(2) is e^{−a} + e^{−2a}. `direct` differentiates the dense output; the other
    modes record no graph of it, so a backward pass through `evaluate` raises instead of dropping y(1)'s part."""
    a = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    sol = nde.solve_ode(lambda t, y: -a * y, y0, torch.tensor([0.0, 2.0], dtype=torch.float64), adjoint=adjoint,
                        adjoint_params=(a,), rtol=1e-10, atol=1e-10)
    loss = sol.evaluate(1.0).sum() + sol.ys[-1].sum()
    if adjoint != "direct":
        with pytest.raises(RuntimeError, match="adjoint='direct'"):
            torch.autograd.grad(loss, y0)
        with torch.no_grad():   # values alone are fine
            assert abs(sol.evaluate(1.0).item() - math.exp(-0.7)) < 1e-8
        tq = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)   # and so is the slope in time
        (slope,) = torch.autograd.grad(sol.evaluate(tq).sum(), tq)
        assert abs(slope.item() + 0.7 * math.exp(-0.7)) < 1e-7
        return
    (grad,) = torch.autograd.grad(loss, y0)
    assert abs(grad.item() - (math.exp(-0.7) + math.exp(-1.4))) < 1e-8


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_evaluate_refuses_times_outside_t0_t1(direction):
    """dopri5 at rtol 1e-3 ends its last step well past t1 and interpolates there; evaluate returned the
    extrapolated interpolant up to that step's end. Times outside [t0, t1] (either direction) are refused; t0 and
    t1, also rounded (float32 t, Python floats), give ys[0] and ys[-1]."""
    t = torch.tensor([0.0, 1.0], dtype=torch.float64) * direction
    sol = nde.solve_ode(lambda s, y: -y, torch.ones(2, dtype=torch.float64), t, rtol=1e-3, atol=1e-3)
    reach = float(sol.heuristics["t"][-1] + sol.heuristics["dt"][-1])
    assert direction * reach > 1.2   # the last step overshoots t1
    for outside in (0.5 * (float(t[1]) + reach), -direction * 1e-6):
        with pytest.raises(ValueError, match="`t`=.* is outside the solved interval"):
            sol.evaluate(outside)
        with pytest.raises(ValueError, match="`t`="):
            sol.evaluate(torch.tensor([0.5 * direction, outside], dtype=torch.float64))
    assert torch.equal(sol.evaluate(t[0]), sol.ys[0])
    assert torch.allclose(sol.evaluate(t[1]), sol.ys[-1], rtol=1e-14, atol=0)
    t32 = torch.tensor([0.0, 0.7]) * direction   # float32(0.7) < 0.7: the Python float lies just past t1
    sol = nde.solve_ode(lambda s, y: -y, torch.ones(2), t32, method="tsit5")
    assert torch.allclose(sol.evaluate(0.7 * direction), sol.ys[-1], rtol=1e-6, atol=0)


def test_evaluate_ends_at_the_event():
    """An event at ln 2 (y = e^{−t} reaches 0.5) ends the solve: evaluate gives y(event) there, and refuses later
    times before t1."""
    sol = nde.solve_ode(lambda s, y: -y, torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 2.0],
                        dtype=torch.float64), rtol=1e-9, atol=1e-10, event_fn=lambda s, y: y - 0.5)
    assert float(sol.event_t) == pytest.approx(math.log(2), abs=1e-8)
    assert torch.allclose(sol.evaluate(sol.event_t), sol.ys[-1], rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="outside the solved interval"):
        sol.evaluate(float(sol.event_t) + 0.01)
