"""Per-sample steps: agreement with shared steps and with separate solves, work saved, stats."""
import pytest
import torch

import nde


def vdp_with_mu(t, y):
    """Van der Pol with its stiffness parameter carried as a constant third component."""
    x, v, mu = y[:, :1], y[:, 1:2], y[:, 2:]
    return torch.cat([v, mu * (1 - x ** 2) * v - x, torch.zeros_like(mu)], dim=1)


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3", "dopri8", "heun2", "adaptive_heun", "fehlberg2"])
def test_per_sample_matches_separate_solves(method):
    """Every row takes the steps that a shared solve of that row alone takes, and counts the same accepted and
    rejected steps and evaluations (the carried stage of adaptive_heun and fehlberg2 included; dopri8 lands each
    row on its output times)."""
    y0 = torch.tensor([[2.0, 0.0, 0.5], [1.0, 0.5, 2.0], [0.5, -1.0, 5.0]], dtype=torch.float64)
    t = torch.linspace(0, 3, 4, dtype=torch.float64)
    tol = 1e-5 if method in ("heun2", "adaptive_heun", "fehlberg2") else 1e-7
    sol = nde.solve_ode(vdp_with_mu, y0, t, per_sample=True, rtol=tol, atol=tol, method=method)
    for i in range(3):
        single = nde.solve_ode(vdp_with_mu, y0[i:i + 1], t, rtol=tol, atol=tol, method=method)
        assert torch.allclose(sol.ys[:, i], single.ys[:, 0], atol=1e-10)
        for stat in ("n_accepted", "n_rejected", "nfe"):
            assert sol.stats[stat][i] == single.stats[stat], stat


def test_per_sample_spends_fewer_row_evaluations_on_mixed_stiffness():
    mu = torch.tensor([0.1] * 15 + [8.0], dtype=torch.float64)
    y0 = torch.cat([torch.tensor([[2.0, 0.0]] * 16, dtype=torch.float64), mu.unsqueeze(1)], 1)
    t = torch.tensor([0.0, 6.0], dtype=torch.float64)
    rows_evaluated = []

    def counted(t, y):
        rows_evaluated.append(y.shape[0])
        return vdp_with_mu(t, y)

    shared = nde.solve_ode(vdp_with_mu, y0, t, rtol=1e-6, atol=1e-6)
    ps = nde.solve_ode(counted, y0, t, rtol=1e-6, atol=1e-6, per_sample=True)
    assert torch.allclose(ps.ys[-1], shared.ys[-1], atol=1e-4)
    assert sum(rows_evaluated) < int(shared.stats["nfe"]) * 16
    assert int(ps.stats["nfe"][0]) < int(ps.stats["nfe"][-1])  # easy rows stop early
    assert ps.stats["nfe"].shape == (16,) and ps.status.shape == (16,)


def test_per_sample_heuristics_have_one_column_per_sample():
    y0 = torch.randn(5, 3, dtype=torch.float64)
    sol = nde.solve_ode(lambda t, y: -y, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), per_sample=True)
    assert sol.heuristics["error_ratio"].shape[1] == 5
    assert torch.allclose(sol.ys[-1], y0 * torch.exp(torch.tensor(-1.0, dtype=torch.float64)), atol=1e-5)


def test_field_mixing_rows_is_named_when_the_batch_shrinks():
    """A field that broadcasts a closed-over (batch, 1) parameter works while every row is active and used
    to fail inside torch once finished rows left the working batch; now the error names `func`."""
    rates = torch.tensor([[1.0], [20.0], [40.0], [80.0]])
    with pytest.raises(ValueError, match="per-sample mode: func gets any n rows"):
        nde.solve_ode(lambda t, y: -rates * y, torch.ones(4, 1), torch.tensor([[0.0, 0.01], [0.0, 0.01],
                                                                                [0.0, 0.01], [0.0, 5.0]]),
                      per_sample=True)


def test_max_steps_stops_only_the_rows_that_reach_it():
    """With throw=False, a row that needs more than ``max_steps`` steps ends with MAX_STEPS after exactly that many
    attempts, as a shared solve of that row alone does; the other rows finish and match their own solves."""
    y0 = torch.tensor([[2.0, 0.0, 0.5], [2.0, 0.0, 30.0]], dtype=torch.float64)
    t = torch.tensor([0.0, 5.0], dtype=torch.float64)
    sol = nde.solve_ode(vdp_with_mu, y0, t, per_sample=True, rtol=1e-7, atol=1e-7, max_steps=60, throw=False)
    assert sol.status.tolist() == [int(nde.Status.SUCCESS), int(nde.Status.MAX_STEPS)]
    for i in range(2):
        single = nde.solve_ode(vdp_with_mu, y0[i:i + 1], t, rtol=1e-7, atol=1e-7, max_steps=60, throw=False)
        assert int(single.status) == int(sol.status[i])
        for stat in ("n_accepted", "n_rejected", "nfe"):
            assert sol.stats[stat][i] == single.stats[stat], stat
    assert int(sol.stats["n_accepted"][1] + sol.stats["n_rejected"][1]) == 60
    assert torch.isnan(sol.ys[-1, 1]).all() and torch.isfinite(sol.ys[-1, 0]).all()


@pytest.mark.parametrize("adjoint", ["direct", "discrete"])
def test_a_rejected_step_that_overflowed_leaves_the_gradient_finite(adjoint):
    """Row 0's first trial step (dt = 1 on y' = −a y³ from 10) overflows and is rejected: its inf stayed in the
    graph and the zero gradient torch.where sends it came back as NaN for the parameter."""
    a = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    f = lambda t, y: -a * y ** 3   # noqa: E731
    y0 = torch.tensor([[10.0], [0.1]], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    sol = nde.solve_ode(f, y0, t, per_sample=True, first_step=1.0, adjoint=adjoint, adjoint_params=(a,))
    assert int(sol.stats["n_rejected"][0]) > 0
    (grad,) = torch.autograd.grad(sol.ys[-1].sum(), a)
    alone = sum(torch.autograd.grad(nde.solve_ode(f, y0[i:i + 1], t, first_step=1.0).ys[-1].sum(), a)[0]
                for i in range(2))
    torch.testing.assert_close(grad, alone, rtol=1e-9, atol=1e-12)


def test_rows_that_finish_before_the_others_keep_finite_gradients_with_dopri8():
    """dopri8 lands each row on its output times; a finished row stays in the working batch with a step of 0,
    and its output weight θ = 0/0 made its gradient NaN."""
    f = lambda t, y: torch.cat([-y[:, 1:] * torch.sin(y[:, :1]), 0 * y[:, 1:]], 1)   # noqa: E731
    y0 = torch.tensor([[1.0, 5.0], [1.0, 5.0], [1.0, 0.01]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    (grad,) = torch.autograd.grad(nde.solve_ode(f, y0, t, method="dopri8", per_sample=True).ys[-1].sum(), y0)
    (alone,) = torch.autograd.grad(nde.solve_ode(f, y0[2:], t, method="dopri8").ys[-1].sum(), y0)
    torch.testing.assert_close(grad[2], alone[2], rtol=1e-8, atol=1e-10)


def test_a_row_stopped_by_max_steps_keeps_the_outputs_it_reached():
    t = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.5, 1.0], dtype=torch.float64)
    kw = dict(rtol=1e-8, atol=1e-8, max_steps=7, throw=False)
    shared = nde.solve_ode(lambda s, y: -y, torch.ones(1, 1, dtype=torch.float64), t, **kw)
    rows = nde.solve_ode(lambda s, y: -y, torch.ones(1, 1, dtype=torch.float64), t, per_sample=True, **kw)
    assert int(rows.status[0]) == int(shared.status) == nde.Status.MAX_STEPS
    torch.testing.assert_close(rows.ys, shared.ys, rtol=1e-12, atol=1e-12, equal_nan=True)
    assert int(torch.isnan(rows.ys).sum()) == 1   # only t = 1 was not reached


@pytest.mark.parametrize("per_sample", [False, True])
def test_a_field_that_turns_nan_fails_as_non_finite_also_with_a_min_step(per_sample):
    """With min_step the rejected step could not shrink, so the solve spun to max_steps (20k rejections here)."""
    f = lambda t, y: torch.where(t.reshape(-1, 1) > 0.5, torch.full_like(y, float("nan")), -y)   # noqa: E731
    sol = nde.solve_ode(f, torch.ones(2, 1), torch.tensor([0.0, 1.0]), min_step=1e-3, throw=False,
                        per_sample=per_sample)
    assert (torch.as_tensor(sol.status) == nde.Status.NONFINITE).all()
    assert int(torch.as_tensor(sol.stats["n_rejected"]).max()) < 50


def test_tiny_error_ratios_get_the_same_step_growth_as_shared_steps():
    """A slow field's first error ratios lie far below 1e-10, where the per-sample rule clamped them (second step
    0.031 against the shared 0.1 with factor_max = 100)."""
    f = lambda t, y: 1e-3 * torch.sin(y)   # noqa: E731
    y0, t = torch.tensor([[0.5]], dtype=torch.float64), torch.tensor([0.0, 20.0], dtype=torch.float64)
    kw = dict(controller=nde.PIController(factor_max=100.0), first_step=1e-3, rtol=1e-3, atol=1e-3)
    shared, rows = nde.solve_ode(f, y0, t, **kw), nde.solve_ode(f, y0, t, per_sample=True, **kw)
    assert int(rows.stats["n_accepted"][0]) == int(shared.stats["n_accepted"])
    torch.testing.assert_close(rows.heuristics["dt"][:, 0], shared.heuristics["dt"], rtol=1e-5, atol=0)


def test_a_tuple_state_takes_the_steps_of_its_rows_own_shared_solves():
    """A tuple state's error norm is the mixed norm (the largest RMS over its tensors) in shared steps; per sample
    it was the RMS of each row's concatenation, which loosened the small tensor's tolerance (68 / 104 / 290
    evaluations against the 74 / 110 / 296 of the rows' own solves)."""
    def f(t, state):
        x, v = state
        return v, -x - 0.1 * v ** 3 * (1 + x.pow(2).sum(-1, keepdim=True))
    x0 = torch.tensor([[0.3, -0.2], [-3.0, 2.5], [8.0, -12.0]], dtype=torch.float64)
    v0 = torch.tensor([[0.01, -0.02], [0.005, 0.0], [-0.01, 0.01]], dtype=torch.float64)
    t = torch.linspace(0, 3, 4, dtype=torch.float64)
    sol = nde.solve_ode(f, (x0, v0), t, per_sample=True, rtol=1e-5, atol=1e-7)
    for i in range(3):
        single = nde.solve_ode(f, (x0[i:i + 1], v0[i:i + 1]), t, rtol=1e-5, atol=1e-7)
        for stat in ("n_accepted", "n_rejected", "nfe"):
            assert sol.stats[stat][i] == single.stats[stat], stat
        for part, alone in zip(sol.ys, single.ys):
            torch.testing.assert_close(part[:, i], alone[:, 0], rtol=1e-9, atol=1e-9)


def test_a_finished_row_does_not_evaluate_func_past_its_end():
    """Row 0 ends at t = 1, where d = 1.2 − t is still positive; it stayed in the working batch stepping by its
    next step size, into d < 0 where √d is NaN, and 0·NaN made the parameter's gradient NaN (all rows SUCCESS)."""
    a = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    f = lambda t, y: torch.stack([-a * y[:, 0] * torch.sqrt(y[:, 1]), -torch.ones_like(y[:, 1])], 1)   # noqa: E731
    y0 = torch.tensor([[1.0, 1.2]] + [[1.0, 2.0]] * 3, dtype=torch.float64)
    t = torch.tensor([[0.0, 1.0]] + [[0.0, 1.9]] * 3, dtype=torch.float64)
    sol = nde.solve_ode(f, y0, t, per_sample=True, rtol=1e-6, atol=1e-6)
    (grad,) = torch.autograd.grad(sol.ys[-1, :, 0].sum(), a)
    alone = sum(torch.autograd.grad(nde.solve_ode(f, y0[i:i + 1], t[i], rtol=1e-6, atol=1e-6).ys[-1, 0, 0], a)[0]
                for i in range(4))
    torch.testing.assert_close(grad, alone, rtol=1e-9, atol=1e-12)


def test_rows_integrating_in_opposite_directions_are_named():
    """Each row of t is monotonic, one increasing and one decreasing: the error said that t must be strictly
    increasing or strictly decreasing, which every row is."""
    t = torch.tensor([[0.0, 1.0], [0.0, -1.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match="same direction"):
        nde.solve_ode(lambda s, y: -y, torch.ones(2, 1, dtype=torch.float64), t, per_sample=True)
