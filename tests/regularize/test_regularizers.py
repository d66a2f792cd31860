"""Regularisers against closed forms on linear ODEs; gradient routing; every gradient mode; training."""
import math
import random

import numpy as np
import pytest
import torch

import nde
from nde import regularize as R
from nde.tableaus import TABLEAUS

T1 = torch.tensor([0.0, 1.0], dtype=torch.float64)


def _stability_poly(weights, tab, z):
    """Σ_i w_i·k_i/ (λ y0) for y' = λy: w·(I − zA)⁻¹·1 (Hairer & Wanner II, eq. IV.2.3)."""
    s = tab.stages
    A = np.zeros((s, s))
    for i, row in enumerate(tab.a):
        A[i + 1, : i + 1] = row
    return float(np.dot(weights, np.linalg.solve(np.eye(s) - z * A, np.ones(s))))


def test_error_estimate_of_one_step_matches_the_stability_polynomials():
    lam, h, rtol, atol = -2.0, 0.1, 1e-3, 1e-3
    tab = TABLEAUS["dopri5"]
    y0 = torch.tensor([1.5], dtype=torch.float64)
    sol = nde.solve_ode(lambda t, y: lam * y, y0, torch.tensor([0.0, h], dtype=torch.float64), first_step=h,
                        rtol=rtol, atol=atol, regularize=R.ErrorEstimate())
    assert int(sol.stats["n_accepted"]) == 1
    z = lam * h
    err = abs(1.5 * z * _stability_poly(tab.b_error, tab, z))
    y1 = 1.5 * (1 + z * _stability_poly(tab.b, tab, z))
    expected = err / (atol + rtol * max(1.5, abs(y1))) * h
    assert sol.regularization.item() == pytest.approx(expected, rel=1e-10)


def test_stiffness_regulariser_is_lambda_times_span_over_stability_size():
    lam = 6.0
    sol = nde.solve_ode(lambda t, y: -lam * y, torch.ones(4, dtype=torch.float64), T1,
                        regularize=R.StiffnessEstimate(form="dt"))
    covered = sol.heuristics["dt"].sum().item()  # the last step may overshoot t1 (then interpolates)
    assert covered >= 1.0
    assert sol.regularization.item() == pytest.approx(lam * covered / TABLEAUS["dopri5"].stability_size, rel=1e-8)
    sol = nde.solve_ode(lambda t, y: -lam * y, torch.ones(4, dtype=torch.float64), T1,
                        regularize=R.StiffnessEstimate(form="abs", reduction="max"))
    assert sol.regularization.item() == pytest.approx(lam / TABLEAUS["dopri5"].stability_size, rel=1e-8)


def test_step_density_and_mean_reductions_are_consistent_with_the_heuristics():
    f = lambda t, y: torch.sin(3 * t) * y  # noqa: E731
    y0 = torch.ones(2, dtype=torch.float64)
    sol = nde.solve_ode(f, y0, T1, regularize=R.StepDensity())
    ratios, dts = sol.heuristics["error_ratio"], sol.heuristics["dt"]
    assert sol.regularization.item() == pytest.approx((ratios.clamp_min(1e-12) ** 0.2).sum().item(), rel=1e-10)
    mean = nde.solve_ode(f, y0, T1, regularize=R.ErrorEstimate("mean")).regularization
    assert mean.item() == pytest.approx((ratios * dts).mean().item(), rel=1e-10)


class Field(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).double()

    def forward(self, t, y):
        return self.net(y)


@pytest.mark.parametrize("reg", [R.ErrorEstimate(), R.StiffnessEstimate(), R.StepDensity()])
def test_global_regularisers_discrete_equals_direct(reg):
    func, y0 = Field(), torch.randn(8, 2, dtype=torch.float64)
    grads = []
    for mode in ("direct", "discrete"):
        func.zero_grad()
        sol = nde.solve_ode(func, y0, T1, regularize=reg, adjoint=mode)
        (sol.regularization + sol.ys[-1].pow(2).sum()).backward()
        grads.append(torch.cat([p.grad.flatten() for p in func.parameters()]))
    # EEst^(1/5) amplifies round-off where EEst is tiny: StepDensity agrees to ~1e-6 relative
    rtol = 1e-5 if isinstance(reg, R.StepDensity) else 1e-7
    assert torch.allclose(grads[0], grads[1], rtol=rtol, atol=1e-10)


@pytest.mark.parametrize("reg", [R.LocalErrorEstimate(), R.LocalErrorEstimate(sampling="biased"),
                                 R.LocalErrorEstimate("mixture", 3, "density", "solver", None, "per_sample")])
@pytest.mark.parametrize("adjoint", ["direct", "discrete", "backsolve"])
def test_local_regulariser_reaches_parameters_not_the_state(reg, adjoint):
    func = Field()
    y0 = torch.randn(8, 2, dtype=torch.float64, requires_grad=True)
    sol = nde.solve_ode(func, y0, T1, regularize=reg, adjoint=adjoint, generator=random.Random(0))
    params = list(func.parameters())
    grads = torch.autograd.grad(sol.regularization, [y0, *params], allow_unused=True)
    assert grads[0] is None or float(grads[0].abs().max()) == 0.0
    assert sum(float(g.abs().sum()) for g in grads[1:]) > 0
    assert int(sol.stats["nfe_regularization"]) >= 6


def test_local_value_is_the_same_in_every_gradient_mode():
    func, y0 = Field(), torch.randn(8, 2, dtype=torch.float64)
    values = [nde.solve_ode(func, y0, T1, regularize=R.LocalErrorEstimate(step="solver"), adjoint=mode,
                            rtol=1e-8, atol=1e-8, generator=random.Random(1)).regularization.item()
              for mode in ("direct", "discrete")]
    assert values[0] == pytest.approx(values[1], rel=1e-12)


def test_local_density_is_an_unbiased_estimate_of_the_step_count():
    """For y' = −λy, the local density estimate averaged over many samples ≈ Σ_j EEst_j^(1/5)."""
    func = lambda t, y: -3.0 * y * (1 + t)  # noqa: E731
    y0 = torch.ones(3, dtype=torch.float64)
    global_value = nde.solve_ode(func, y0, T1, regularize=R.StepDensity(), rtol=1e-7, atol=1e-7).regularization
    local = nde.solve_ode(func, y0, T1, rtol=1e-7, atol=1e-7, generator=random.Random(0),
                          regularize=R.LocalErrorEstimate("mixture", 400, "density", "solver", "dopri5"))
    assert local.regularization.item() == pytest.approx(global_value.item(), rel=0.1)


def test_rnode_kinetic_energy_closed_form():
    """y' = −y from y0: ∫‖f‖² dt = ‖y0‖²(1 − e^{−2})/2; Jacobian −I gives ∫‖ε‖² = d."""
    y0 = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    sol = nde.solve_ode(lambda t, y: -y, y0, T1, rtol=1e-9, atol=1e-9, regularize=R.RNODE(1.0, 0.0))
    assert sol.regularization.item() == pytest.approx(5.0 * (1 - np.exp(-2)) / 2, rel=1e-6)
    sol = nde.solve_ode(lambda t, y: -y, y0, T1, rtol=1e-9, atol=1e-9, regularize=R.RNODE(0.0, 1.0))
    assert sol.regularization.item() == pytest.approx(2.0, rel=1e-6)
    assert sol.ys.shape == (2, 1, 2)


def test_bad_combinations_are_refused():
    with pytest.raises(ValueError, match="continuous adjoint"):
        nde.solve_ode(Field(), torch.ones(1, 2, dtype=torch.float64), T1, regularize=R.ErrorEstimate(),
                      adjoint="backsolve")
    with pytest.raises(ValueError, match="shared steps"):
        nde.solve_ode(Field(), torch.ones(1, 2, dtype=torch.float64), T1, regularize=R.ErrorEstimate(),
                      per_sample=True)
    with pytest.raises(ValueError, match="`sampling`"):
        R.LocalErrorEstimate(sampling="sometimes")
    with pytest.raises(TypeError, match="`regularize`"):
        nde.solve_ode(Field(), torch.ones(1, 2, dtype=torch.float64), T1, regularize="error")


def test_steer_and_adaptive_coefficient():
    t = torch.tensor([0.0, 1.0])
    ends = [float(R.steer_end_time(t, 0.5)[-1]) for _ in range(200)]
    assert 0.5 <= min(ends) and max(ends) <= 1.5 and abs(np.mean(ends) - 1.0) < 0.1
    lam = R.AdaptiveCoefficient(target_nfe=100, value=1.0, rate=0.5)
    assert lam.update(200) > 1.0 and lam.update(10) < lam.update(200)
    # sol.stats["nfe"] (a 0-d tensor) and numpy numbers are taken as numbers (they were refused)
    by_number, by_tensor, by_numpy = (R.AdaptiveCoefficient(target_nfe=100).update(n)
                                      for n in (150, torch.tensor(150), np.int64(150)))
    assert by_tensor == by_number == by_numpy == pytest.approx(math.exp(0.1 * 0.5))
    with pytest.raises(ValueError, match="one-element tensor"):
        lam.update(torch.tensor([150, 160]))   # per-sample counts: pass their sum or mean


@pytest.mark.parametrize("reg,lam", [(R.ErrorEstimate(), 100.0), (R.StepDensity(), 1.0),
                                     (R.LocalErrorEstimate(step="solver", n_samples=2), 100.0)])
def test_regularised_training_reduces_nfe(reg, lam):
    """Fit the same regression with and without the regulariser: the regularised field is cheaper."""
    def train(lam):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).double()
        with torch.no_grad():
            net[0].weight.mul_(2.0)
        x = torch.randn(16, 2, dtype=torch.float64)
        target = torch.stack([x[:, 1], -x[:, 0]], 1)
        opt = torch.optim.Adam(net.parameters(), lr=2e-2)
        rng = random.Random(0)
        for _ in range(15):
            sol = nde.solve_ode(lambda t, y: net(y), x, T1, rtol=1e-5, atol=1e-5, regularize=reg, generator=rng,
                                heuristics=False)
            loss = (sol.ys[-1] - target).pow(2).mean() + lam * sol.regularization
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            return int(nde.solve_ode(lambda t, y: net(y), x, T1, rtol=1e-5, atol=1e-5).stats["nfe"])
    assert train(lam) < 0.8 * train(0.0)


def test_regulariser_arguments_from_the_audit():
    """RNODE under the adjoints with an encoder-made y0 (it raised inside autograd), and with a field that
    ignores y; LocalErrorEstimate with a fixed-step method; generator types; AdaptiveCoefficient values."""
    import random as _random
    from nde import regularize as R
    torch.manual_seed(0)
    field = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    encoder = torch.nn.Linear(3, 2)
    t = torch.tensor([0.0, 1.0])
    values = {}
    for mode in ("direct", "discrete", "backsolve"):
        torch.manual_seed(1)   # the same Rademacher vectors in every mode
        y0 = encoder(torch.ones(4, 3))
        sol = nde.solve_ode(lambda t, y: field(y), y0, t, adjoint=mode, adjoint_params=tuple(field.parameters()),
                            regularize=R.RNODE(), rtol=1e-7, atol=1e-7)
        grad = torch.autograd.grad(sol.regularization, encoder.weight)[0]
        values[mode] = (sol.regularization.item(), grad)
    for mode in ("discrete", "backsolve"):
        assert abs(values[mode][0] - values["direct"][0]) < 1e-4
        torch.testing.assert_close(values[mode][1], values["direct"][1], atol=1e-3, rtol=1e-3)
    w = torch.nn.Parameter(torch.ones(2))
    constant = nde.solve_ode(lambda t, y: w * torch.ones_like(y), torch.zeros(3, 2), t, regularize=R.RNODE())
    assert abs(constant.regularization.item() - 2.0) < 1e-5   # kinetic ∫|w|² = 2, Jacobian 0
    with pytest.raises(ValueError, match="no embedded error estimate"):
        R.LocalErrorEstimate(method="euler")
    with pytest.raises(TypeError, match="`generator` must be a random.Random"):
        nde.solve_ode(lambda t, y: field(y), torch.ones(4, 2), t, regularize=R.LocalErrorEstimate(), generator=0)
    seeded = [nde.solve_ode(lambda t, y: field(y), torch.ones(4, 2), t, regularize=R.LocalErrorEstimate(),
                            generator=_random.Random(3)).regularization.item() for _ in range(2)]
    assert seeded[0] == seeded[1]
    for kwargs in (dict(target_nfe=0), dict(target_nfe=10, lo=10.0, hi=1.0), dict(target_nfe=10, rate=-1.0)):
        with pytest.raises(ValueError):
            R.AdaptiveCoefficient(**kwargs)
    with pytest.raises(ValueError, match="`nfe`"):
        R.AdaptiveCoefficient(target_nfe=10).update(float("nan"))
    with pytest.raises(ValueError, match="`kinetic`"):
        R.RNODE(kinetic=float("nan"))
    single = nde.solve_ode(lambda t, y: field(y), torch.ones(4, 2), torch.tensor([0.0]),
                           regularize=R.LocalErrorEstimate())
    assert single.regularization.item() == 0.0


def test_local_step_stops_at_jump_points():
    """A jump the user declared with jump_t must not be measured by the live step (it was: up to 4e4)."""
    import random as _random
    from nde import regularize as R
    torch.manual_seed(0)
    layer = torch.nn.Linear(2, 2)
    jump = lambda t, y: torch.tanh(layer(y)) + (10.0 if float(t) >= 0.5 else 0.0)  # noqa: E731
    values = [nde.solve_ode(jump, torch.ones(3, 2), torch.tensor([0.0, 1.0]), jump_t=torch.tensor([0.5]),
                            regularize=R.LocalErrorEstimate(step="solver"), generator=_random.Random(i))
              .regularization.item() for i in range(20)]
    assert max(values) < 1.0, values


def test_rnode_integrates_over_the_length_of_a_decreasing_time_interval():
    """y' = −y backwards from y0 over [1, 0]: ∫‖f‖² |dt| = ‖y0‖²(e² − 1)/2 and the Jacobian term d·1 (both were
    negative, a reward instead of a penalty)."""
    y0 = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    back = T1.flip(0)
    sol = nde.solve_ode(lambda t, y: -y, y0, back, rtol=1e-9, atol=1e-9, regularize=R.RNODE(1.0, 0.0))
    assert sol.regularization.item() == pytest.approx(5.0 * (np.exp(2) - 1) / 2, rel=1e-6)
    sol = nde.solve_ode(lambda t, y: -y, y0, back, rtol=1e-9, atol=1e-9, regularize=R.RNODE(0.0, 1.0))
    assert sol.regularization.item() == pytest.approx(2.0, rel=1e-6)
    with pytest.raises(ValueError, match="RNODE needs shared steps"):
        nde.solve_ode(lambda t, y: -y, y0, T1, regularize=R.RNODE(), per_sample=True)


@pytest.mark.parametrize("sampling", ["unbiased", "mixture"])
def test_local_times_are_drawn_in_the_solved_interval_when_the_last_step_overshoots(sampling):
    """dopri5 ends its last step past t1 and interpolates there; t_r ~ U[t0, t1] (docs), not U[t0, end of that
    step] (it drew up to 1.37 on [0, 1] here, and scaled the density by that longer span)."""
    reg = R.LocalErrorEstimate(sampling, n_samples=200, step="solver")
    drawn, spans = [], []
    draw = reg.sample_times

    def spy(t0, t1, starts, dts, rng):
        spans.append((t0, t1, starts[-1] + dts[-1]))
        out = draw(t0, t1, starts, dts, rng)
        drawn.extend(t for t, _ in out)
        return out

    reg.sample_times = spy
    sol = nde.solve_ode(lambda t, y: -y, torch.ones(2, dtype=torch.float64), T1, rtol=1e-3, atol=1e-3,
                        regularize=reg, generator=random.Random(0))
    h = sol.heuristics
    assert float(h["t"][-1] + h["dt"][-1]) > 1.2   # the last step overshoots t1 = 1
    assert spans == [(0.0, 1.0, 1.0)]
    assert 0.0 <= min(drawn) and max(drawn) <= 1.0


def test_local_per_sample_norm_of_a_tuple_state_takes_rows_across_its_tensors():
    """(a, b) against the tensor [a | b] with the same dynamics (so the same steps): per-row norms agree (the tuple
    state's rows were its single elements). Tensors without a common batch dimension are refused."""
    torch.manual_seed(0)
    w = torch.randn(2, 2, dtype=torch.float64)
    a0 = torch.randn(4, 2, dtype=torch.float64)
    reg = R.LocalErrorEstimate(step="solver", norm="per_sample")
    joined = nde.solve_ode(lambda t, y: torch.cat([torch.tanh(y[:, :2] @ w), torch.tanh(y[:, 2:] @ w)], 1),
                           torch.cat([a0, a0], 1), T1, regularize=reg, generator=random.Random(0))
    split = nde.solve_ode(lambda t, y: (torch.tanh(y[0] @ w), torch.tanh(y[1] @ w)), (a0, a0.clone()), T1,
                          regularize=reg, generator=random.Random(0))
    assert split.regularization.item() == pytest.approx(joined.regularization.item(), rel=1e-10)
    with pytest.raises(ValueError, match="norm='per_sample'"):
        nde.solve_ode(lambda t, y: (-y[0], -y[1]), (a0, torch.ones(3, dtype=torch.float64)), T1, regularize=reg)


def test_steer_on_a_decreasing_time_grid_and_bad_arguments():
    """t from 1 down to 0: the end is U[−b, b] (it was refused for every b, the last interval being negative)."""
    back = torch.tensor([1.0, 0.5, 0.0])
    gen = torch.Generator().manual_seed(0)
    ends = torch.tensor([float(R.steer_end_time(back, 0.25, gen)[-1]) for _ in range(400)])
    assert -0.25 <= float(ends.min()) and float(ends.max()) <= 0.25 and abs(float(ends.mean())) < 0.03
    assert float(ends.std()) == pytest.approx(0.25 / 3 ** 0.5, rel=0.15)   # U[−b, b]: std b/√3
    assert torch.equal(R.steer_end_time(back, 0.0)[:-1], back[:-1])
    with pytest.raises(ValueError, match="`b`"):
        R.steer_end_time(back, 0.5)
    for t in (torch.tensor(1.0), torch.tensor([0, 1]), [0.0, 1.0]):
        with pytest.raises(ValueError, match="`t`"):
            R.steer_end_time(t, 0.1)
    with pytest.raises(TypeError, match="`generator`"):
        R.steer_end_time(back, 0.1, generator=random.Random(0))


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_local_step_from_a_jump_point_is_the_solvers_step_after_the_jump(direction):
    """Biased sampling with step="solver" at a step start retakes that accepted step, so the value is its recorded
    EEst·|dt|. At a jump_t point the solve evaluates f just after the jump; the live step took f at the point
    itself, the other side of a jump that belongs to the interval behind (value ~10^3 times the step's)."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(2, 2).double()
    ahead = (lambda t: t > 0.5) if direction > 0 else (lambda t: t < 0.5)   # f's jump belongs to the side behind
    f = lambda t, y: torch.tanh(layer(y)) + (3.0 if ahead(float(t)) else 0.0)  # noqa: E731
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    t = t if direction > 0 else t.flip(0)
    kw = dict(rtol=1e-6, atol=1e-6, jump_t=torch.tensor([0.5], dtype=torch.float64))
    y0 = torch.ones(3, 2, dtype=torch.float64)
    h = nde.solve_ode(f, y0, t, **kw).heuristics
    (j,) = (h["t"] == 0.5).nonzero()[0].tolist()
    reg = R.LocalErrorEstimate("biased", step="solver", method=None)
    reg.sample_times = lambda *args: [(direction * 0.5, 1.0)]   # the solver's (increasing) time of the jump
    value = nde.solve_ode(f, y0, t, regularize=reg, **kw).regularization.item()
    assert value == pytest.approx(float(h["error_ratio"][j] * h["dt"][j].abs()), rel=1e-10)


def test_rnode_of_a_multi_dimensional_state_is_per_sample():
    """y' = −y with y0 (batch, 3, 2): ∫‖f‖² dt = ‖y0_b‖²(1 − e^{−2})/2 and ‖∂f/∂y‖_F² = 6 per sample, averaged over the
    batch (both were a third of that: averaged over the 3 last-dimension rows of each sample too)."""
    y0 = torch.arange(1.0, 13.0, dtype=torch.float64).reshape(2, 3, 2) / 5
    sol = nde.solve_ode(lambda t, y: -y, y0, T1, rtol=1e-9, atol=1e-9, regularize=R.RNODE(1.0, 0.0))
    expected = y0.pow(2).sum((1, 2)).mean().item() * (1 - np.exp(-2)) / 2
    assert sol.regularization.item() == pytest.approx(expected, rel=1e-6)
    sol = nde.solve_ode(lambda t, y: -y, y0, T1, rtol=1e-9, atol=1e-9, regularize=R.RNODE(0.0, 1.0))
    assert sol.regularization.item() == pytest.approx(6.0, rel=1e-6)
    assert sol.ys.shape == (2, 2, 3, 2)


@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_local_heuristic_step_ends_at_t1(direction):
    """t_r 0.03 before t1, where Hairer's initial step (torchdiffeq's rule) is several times longer: the live step
    is cut at t1, as a fresh integrator's (the paper's) and the SDE core's are, so the value is EEst·h of a tsit5
    step of h = |t1 − t_r| (stability polynomials) and the last evaluation is at t1 (it was at 1.16 on [0, 1])."""
    from torchdiffeq._impl.misc import _select_initial_step
    lam, rtol, atol, tab = -1.0, 1e-2, 1e-2, TABLEAUS["tsit5"]
    t = T1 if direction > 0 else T1.flip(0)
    t_r = float(t[0] + 0.97 * (t[1] - t[0]))
    y0 = torch.tensor([1.0, 2.0], dtype=torch.float64)
    calls = []

    def f(s, y):
        calls.append(float(s))
        return lam * y
    y_r = nde.solve_ode(f, y0, t, method="tsit5", rtol=rtol, atol=atol).evaluate(t_r)
    rms = lambda x: x.pow(2).mean().sqrt()  # noqa: E731
    hairer = _select_initial_step(lambda s, y: direction * lam * y, torch.tensor(direction * t_r), y_r,
                                  tab.error_order, rtol, atol, rms)
    room = abs(float(t[1]) - t_r)
    assert float(hairer) > 3 * room
    reg = R.LocalErrorEstimate()
    reg.sample_times = lambda *args: [(direction * t_r, 1.0)]   # the solver's (increasing) time of t_r
    calls.clear()
    value = nde.solve_ode(f, y0, t, method="tsit5", rtol=rtol, atol=atol, regularize=reg).regularization
    z = lam * (float(t[1]) - t_r)
    err = (y_r * z * _stability_poly(tab.b_error, tab, z)).abs()
    y1 = y_r * (1 + z * _stability_poly(tab.b, tab, z))
    expected = rms(err / (atol + rtol * torch.maximum(y_r.abs(), y1.abs()))) * room
    assert value.item() == pytest.approx(expected.item(), rel=1e-8)
    assert calls[-1] == pytest.approx(float(t[1]), abs=1e-12)


@pytest.mark.parametrize("step", ["solver", "heuristic"])
def test_local_batch_norm_of_a_tuple_state_is_the_solvers_mixed_norm(step):
    """(a, b) with a' = −a, b' = −8b, sampled at t0: EEst·h of one tsit5 step from y0 in the solver's norm for tuple
    states, the largest RMS of a tensor (torchdiffeq's mixed norm; stability polynomials per tensor), with h the
    solver's first step or Hairer's (torchdiffeq's rule in that norm). It took one RMS over the concatenation."""
    from torchdiffeq._impl.misc import _select_initial_step
    rtol, atol, tab = 1e-4, 1e-4, TABLEAUS["tsit5"]
    a0 = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    b0 = torch.tensor([[1.0], [3.0]], dtype=torch.float64)
    f = lambda t, y: (-y[0], -8.0 * y[1])  # noqa: E731
    rms = lambda x: x.pow(2).mean().sqrt()  # noqa: E731
    if step == "solver":
        h = float(nde.solve_ode(f, (a0, b0), T1, method="tsit5", rtol=rtol, atol=atol).heuristics["dt"][0])
    else:
        flat = torch.cat([a0, b0.reshape(-1)])
        mixed = lambda x: torch.maximum(rms(x[:3]), rms(x[3:]))  # noqa: E731
        h = float(_select_initial_step(lambda t, y: torch.cat([-y[:3], -8.0 * y[3:]]), T1[0], flat,
                                       tab.error_order, rtol, atol, mixed))
    assert h < 1.0

    def eest(y, lam):
        z = lam * h
        err = (y * z * _stability_poly(tab.b_error, tab, z)).abs()
        y1 = y * (1 + z * _stability_poly(tab.b, tab, z))
        return rms(err / (atol + rtol * torch.maximum(y.abs(), y1.abs())))
    reg = R.LocalErrorEstimate("biased", step=step)
    reg.sample_times = lambda *args: [(0.0, 1.0)]
    value = nde.solve_ode(f, (a0, b0), T1, method="tsit5", rtol=rtol, atol=atol, regularize=reg).regularization
    assert value.item() == pytest.approx(max(eest(a0, -1.0), eest(b0, -8.0)).item() * h, rel=1e-8)
