"""Bad input gets a clear error naming the argument; failures raise SolverError or return status."""
import math
import warnings

import pytest
import torch

import nde

T = torch.tensor([0.0, 1.0])


def decay(t, y):
    return -y


@pytest.mark.parametrize("y0,match", [
    (torch.tensor([1.0, float("nan")]), "`y0` contains non-finite"),
    (torch.tensor([1, 2]), "`y0` must have a floating-point dtype"),
    ([torch.ones(2)], "`y0` must be a tensor"),
    (torch.ones(0), "`y0` is empty"),
])
def test_bad_initial_state(y0, match):
    with pytest.raises((ValueError, TypeError), match=match):
        nde.odeint(decay, y0, T)


@pytest.mark.parametrize("t,match", [
    (torch.tensor([0.0, 1.0, 0.5]), "strictly increasing or strictly decreasing"),
    (torch.tensor([0.0, 0.0]), "strictly increasing or strictly decreasing"),
    (torch.tensor([[0.0, 1.0]]), "`t` must be one-dimensional"),
    (torch.tensor([0, 1]), "`t` must have a floating-point dtype"),
    ([0.0, 1.0], "`t` must be a torch.Tensor"),
    (torch.tensor([0.0, float("inf")]), "`t` contains non-finite"),
])
def test_bad_times(t, match):
    with pytest.raises((ValueError, TypeError), match=match):
        nde.odeint(decay, torch.ones(2), t)


def test_func_returning_wrong_shape_or_dtype():
    with pytest.raises(ValueError, match="`func` returned shape"):
        nde.odeint(lambda t, y: y[:1], torch.ones(2), T)
    with pytest.raises(TypeError, match="`func` returned dtype"):
        nde.odeint(lambda t, y: y.double(), torch.ones(2), T)
    with pytest.raises(TypeError, match="`func` must return a tensor"):
        nde.odeint(lambda t, y: 1.0, torch.ones(2), T)


def test_unknown_method_option_and_mode():
    with pytest.raises(ValueError, match="unknown `method`"):
        nde.odeint(decay, torch.ones(2), T, method="rk45")
    with pytest.raises(ValueError, match="unknown key 'stepsize' in `options`"):
        nde.odeint(decay, torch.ones(2), T, method="rk4", options={"stepsize": 0.1})
    with pytest.raises(ValueError, match="unknown key 'step_size' in `options` for an adaptive"):
        nde.odeint(decay, torch.ones(2), T, options={"step_size": 0.1})
    with pytest.raises(ValueError, match="unknown key 'perturb' in `options` for an adaptive"):
        nde.odeint(decay, torch.ones(2), T, options={"perturb": True})   # a fixed-grid option
    with pytest.raises(ValueError, match="`options\\['perturb'\\]` must be True or False"):
        nde.odeint(decay, torch.ones(2), T, method="rk4", options={"perturb": 1})
    with pytest.raises(ValueError, match="`adjoint` must be one of"):
        nde.solve_ode(decay, torch.ones(2), T, adjoint="magic")
    with pytest.raises(ValueError, match="`rtol`"):
        nde.odeint(decay, torch.ones(2), T, rtol=-1.0)


def test_blow_up_raises_solver_error_with_time_and_step():
    # y' = y^2 from y(0) = 1 blows up at t = 1.
    with pytest.raises(nde.SolverError, match=r"at t=(0\.99\d*|1) with step size") as info:
        nde.odeint(lambda t, y: y ** 2, torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 2.0]))
    assert info.value.status in (nde.Status.DT_UNDERFLOW, nde.Status.NONFINITE)
    assert isinstance(info.value, RuntimeError)


def test_max_steps_raises_and_throw_false_returns_status():
    t = torch.tensor([0.0, 10.0])
    stiff = lambda t, y: -1000.0 * (y - torch.cos(t))  # noqa: E731
    with pytest.raises(nde.SolverError, match="maximum number of steps"):
        nde.solve_ode(stiff, torch.zeros(1), t, max_steps=50)
    sol = nde.solve_ode(stiff, torch.zeros(1), t, max_steps=50, throw=False)
    assert int(sol.status) == nde.Status.MAX_STEPS and not sol.success
    assert torch.isnan(sol.ys[-1]).all() and torch.isfinite(sol.ys[0]).all()


def test_tiny_fixed_step_size_fails_before_the_grid_is_built():
    # 10^12 steps: building the grid would exhaust memory; the step count is checked first.
    calls = []

    def f(t, y):
        calls.append(t)
        return -y

    t = torch.tensor([0.0, 1.0])
    with pytest.raises(nde.SolverError, match=r"the grid needs 9\d{11} steps, max_steps=1000000"):  # float32 t
        nde.odeint(f, torch.ones(2), t, method="rk4", options=dict(step_size=1e-12))
    sol = nde.solve_ode(f, torch.ones(2), t, method="rk4", step_size=1e-12, throw=False)
    assert int(sol.status) == nde.Status.MAX_STEPS and not sol.success
    assert torch.isnan(sol.ys[-1]).all() and calls == []


def test_per_sample_failure_is_per_sample():
    y0 = torch.tensor([[0.5], [1.0], [0.2]], dtype=torch.float64)
    sol = nde.solve_ode(lambda t, y: y ** 2, y0, torch.tensor([0.0, 1.5], dtype=torch.float64),
                        per_sample=True, throw=False)
    # y' = y^2 blows up at t = 1/y0: rows 0 (t=2) and 2 (t=5) succeed, row 1 (t=1) fails.
    assert sol.status.tolist()[0] == 0 and sol.status.tolist()[2] == 0 and sol.status.tolist()[1] != 0
    assert torch.isnan(sol.ys[-1, 1]).all() and torch.isfinite(sol.ys[-1, [0, 2]]).all()
    assert sol.ys[-1, 0].item() == pytest.approx(0.5 / (1 - 0.5 * 1.5), rel=1e-5)


def test_nan_in_the_vector_field_shrinks_then_fails_without_hanging():
    def f(t, y):  # undefined (NaN) past y = 2: the solver must shrink the step, then stop
        return torch.where(y < 2.0, torch.ones_like(y), torch.full_like(y, float("nan")))
    with pytest.raises(nde.SolverError):
        nde.odeint(f, torch.zeros(1, dtype=torch.float64), torch.tensor([0.0, 5.0]))


def test_odeint_adjoint_requires_module_or_params():
    with pytest.raises(ValueError, match="adjoint_params"):
        nde.odeint_adjoint(decay, torch.ones(2), T)


def test_backsolve_with_per_sample_times_is_refused_with_a_pointer():
    t = torch.tensor([[0.0, 1.0], [0.0, 2.0]])
    with pytest.raises(ValueError, match="adjoint='discrete'"):
        nde.solve_ode(decay, torch.ones(2, 1, requires_grad=True), t, per_sample=True, adjoint="backsolve")


@pytest.mark.parametrize("per_sample", [False, True])
def test_half_precision_state_solves(per_sample):
    """float16 states: the step-size norms are taken in float32 (y/(atol + rtol|y|) overflows float16, which
    made the first step NaN and the solve grind to max_steps); the solve matches float32 to float16 accuracy."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    y0 = torch.randn(4, 3)
    t = torch.tensor([0.0, 1.0])
    half = nde.solve_ode(lambda t, y: net.half()(y), y0.half(), t, per_sample=per_sample, rtol=1e-3, atol=1e-3)
    full = nde.solve_ode(lambda t, y: net.float()(y), y0, t, per_sample=per_sample, rtol=1e-3, atol=1e-3)
    assert half.ys.dtype == torch.float16 and bool(half.success)
    assert (half.ys[-1].float() - full.ys[-1]).abs().max() < 2e-2


def test_nan_field_fails_at_once():
    """A field that returns NaN makes the first step size NaN: a SolverError at t0, not max_steps attempts."""
    with pytest.raises(nde.SolverError, match="non-finite state .* at t=0 "):
        nde.odeint(lambda t, y: y * float("nan"), torch.ones(2), torch.tensor([0.0, 1.0]))
    sol = nde.solve_ode(lambda t, y: y * float("nan"), torch.ones(3, 2), torch.tensor([0.0, 1.0]), per_sample=True,
                        throw=False)
    assert (sol.status == int(nde.Status.NONFINITE)).all() and (sol.stats["n_rejected"] <= 2).all()


def test_zero_tolerances_are_refused_for_adaptive_methods():
    with pytest.raises(ValueError, match="`rtol` and `atol` are both 0"):
        nde.odeint(decay, torch.ones(2), T, rtol=0.0, atol=0.0)
    with pytest.raises(ValueError, match="`rtol` and `atol` are both 0"):
        nde.solve_ode(decay, torch.ones(3, 2), T, rtol=torch.zeros(2), atol=0.0, per_sample=True)
    fixed = nde.odeint(decay, torch.ones(2), T, method="rk4", rtol=0.0, atol=0.0)   # no error control: fine
    assert torch.isfinite(fixed).all()


def test_adjoint_modes_need_the_parameters():
    """discrete/backsolve with a func that is not an nn.Module and no adjoint_params used to drop the
    gradients of the tensors it closes over (None where direct gives them); a bare tensor was iterated."""
    W = torch.nn.Parameter(-torch.eye(3, dtype=torch.float64))
    y0 = torch.ones(2, 3, dtype=torch.float64)
    t = torch.linspace(0, 1, 3, dtype=torch.float64)
    for mode in ("discrete", "backsolve"):
        with pytest.raises(ValueError, match="`adjoint_params`: `func` is not an nn.Module"):
            nde.odeint(lambda t, y: y @ W, y0, t, adjoint=mode)
        with pytest.raises(TypeError, match="`adjoint_params` must be a sequence of tensors"):
            nde.odeint(lambda t, y: y @ W, y0, t, adjoint=mode, adjoint_params=W)
        with pytest.raises(TypeError, match="`adjoint_params` must contain tensors only"):
            nde.solve_ode(lambda t, y: y @ W, y0, t, adjoint=mode, adjoint_params=(W, 3.0))
        ys = nde.odeint(lambda t, y: y @ W, y0, t, adjoint=mode, adjoint_params=(W,), rtol=1e-9, atol=1e-9)
        (grad,) = torch.autograd.grad(ys[-1].sum(), W)
        (direct,) = torch.autograd.grad(nde.odeint(lambda t, y: y @ W, y0, t, rtol=1e-9, atol=1e-9)[-1].sum(), W)
        torch.testing.assert_close(grad, direct, atol=1e-6, rtol=1e-6)


def test_step_settings_are_checked():
    """Bad step settings used to surface as solver failures blaming the problem (or a 10^6-step crawl
    with dt = inf)."""
    y0 = torch.ones(2)
    cases = [(dict(options={"first_step": float("inf")}), "first_step"),
             (dict(options={"first_step": 0.0}), "first_step"),
             (dict(options={"max_step": -0.1}), "max_step"),
             (dict(options={"min_step": 0.5, "max_step": 0.1}), "min_step=0.5 exceeds max_step"),
             (dict(options={"ifactor": float("inf")}), r"options\[.ifactor.\]. must be finite"),
             (dict(options={"max_num_steps": 10.7}), "max_num_steps"),
             (dict(options={"first_step": "0.1"}), "first_step"),
             (dict(method="rk4", options={"step_size": float("inf")}), "step_size")]
    for kwargs, match in cases:
        with pytest.raises((ValueError, TypeError), match=match):
            nde.odeint(decay, y0, T, **kwargs)
    with pytest.raises(ValueError, match="beta1"):
        nde.PIController(beta1=-1.0)
    for kwargs, match in [(dict(max_steps="10"), "max_steps"), (dict(throw="no"), "throw"),
                          (dict(per_sample="no"), "per_sample"), (dict(dense="no"), "dense"),
                          (dict(heuristics="no"), "heuristics"),
                          (dict(interp="quadratic"), "interp"),
                          (dict(step_size=0.01, per_sample=True), "needs shared steps"),
                          (dict(rtol=torch.ones(3, 2), per_sample=True), "one row"),
                          (dict(atol=torch.ones(4, 1, 2)), "does not broadcast")]:
        with pytest.raises((ValueError, TypeError), match=match):
            nde.solve_ode(decay, torch.ones(3, 2), T, **kwargs)
    with pytest.raises(ValueError, match="accept_factor_min"):
        nde.PIController(accept_factor_min=100.0)
    with pytest.raises(TypeError, match="returned a tuple"):
        nde.odeint(lambda t, y: (-y,), y0, T)
    with pytest.raises(ValueError, match="empty tuple"):
        nde.odeint(decay, (), T)


def test_dense_output_cubic_time_gradient_and_tuple_shapes():
    """Solution.evaluate follows interp='cubic' on fixed-step solves, gives d/dt of the interpolant for a
    query time that requires grad (as torchdiffeq's odeint_dense), and returns the state's shapes for a
    scalar query of a tuple state."""
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    y0 = torch.ones(1, dtype=torch.float64)
    cubic = nde.solve_ode(decay, y0, t, method="rk4", interp="cubic")
    linear = nde.solve_ode(decay, y0, t, method="rk4")
    exact = math.exp(-0.1)
    assert abs(cubic.evaluate(0.1).item() - exact) < 1e-4 < abs(linear.evaluate(0.1).item() - exact)
    for sol in (cubic, linear, nde.solve_ode(decay, y0, t, rtol=1e-9, atol=1e-9)):
        tq = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
        (slope,) = torch.autograd.grad(sol.evaluate(tq).sum(), tq)
        assert abs(slope.item() + math.exp(-0.3)) < (6e-2 if sol is linear else 1e-3)   # linear: the chord
    backwards = nde.solve_ode(decay, y0, -t, rtol=1e-9, atol=1e-9)
    tq = torch.tensor(-0.3, dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(backwards.evaluate(tq).sum(), tq)
    assert abs(slope.item() + math.exp(0.3)) < 1e-6
    pair = nde.solve_ode(lambda t, s: (s[1], -s[0]), (torch.ones(2), torch.zeros(2)), torch.linspace(0, 1, 3))
    assert [p.shape for p in pair.evaluate(0.5)] == [(2,), (2,)]
    assert [p.shape for p in pair.evaluate(torch.tensor([0.2, 0.5]))] == [(2, 2), (2, 2)]
    with pytest.raises(ValueError, match="non-empty"):
        pair.evaluate(torch.tensor([]))


def test_event_solve_end_time_gradient_and_event_at_t0():
    """An event solve that reaches t1 first keeps ∂y(t1)/∂t1 (it was 0); odeint_event with the event at t0
    returns (t0, [y0, y0]) like torchdiffeq (it raised)."""
    t = torch.tensor([0.0, 1.0], dtype=torch.float64, requires_grad=True)
    sol = nde.solve_ode(decay, torch.ones(1, dtype=torch.float64), t, event_fn=lambda t, y: y[0] + 10.0)
    grad = torch.autograd.grad(sol.ys[-1].sum(), t)[0]
    torch.testing.assert_close(grad, torch.tensor([math.exp(-1.0), -math.exp(-1.0)], dtype=torch.float64),
                               atol=1e-6, rtol=0)
    rows = torch.tensor([[0.0, 0.5], [0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([[1.0], [0.2]], dtype=torch.float64)
    sol = nde.solve_ode(decay, y0, rows, per_sample=True, event_fn=lambda t, y: y[:, 0] - 0.5)
    grad = torch.autograd.grad(sol.ys[-1].sum(), rows)[0]   # row 0 ends at t1 = 0.5, row 1 starts below: no event
    assert abs(grad[0, 1].item() + math.exp(-0.5)) < 1e-6 and abs(grad[1, 1].item() + 0.2 * math.exp(-1.0)) < 1e-6
    event_t, ys = nde.odeint_event(lambda t, y: torch.stack([y[1], -torch.ones_like(y[1])]),
                                   torch.tensor([0.0, 1.0]), torch.tensor(0.0), event_fn=lambda t, y: y[0])
    assert event_t.item() == 0.0 and torch.equal(ys[1], ys[0])


def test_adjoint_method_and_options_are_checked_in_every_mode():
    with pytest.raises(ValueError, match="unknown `method` 'foo'"):
        nde.odeint(decay, torch.ones(2), T, adjoint_method="foo")
    with pytest.raises(TypeError, match="`adjoint_options` must be a dict"):
        nde.odeint(decay, torch.ones(2), T, adjoint_options=[1])


def test_half_precision_tolerances_below_its_resolution_are_refused_up_front():
    """bfloat16 at rtol = atol = 1e-9 took 905k steps (9 minutes) before; float32 below its eps still converges."""
    t = torch.tensor([0.0, 1.0])
    for dtype in (torch.bfloat16, torch.float16):
        with pytest.raises(ValueError, match="below the resolution of torch.(b)?float16"):
            nde.solve_ode(lambda s, y: -y, torch.ones(2, dtype=dtype), t, rtol=1e-9, atol=1e-9)
    sol = nde.solve_ode(lambda s, y: -y, torch.ones(2), t, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sol.ys[-1], torch.full((2,), math.exp(-1.0)), rtol=1e-5, atol=0)


@pytest.mark.parametrize("per_sample", [False, True])
def test_a_max_step_that_cannot_cover_t_in_max_steps_fails_at_once(per_sample):
    with pytest.raises(ValueError, match=r"`max_step`=1e-12 needs 1e\+12 steps to cover `t`, more than max_steps"):
        nde.solve_ode(lambda s, y: -y, torch.ones(2, 1), torch.tensor([0.0, 1.0]), max_step=1e-12,
                      per_sample=per_sample)


@pytest.mark.parametrize("per_sample", [False, True])
def test_steps_accepted_at_min_step_above_the_tolerance_warn(per_sample):
    """y' = −50y with steps forced to 0.6: every step fails the error test and is accepted anyway (as in
    torchdiffeq), which ends near 1e12 instead of e^-50: a warning says so."""
    with pytest.warns(UserWarning, match=r"step\(s\) at min_step=0.6 were accepted with an error estimate above"):
        sol = nde.solve_ode(lambda s, y: -50 * y, torch.ones(3, 1), torch.tensor([0.0, 1.0]), min_step=0.6,
                            per_sample=per_sample)
    assert sol.ys[-1].abs().min() > 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # a min_step the solve never needs: no warning
        nde.solve_ode(lambda s, y: -y, torch.ones(3, 1), torch.tensor([0.0, 1.0]), min_step=1e-3, per_sample=per_sample)


def test_a_0d_t_in_odeint_is_not_pointed_to_per_sample_mode():
    """odeint has no per_sample option: a 0-d ``t`` gets the plain shape message (it suggested per_sample=True)."""
    with pytest.raises(ValueError, match=r"one-dimensional \(T,\), got shape \(\)$"):
        nde.odeint(lambda t, y: -y, torch.ones(2), torch.tensor(1.0))
