"""nde.odeint is a drop-in for torchdiffeq.odeint: same results, shapes and NFE."""
import math
import warnings

import numpy as np
import pytest
import torch

import nde

torchdiffeq = pytest.importorskip("torchdiffeq")


class Counted(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3)).double()
        self.calls = 0

    def forward(self, t, y):
        self.calls += 1
        return self.net(y) * torch.cos(t)


@pytest.mark.parametrize("method,tdq_method,tol", [
    ("dopri5", "dopri5", 1e-10), ("bosh3", "bosh3", 1e-7), ("dopri8", "dopri8", 1e-10),
    ("adaptive_heun", "adaptive_heun", 1e-5), ("fehlberg2", "fehlberg2", 1e-5)])
def test_at_least_as_accurate_as_torchdiffeq(method, tdq_method, tol):
    """Same shapes; error against a tight reference no worse than torchdiffeq's (or within 10·tol)."""
    f = Counted()
    y0 = torch.randn(16, 3, dtype=torch.float64)
    t = torch.linspace(0, 2, 5, dtype=torch.float64)
    ref = nde.odeint(f, y0, t, rtol=1e-12, atol=1e-12, method="dopri8")
    ours = nde.odeint(f, y0, t, rtol=tol, atol=tol, method=method)
    theirs = torchdiffeq.odeint(f, y0, t, rtol=tol, atol=tol, method=tdq_method)
    assert ours.shape == theirs.shape
    assert (ours - ref).abs().max() <= max(1.5 * (theirs - ref).abs().max().item(), 10 * tol)


def test_dopri5_matches_torchdiffeq_to_round_off():
    f = Counted()
    y0 = torch.randn(16, 3, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    ours = nde.odeint(f, y0, t, rtol=1e-8, atol=1e-8)
    theirs = torchdiffeq.odeint(f, y0, t, rtol=1e-8, atol=1e-8)
    assert torch.allclose(ours, theirs, atol=1e-7)


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "fehlberg2", "adaptive_heun"])
@pytest.mark.parametrize("tol", [1e-4, 1e-7])
def test_same_nfe_as_torchdiffeq(method, tol):
    f = Counted()
    y0 = torch.randn(16, 3, dtype=torch.float64)
    t = torch.tensor([0.0, 1.5], dtype=torch.float64)
    nde.odeint(f, y0, t, rtol=tol, atol=tol, method=method)
    ours, f.calls = f.calls, 0
    torchdiffeq.odeint(f, y0, t, rtol=tol, atol=tol, method=method)
    assert ours <= f.calls


@pytest.mark.parametrize("n_out", [2, 20])
def test_dopri8_odeint_takes_torchdiffeqs_evaluations_however_many_outputs(n_out):
    """odeint's dopri8 interpolates interior outputs with its order-5 dense output, as torchdiffeq does with
    its quartic (solve_ode lands on them instead: 46x the evaluations at 100 outputs), and ends its last step
    on the final time: as many evaluations as torchdiffeq, outputs more accurate (against solve_ode at 1e-12)."""
    f = Counted()
    y0 = torch.randn(16, 3, dtype=torch.float64)
    t = torch.linspace(0, 1.5, n_out, dtype=torch.float64)
    ref = nde.solve_ode(f, y0, t, rtol=1e-12, atol=1e-12, method="dopri8").ys.detach()
    f.calls = 0
    ours = nde.odeint(f, y0, t, rtol=1e-7, atol=1e-7, method="dopri8")
    ours_nfe, f.calls = f.calls, 0
    theirs = torchdiffeq.odeint(f, y0, t, rtol=1e-7, atol=1e-7, method="dopri8")
    assert ours_nfe <= f.calls
    assert (ours - ref).abs().max() < (theirs - ref).abs().max() / 10


@pytest.mark.parametrize("method", ["fehlberg2", "adaptive_heun"])
def test_low_order_pairs_evaluate_where_torchdiffeq_does(method):
    """The same method as torchdiffeq's, not only as many evaluations: every call of f (rejected steps
    included) gets the same (t, y) to round-off, so the step sequences are the same."""
    calls = {"nde": [], "tdq": []}
    f = Counted()

    def logged(name):
        def func(t, y):
            calls[name].append((float(t), y.detach().clone()))
            return f(t, y)
        return func

    y0 = torch.randn(16, 3, dtype=torch.float64)
    t = torch.tensor([0.0, 1.5], dtype=torch.float64)
    nde.odeint(logged("nde"), y0, t, rtol=1e-6, atol=1e-6, method=method)
    torchdiffeq.odeint(logged("tdq"), y0, t, rtol=1e-6, atol=1e-6, method=method)
    assert len(calls["nde"]) == len(calls["tdq"]) > 20
    for (t_a, y_a), (t_b, y_b) in zip(calls["nde"], calls["tdq"]):
        assert t_a == pytest.approx(t_b, abs=1e-12) and torch.allclose(y_a, y_b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method,options", [("euler", {"step_size": 0.1}), ("midpoint", {"step_size": 0.1}),
                                            ("rk4", None), ("euler", {"step_size": 0.1, "interp": "cubic"}),
                                            ("heun2", None), ("heun2", {"step_size": 0.1}), ("heun3", None),
                                            ("heun3", {"step_size": 0.1, "interp": "cubic"}),
                                            ("rk4", {"step_size": 0.1, "interp": "cubic"})])
def test_fixed_grid_matches(method, options):
    """Same values to round-off (odeint's "rk4" is torchdiffeq's, Kutta's 3/8 rule) and same NFE."""
    f = Counted()
    y0 = torch.randn(4, 3, dtype=torch.float64)
    t = torch.linspace(0, 1, 4, dtype=torch.float64)
    ours = nde.odeint(f, y0, t, method=method, options=options)
    ours_calls, f.calls = f.calls, 0
    theirs = torchdiffeq.odeint(f, y0, t, method=method, options=options)
    torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)
    assert ours_calls <= f.calls


def test_solve_ode_rk4_is_the_classical_method():
    """solve_ode's "rk4" is classical RK4, "rk4_38" Kutta's 3/8 rule: both fourth order, different values."""
    y0, t = torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    f = lambda t, y: -y * (1 + t)  # noqa: E731   y = exp(−t − t²/2)
    classic = nde.solve_ode(f, y0, t, method="rk4", step_size=0.25).ys[-1]
    kutta = nde.solve_ode(f, y0, t, method="rk4_38", step_size=0.25).ys[-1]
    exact = math.exp(-1.5)
    assert 1e-7 < abs(classic.item() - kutta.item()) < 1e-3
    assert abs(classic.item() - exact) < 1e-3 and abs(kutta.item() - exact) < 1e-3


def test_step_size_grid_counts_steps_in_the_dtype_of_t():
    """step_size = t[1] - t[0] of a float32 linspace: (t_end - t0) / step_size is 31.0000009 in float64
    but 31 in float32, where torchdiffeq computes it; a 32nd step of 3e-8 would cost 4 evaluations."""
    f = Counted()
    y0 = torch.randn(4, 3, dtype=torch.float64)
    t = torch.linspace(0, 1, 32)
    options = {"step_size": float(t[1] - t[0])}
    nde.odeint(lambda s, y: f(s.double(), y), y0, t[[0, -1]], method="rk4", options=options)
    ours, f.calls = f.calls, 0
    torchdiffeq.odeint(lambda s, y: f(s.double(), y), y0, t[[0, -1]], method="rk4", options=options)
    assert ours == f.calls == 4 * 31


@pytest.mark.parametrize("method,options", [
    ("explicit_adams", None), ("implicit_adams", None), ("fixed_adams", {"step_size": 0.05}),
    ("implicit_adams", {"step_size": 0.05, "max_order": 5, "interp": "cubic"}),
    ("explicit_adams", {"step_size": 0.02, "max_order": 12}),
    ("implicit_adams", {"step_size": 0.1, "max_iters": 1})])   # the corrector does not converge: warnings
@pytest.mark.parametrize("decreasing", [False, True])
def test_adams_methods_match_torchdiffeq(method, options, decreasing):
    """torchdiffeq's fixed-grid Adams methods (3/8-rule start, Adams–Bashforth up to order 11, Adams–Moulton
    corrector by functional iteration): same values to round-off, same warnings, no more evaluations."""
    y0 = torch.randn(4, 3, dtype=torch.float64)
    t = torch.linspace(0, 2, 9, dtype=torch.float64)
    t = t.flip(0) if decreasing else t
    results = []
    for lib in (nde, torchdiffeq):
        f = Counted()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ys = lib.odeint(f, y0, t, method=method, options=dict(options) if options else None)
        results.append((ys, f.calls, len(caught)))
    (ours, ours_calls, ours_warnings), (theirs, calls, their_warnings) = results
    torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)
    assert ours_calls <= calls and ours_warnings == their_warnings


def test_adams_coefficients_are_the_classical_tables():
    """From exact rational arithmetic: AB3 = (23, −16, 5)/12, AM through 4 points = (9, 19, −5, 1)/24, and
    every order up to 11 equal to torchdiffeq's tables."""
    from nde._adams import adams_coefficients
    assert adams_coefficients(3, False) == (23 / 12, -16 / 12, 5 / 12)
    assert adams_coefficients(3, True) == (9 / 24, 19 / 24, -5 / 24, 1 / 24)
    tables = pytest.importorskip("torchdiffeq._impl.fixed_adams")
    for k in range(1, 12):
        assert adams_coefficients(k, False) == tuple(tables._BASHFORTH_DIVISOR[k].tolist())
        assert adams_coefficients(k, True) == tuple(tables._MOULTON_DIVISOR[k + 1].tolist())


@pytest.mark.parametrize("method,order", [("explicit_adams", 3), ("implicit_adams", 4)])
def test_adams_convergence_order(method, order):
    """With max_order=4, Adams–Bashforth of order 3 and its Adams–Moulton corrector of order 4: on
    y' = −y·(1 + t) the error falls 2^order-fold per halving of the step. (At the default max_order 12,
    explicit_adams diverges on this problem, as torchdiffeq's does, with the same values.)"""
    f = lambda t, y: -y * (1 + t)  # noqa: E731
    y0, t = torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # corrector iterations capped at max_iters, as in torchdiffeq
        errors = [abs(nde.odeint(f, y0, t, method=method, options={"step_size": h, "max_order": 4})[-1].item()
                      - math.exp(-1.5)) for h in (0.1, 0.05, 0.025)]
    ratios = [a / b for a, b in zip(errors[:-1], errors[1:])]
    assert all(0.85 * 2 ** order < r < 1.15 * 2 ** order for r in ratios), errors


def test_adams_gradients_backsolve_and_errors():
    """Direct and backsolve gradients agree with torchdiffeq's adjoint; the discrete adjoint says it cannot
    replay a multistep method; bad options name the argument."""
    f = Counted()
    params = tuple(f.parameters())
    y0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    t = torch.linspace(0, 1, 3, dtype=torch.float64)
    options = {"step_size": 0.01}
    grads = []
    for odeint in (nde.odeint, nde.odeint_adjoint, torchdiffeq.odeint_adjoint):
        kwargs = {} if odeint is nde.odeint else {"adjoint_params": params}
        loss = odeint(f, y0, t, method="implicit_adams", options=dict(options), **kwargs).pow(2).sum()
        grads.append(torch.autograd.grad(loss, (y0, *params)))
    for ours, ref in zip(grads[1], grads[2]):
        torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)
    for direct, ref in zip(grads[0], grads[2]):
        torch.testing.assert_close(direct, ref, atol=1e-7, rtol=1e-6)
    with pytest.raises(ValueError, match="`adjoint`: the discrete adjoint does not replay"):
        nde.odeint(f, y0, t, method="fixed_adams", adjoint="discrete")
    with pytest.raises(ValueError, match=r"`options\['max_order'\]`"):
        nde.odeint(f, y0, t, method="explicit_adams", options={"max_order": 13})
    with pytest.raises(ValueError, match="unknown key 'max_order'"):
        nde.odeint(f, y0, t, method="rk4", options={"max_order": 4})
    with pytest.raises(ValueError, match="available through nde.odeint only"):
        nde.solve_ode(f, y0, t, method="implicit_adams")


def test_grid_constructor():
    """options['grid_constructor'](func, y0, t) sets the fixed grid, as in torchdiffeq; bad grids are refused."""
    f = Counted()
    y0 = torch.randn(4, 3, dtype=torch.float64)
    t = torch.linspace(0, 1, 3, dtype=torch.float64)
    uneven = lambda func, y0, t: torch.cat([t[:1], torch.tensor([0.1, 0.15, 0.5, 0.7], dtype=t.dtype), t[-1:]])  # noqa: E731
    ours = nde.odeint(f, y0, t, method="rk4", options={"grid_constructor": uneven})
    theirs = torchdiffeq.odeint(f, y0, t, method="rk4", options={"grid_constructor": uneven})
    torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="from t\\[0\\] to t\\[-1\\]"):
        nde.odeint(f, y0, t, method="euler", options={"grid_constructor": lambda func, y0, t: t[:-1]})
    with pytest.raises(ValueError, match="mutually exclusive"):
        nde.odeint(f, y0, t, method="euler", options={"grid_constructor": uneven, "step_size": 0.1})
    with pytest.raises(ValueError, match="strictly monotonic"):
        nde.odeint(f, y0, t, method="euler", options={"grid_constructor": lambda func, y0, t: t[[0, 2, 1, 2]]})
    with pytest.raises(ValueError, match="unknown key 'grid_constructor'"):
        nde.odeint(f, y0, t, method="dopri5", options={"grid_constructor": uneven})


@pytest.mark.parametrize("solver", ["RK45", "Radau", "LSODA"])
@pytest.mark.parametrize("decreasing", [False, True])
def test_scipy_solver_matches_torchdiffeqs(solver, decreasing):
    pytest.importorskip("scipy")
    f = Counted()
    y0 = torch.randn(4, 3, dtype=torch.float64)
    t = torch.linspace(0, 2, 5, dtype=torch.float64)
    t = t.flip(0) if decreasing else t
    kwargs = dict(method="scipy_solver", options={"solver": solver}, rtol=1e-6, atol=1e-8)
    ours, theirs = nde.odeint(f, y0, t, **kwargs), torchdiffeq.odeint(f, y0, t, **kwargs)
    assert ours.shape == theirs.shape == (5, 4, 3) and not ours.requires_grad
    # Same solve_ivp call; LSODA differs in the last digits from torchdiffeq's (which negates time to go backwards).
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12 if solver != "LSODA" else 1e-5)
    exact = nde.odeint(f, y0, t, rtol=1e-12, atol=1e-12, method="dopri8")
    torch.testing.assert_close(ours, exact, rtol=0, atol=1e-4)


def test_scipy_solver_tuple_state_tolerances_and_errors():
    pytest.importorskip("scipy")
    decay = lambda t, s: (-s[0], s[0] - s[1])  # noqa: E731
    a, b = nde.odeint(decay, (torch.ones(2), torch.zeros(2)), torch.tensor([0.0, 1.0]), method="scipy_solver")
    assert a.shape == b.shape == (2, 2)
    torch.testing.assert_close(a[-1], torch.full((2,), math.exp(-1.0)), rtol=1e-4, atol=0)
    torch.testing.assert_close(b[-1], torch.full((2,), math.exp(-1.0)), rtol=1e-3, atol=0)   # t e^{-t} at t=1
    # A per-component atol reaches solve_ivp broadcast to the state (checked against a direct call).
    from scipy.integrate import solve_ivp
    atol = torch.tensor([1e-9, 1e-3], dtype=torch.float64)
    y0 = torch.tensor([[1.0, 2.0]] * 3, dtype=torch.float64)
    y = nde.odeint(lambda t, y: -y * y, y0, torch.tensor([0.0, 3.0], dtype=torch.float64),
                   method="scipy_solver", options={"solver": "RK45"}, rtol=1e-12, atol=atol)
    direct = solve_ivp(lambda t, y: -y * y, (0.0, 3.0), y0.reshape(-1).numpy(), method="RK45", rtol=1e-12,
                       atol=np.tile([1e-9, 1e-3], 3), t_eval=[0.0, 3.0])
    torch.testing.assert_close(y[-1].reshape(-1), torch.from_numpy(direct.y[:, -1]), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"unknown keys \['step_size'\]"):
        nde.odeint(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]), method="scipy_solver",
                   options={"step_size": 0.1})
    with pytest.raises(ValueError, match="no adjoint"):
        nde.odeint_adjoint(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]), method="scipy_solver",
                           adjoint_params=())
    with pytest.raises(ValueError, match="through nde.odeint only"):
        nde.solve_ode(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]), method="scipy_solver")
    with pytest.raises(RuntimeError, match=r"solve_ivp \(RK45\) failed"):   # y' = y^2 blows up at t = 1
        nde.odeint(lambda t, y: y * y, torch.ones(1, dtype=torch.float64), torch.tensor([0.0, 2.0]),
                   method="scipy_solver", options={"solver": "RK45"})
    with pytest.raises(RuntimeError, match=r"`func` returned non-finite values .* at t=0"):   # solve_ivp: no end
        nde.odeint(lambda t, y: y * float("nan"), torch.ones(2), torch.tensor([0.0, 1.0]), method="scipy_solver",
                   options={"solver": "RK45"})


def test_dtype_option_is_accepted_and_checked():
    f = Counted()
    y0 = torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    ours = nde.odeint(f, y0, t, options={"dtype": torch.float64})
    theirs = torchdiffeq.odeint(f, y0, t, options={"dtype": torch.float64})
    assert torch.allclose(ours, theirs, atol=1e-7)
    with pytest.raises(ValueError, match=r"options\['dtype'\]"):
        nde.odeint(f, y0, t, options={"dtype": torch.int64})


def test_tuple_state_and_defaults():
    def f(t, state):
        x, v = state
        return v, -x
    x0, v0 = torch.ones(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    t = torch.linspace(0, 1, 3, dtype=torch.float64)
    xs, vs = nde.odeint(f, (x0, v0), t)
    xs2, vs2 = torchdiffeq.odeint(f, (x0, v0), t)
    assert xs.shape == (3, 3) and torch.allclose(xs, xs2, atol=1e-8) and torch.allclose(vs, vs2, atol=1e-8)
    assert torch.allclose(xs[-1], torch.cos(torch.tensor(1.0, dtype=torch.float64)), atol=1e-7)


def test_odeint_adjoint_gradients_match_torchdiffeq():
    f = Counted()
    y0 = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    grads = []
    for impl in (nde.odeint_adjoint, torchdiffeq.odeint_adjoint):
        f.zero_grad()
        y0.grad = None
        impl(f, y0, t, rtol=1e-9, atol=1e-9, adjoint_options=dict(norm="seminorm")).pow(2).sum().backward()
        grads.append([y0.grad.clone()] + [p.grad.clone() for p in f.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


class _TwoTensorField(torch.nn.Module):
    """A small tensor driving a large one (the case where a mixed norm and the RMS of the concatenation differ)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.w = torch.nn.Parameter(torch.randn(3, 3, dtype=torch.float64) * 0.5)
        self.calls = 0

    def forward(self, s, y):
        self.calls += 1
        a, b = y
        return torch.tanh(a @ self.w), -0.1 * b * a.sum(-1, keepdim=True)


def _backward_evaluations_and_gradient(solve, f, y0, t, **kwargs):
    ys = solve(f, y0, t, rtol=1e-6, atol=1e-6, **kwargs)
    forward = f.calls
    f.zero_grad()
    sum(part[-1].sum() for part in (ys if isinstance(ys, tuple) else (ys,))).backward()
    return f.calls - forward, f.w.grad.clone()


def _tiny_beside_large():
    torch.manual_seed(0)
    return (torch.randn(1, 3, dtype=torch.float64), 100 * torch.randn(1, 99, dtype=torch.float64))


@pytest.mark.parametrize("case", ["seminorm", "callable adjoint norm"])
def test_odeint_adjoint_backward_norm_is_torchdiffeqs(case):
    """The backward solve measures y and a with the forward solve's norm (a tuple's mixed norm, options['norm']), as
    torchdiffeq does; nde took the RMS of each flat piece (26 against torchdiffeq's 32 backward evaluations here, and
    a different gradient). A callable adjoint_options['norm'] gets torchdiffeq's (t, *y, *a, *g); it was refused."""
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    y0 = _tiny_beside_large()
    kwargs, seen = {}, {}
    if case == "seminorm":
        kwargs = dict(adjoint_options={"norm": "seminorm"})
    results = {}
    for name, solve in (("nde", nde.odeint_adjoint), ("torchdiffeq", torchdiffeq.odeint_adjoint)):
        if case == "callable adjoint norm":
            def max_norm(parts, name=name):
                seen[name] = [tuple(x.shape) for x in parts]
                return max(x.abs().max() for x in parts)
            kwargs = dict(adjoint_options={"norm": max_norm})
        results[name] = _backward_evaluations_and_gradient(solve, _TwoTensorField(), y0, t, **kwargs)
    assert results["nde"][0] == results["torchdiffeq"][0]
    torch.testing.assert_close(results["nde"][1], results["torchdiffeq"][1], rtol=1e-9, atol=0)
    if case == "callable adjoint norm":
        assert seen["nde"] == seen["torchdiffeq"] == [(), (1, 3), (1, 99), (1, 3), (1, 99), (3, 3)]


def test_a_tensor_states_backward_norm_is_torchdiffeqs():
    """A custom forward norm measures y and a in the backward solve too (nde took their RMS: 32 against
    torchdiffeq's 38 backward evaluations here, and 32 against 44 on other seeds); a callable
    adjoint_options['norm'] gets (t, y, a, *g)."""
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    torch.manual_seed(3)
    y0 = torch.randn(8, 3, dtype=torch.float64)
    seen, results = {}, {}

    class Field(_TwoTensorField):
        def __init__(self):
            super().__init__()
            with torch.no_grad():
                self.w.mul_(2.0)

        def forward(self, s, y):
            self.calls += 1
            return torch.tanh(y @ self.w)
    for name, solve in (("nde", nde.odeint_adjoint), ("torchdiffeq", torchdiffeq.odeint_adjoint)):
        def max_norm(parts, name=name):
            seen[name] = [tuple(x.shape) for x in parts]
            return max(x.abs().max() for x in parts)
        results[name] = _backward_evaluations_and_gradient(solve, Field(), y0, t, adjoint_options={"norm": max_norm})
    assert results["nde"][0] == results["torchdiffeq"][0]
    torch.testing.assert_close(results["nde"][1], results["torchdiffeq"][1], rtol=1e-9, atol=0)
    assert seen["nde"] == seen["torchdiffeq"] == [(), (8, 3), (8, 3), (3, 3)]
    max_norm = dict(options={"norm": lambda y: y.abs().max()})
    ours, theirs = (_backward_evaluations_and_gradient(solve, Field(), y0, t, **max_norm)
                    for solve in (nde.odeint_adjoint, torchdiffeq.odeint_adjoint))
    assert ours[0] == theirs[0]
    torch.testing.assert_close(ours[1], theirs[1], rtol=1e-9, atol=0)
    with pytest.raises(ValueError, match=r"`adjoint_options\['norm'\]` must be 'seminorm' or a callable"):
        nde.odeint_adjoint(Field(), y0, t, adjoint_options={"norm": "max"})


@pytest.mark.parametrize("per_sample", [False, True])
def test_func_receives_time_in_the_dtype_of_t(per_sample):
    """A float32 field that concatenates t to the state works, as with torchdiffeq."""
    seen = []

    def f(t, y):
        seen.append(t.dtype)
        return -y + torch.cat([y[:, :1], t.reshape(-1, 1).expand(y.shape[0], 1)], 1)
    y0 = torch.ones(3, 2)
    ys = nde.solve_ode(f, y0, torch.tensor([0.0, 1.0]), per_sample=per_sample).ys
    theirs = torchdiffeq.odeint(f, y0, torch.tensor([0.0, 1.0]), rtol=1e-6, atol=1e-6)
    assert set(seen) == {torch.float32} and torch.allclose(ys, theirs, atol=1e-4)


@pytest.mark.parametrize("method", ["dopri5", "dopri8"])
def test_odeint_float32_t_keeps_float64_stage_times(method):
    """torchdiffeq's adaptive solvers compute stage times in float64 whatever the dtype of ``t``; nde's odeint rounded
    them to a float32 ``t``'s dtype, which capped a float64 state's accuracy (y' = cos t: error 3e-9 at 1e-12 instead
    of 1e-12; dopri8 took 5878 evaluations instead of 106)."""
    calls = []

    def f(s, y):
        calls.append(1)
        return torch.cos(s) * torch.ones_like(y)
    t = torch.tensor([0.0, 1.7], dtype=torch.float32)
    ys = nde.odeint(f, torch.zeros(1, dtype=torch.float64), t, method=method, rtol=1e-12, atol=1e-12)
    assert abs(ys[-1].item() - math.sin(float(t[1]))) < 1e-10
    ours = len(calls)
    torchdiffeq.odeint(f, torch.zeros(1, dtype=torch.float64), t, method=method, rtol=1e-12, atol=1e-12)
    assert ours == len(calls) - ours


def test_odeint_max_num_steps_counts_the_steps_between_output_times():
    """torchdiffeq's ``max_num_steps`` limits the steps taken to reach each output time; nde's odeint counted the
    whole solve, so with many outputs it raised where torchdiffeq solves (also up front with ``max_step``)."""
    t = torch.linspace(0.0, 5.0, 21, dtype=torch.float64)
    y0 = torch.ones(1, dtype=torch.float64)
    for options in ({"max_num_steps": 4}, {"max_num_steps": 4, "max_step": 0.1}):
        ys = nde.odeint(lambda s, y: -y, y0, t, rtol=1e-8, atol=1e-10, options=options)
        theirs = torchdiffeq.odeint(lambda s, y: -y, y0, t, rtol=1e-8, atol=1e-10, options=options)
        torch.testing.assert_close(ys[:, 0], torch.exp(-t), rtol=1e-7, atol=0)
        torch.testing.assert_close(ys, theirs, rtol=1e-12, atol=0)
    with pytest.raises(nde.SolverError, match="since the last output time"):   # torchdiffeq: an AssertionError
        nde.odeint(lambda s, y: -y, y0, t, rtol=1e-8, atol=1e-10, options={"max_num_steps": 1})


@pytest.mark.parametrize("method", ["euler", "rk4", "implicit_adams"])
def test_grid_constructor_with_a_single_output_time_returns_y0(method):
    """With one output time torchdiffeq's default grid is that time alone, and a constructor returning ``t`` (or any
    grid from t[0] to t[0]) gives y0; nde refused a grid of fewer than two times."""
    y0 = torch.tensor([0.5, -0.3], dtype=torch.float64)
    t = torch.tensor([0.4], dtype=torch.float64)
    for constructor in (lambda f, y, s: s, lambda f, y, s: torch.cat([s, s])):
        ys = nde.odeint(lambda s, y: -y, y0, t, method=method, options={"grid_constructor": constructor})
        assert ys.shape == (1, 2) and torch.equal(ys[0], y0)
    with pytest.raises(ValueError, match="grid_constructor"):
        nde.odeint(lambda s, y: -y, y0, t, method=method, options={"grid_constructor": lambda f, y, s: s[:0]})


def test_odeint_dense_matches_torchdiffeq():
    """Same steps (I controller) and the same dopri5 interpolant: the dense outputs agree to round-off."""
    f = lambda t, y: torch.stack([y[1], -y[0]])  # noqa: E731
    y0 = torch.tensor([1.0, 0.0], dtype=torch.float64)
    t0, t1 = torch.tensor(0.0, dtype=torch.float64), torch.tensor(3.0, dtype=torch.float64)
    ours = nde.odeint_dense(f, y0, t0, t1, rtol=1e-6, atol=1e-8)
    ref = torchdiffeq.odeint_dense(f, y0, t0, t1, rtol=1e-6, atol=1e-8)
    for tq in (0.0, 0.35, 1.5, 2.99, 3.0):
        torch.testing.assert_close(ours(torch.tensor(tq, dtype=torch.float64)), ref(torch.tensor(tq, dtype=torch.float64)),
                                   atol=1e-12, rtol=0)
    grid = torch.linspace(0.0, 3.0, 7, dtype=torch.float64)
    torch.testing.assert_close(ours(grid), torch.stack([grid.cos(), -grid.sin()], dim=1), atol=1e-5, rtol=0)


def test_odeint_dense_tuple_state_backwards_in_time():
    """Beyond torchdiffeq's dense output (dopri5 and tensors only): tsit5, a tuple state, t1 < t0."""
    evaluate = nde.odeint_dense(lambda t, s: (s[1], -s[0]), (torch.tensor(1.0, dtype=torch.float64),
                                torch.tensor(0.0, dtype=torch.float64)), torch.tensor(0.0, dtype=torch.float64),
                                torch.tensor(-2.0, dtype=torch.float64), method="tsit5", rtol=1e-9, atol=1e-10)
    x, v = evaluate(torch.tensor([-0.5, -1.7], dtype=torch.float64))
    torch.testing.assert_close(x, torch.tensor([-0.5, -1.7], dtype=torch.float64).cos(), atol=1e-7, rtol=0)
    torch.testing.assert_close(v, -torch.tensor([-0.5, -1.7], dtype=torch.float64).sin(), atol=1e-7, rtol=0)
    with pytest.raises(ValueError, match="outside the solved interval"):
        evaluate(torch.tensor(0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="`method`: odeint_dense needs an adaptive method"):
        nde.odeint_dense(lambda t, y: -y, torch.ones(1), torch.tensor(0.0), torch.tensor(1.0), method="rk4")


@pytest.mark.parametrize("method", ["euler", "heun2", "rk4", "implicit_adams"])
def test_perturb_option_matches_torchdiffeq(method):
    """options['perturb']: the first stage at t0+ and stages at c = 1 (and the Adams corrector) at t1−, so a
    field that jumps at grid points is seen from inside each step; the discrete adjoint replays those times."""
    jump = lambda t, y: torch.where(torch.floor(t * 4) % 2 == 0, 1.0, -1.0) * (1 + y)  # noqa: E731
    y0 = torch.zeros(2, dtype=torch.float64)
    t = torch.linspace(0, 2, 5, dtype=torch.float64)
    options = {"step_size": 0.25, "perturb": True}
    ours = nde.odeint(jump, y0, t, method=method, options=dict(options))
    theirs = torchdiffeq.odeint(jump, y0, t, method=method, options=dict(options))
    torch.testing.assert_close(ours, theirs, atol=1e-12, rtol=0)
    unperturbed = nde.odeint(jump, y0, t, method=method, options={"step_size": 0.25})
    if method != "euler":   # with grid points on the jumps the perturbation changes the result
        assert (ours - unperturbed).abs().max() > 1e-3
    if method != "implicit_adams":
        y0g = y0.clone().requires_grad_(True)
        grads = [torch.autograd.grad(nde.odeint(jump, y0g, t, method=method, options=dict(options), adjoint=mode,
                                                adjoint_params=())[-1].sum(), y0g)[0]
                 for mode in ("direct", "discrete")]
        torch.testing.assert_close(grads[0], grads[1], atol=1e-12, rtol=0)


@pytest.mark.parametrize("method", ["rk4", "fixed_adams"])
@pytest.mark.parametrize("t", [[0.0, 0.35, 1.0], [1.0, 0.4, 0.0]])
def test_odeint_adjoint_with_a_grid_constructor_retraces_the_grid(method, t):
    """The backsolve over each output interval steps over the forward grid's points inside it (with the whole
    grid from t[0] to t[-1] it stepped over nothing: gradient 0 instead of e^-1 on y' = a y)."""
    f = Counted()
    y0 = torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor(t, dtype=torch.float64)
    options = dict(grid_constructor=lambda func, y, tt: torch.linspace(float(tt[0]), float(tt[-1]), 21, dtype=tt.dtype))
    grads = []
    for solve in (nde.odeint, nde.odeint_adjoint, torchdiffeq.odeint_adjoint):
        f.zero_grad()
        solve(f, y0, t, method=method, options=options).pow(2).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in f.parameters()]))
    direct, ours, theirs = grads
    scale = direct.abs().max()
    assert scale > 1e-2
    assert (ours - direct).abs().max() < 1e-5 * scale   # the method run backwards: close, not exact
    assert (ours - theirs).abs().max() < 1e-5 * scale


def test_a_0d_state_with_increasing_times():
    t = torch.linspace(0, 1, 3, dtype=torch.float64)
    y0 = torch.tensor(1.0, dtype=torch.float64)
    theirs = torchdiffeq.odeint(lambda s, y: -y, y0, t)
    for solve in (nde.odeint, lambda *a: nde.odeint_adjoint(*a, adjoint_params=())):
        torch.testing.assert_close(solve(lambda s, y: -y, y0, t), theirs, rtol=1e-9, atol=1e-9)


def test_a_one_tensor_tuple_state_reaches_func_as_a_tuple():
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    y0 = (torch.ones(2, dtype=torch.float64),)
    seen = []

    def f(s, y):
        seen.append(type(y))
        return (-y[0],)
    ours = nde.odeint(f, y0, t)
    assert isinstance(ours, tuple) and set(seen) == {tuple}
    torch.testing.assert_close(ours[0], torchdiffeq.odeint(f, y0, t)[0], rtol=1e-10, atol=1e-10)


def test_tuple_states_use_torchdiffeqs_mixed_norm_and_pass_the_tuple_to_a_custom_norm():
    """A one-element tensor beside 99 quiet ones keeps its own tolerance: the largest per-tensor RMS (torchdiffeq's
    default), not the RMS of the concatenation (which took 26 evaluations against 32 and a 9x larger error)."""
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    y0 = (torch.ones(1, dtype=torch.float64), torch.zeros(99, dtype=torch.float64))

    def f(s, y):
        return -y[0], torch.ones_like(y[1])
    counts = {}
    for name, solve in (("nde", nde.odeint), ("torchdiffeq", torchdiffeq.odeint)):
        calls = []
        ys = solve(lambda s, y: calls.append(s) or f(s, y), y0, t, rtol=1e-6, atol=1e-6)
        counts[name] = (len(calls), ys)
    assert counts["nde"][0] == counts["torchdiffeq"][0]
    torch.testing.assert_close(counts["nde"][1][0], counts["torchdiffeq"][1][0], rtol=1e-12, atol=1e-12)
    first_only = dict(norm=lambda y: y[0].abs().max())   # a custom norm gets the tuple, as in torchdiffeq
    ours = nde.odeint(f, y0, t, rtol=1e-6, atol=1e-6, options=first_only)
    theirs = torchdiffeq.odeint(f, y0, t, rtol=1e-6, atol=1e-6, options=first_only)
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-12, atol=1e-12)


def _two_tensor_field(s, y):
    a, b = y
    return torch.tanh(a.flip(-1)) * torch.cos(s).reshape(-1, 1), -b * a.sum(-1, keepdim=True)   # s: () or (batch,)


@pytest.mark.parametrize("rtol,atol", [
    ((1e-6, 1e-3), (1e-8, 1e-4)),                                              # one scalar per tensor
    ([1e-5, 1e-8], 1e-9),                                                      # a list, and a scalar atol
    (1e-6, (torch.linspace(1e-9, 1e-5, 12, dtype=torch.float64), 1e-9))])     # torchdiffeq's flat per-element form
def test_per_tensor_tolerances_of_a_tuple_state_give_torchdiffeqs_steps(rtol, atol):
    """torchdiffeq takes one tolerance per tensor of a tuple state; nde refused them. Same NFE and values."""
    torch.manual_seed(0)
    y0 = (torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64))
    t = torch.linspace(0, 2, 5, dtype=torch.float64)
    results = {}
    for name, solve in (("nde", nde.odeint), ("torchdiffeq", torchdiffeq.odeint)):
        calls = []
        ys = solve(lambda s, y: calls.append(s) or _two_tensor_field(s, y), y0, t, rtol=rtol, atol=atol)
        results[name] = (len(calls), ys)
    assert results["nde"][0] == results["torchdiffeq"][0]
    for ours, theirs in zip(results["nde"][1], results["torchdiffeq"][1]):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    one = nde.odeint(lambda s, y: (-y[0],), y0[:1], t, rtol=(1e-5,), atol=(1e-7,))   # a 1-tuple keeps its shape
    torch.testing.assert_close(one[0], torchdiffeq.odeint(lambda s, y: (-y[0],), y0[:1], t, rtol=(1e-5,),
                                                          atol=(1e-7,))[0], rtol=1e-10, atol=1e-12)


def test_per_sample_per_tensor_tolerances_take_the_steps_of_each_rows_shared_solve():
    """Per-sample rows and the discrete adjoint: a tuple ((B, 3), (B, 1)) with (rtol_a, rtol_b), (atol_a, atol_b)
    takes, row by row, the steps of that row's shared solve with the same tolerances (the mixed norm of each row),
    and the discrete adjoint's gradient is the sum of the rows' own."""
    torch.manual_seed(0)
    a, b = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 1, dtype=torch.float64)
    t = torch.linspace(0, 2, 4, dtype=torch.float64)
    weight = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)

    def as_tuple(s, y):
        da, db = _two_tensor_field(s, y)
        return weight * da, db
    tol = dict(rtol=(1e-6, 1e-3), atol=(1e-9, 1e-5))
    rows = [nde.solve_ode(as_tuple, (a[i:i + 1], b[i:i + 1]), t, **tol) for i in range(5)]
    g_rows, = torch.autograd.grad(sum(r.ys[0].sum() + r.ys[1].sum() for r in rows), weight)
    for adjoint in ("direct", "discrete"):
        tup = nde.solve_ode(as_tuple, (a, b), t, per_sample=True, adjoint=adjoint, adjoint_params=(weight,), **tol)
        assert tup.stats["nfe"].tolist() == [int(r.stats["nfe"]) for r in rows]
        for part, k in zip(tup.ys, range(2)):
            torch.testing.assert_close(part, torch.cat([r.ys[k] for r in rows], dim=1), rtol=0, atol=1e-9)
        g_tup, = torch.autograd.grad(tup.ys[0].sum() + tup.ys[1].sum(), weight)
        torch.testing.assert_close(g_tup, g_rows, rtol=1e-10, atol=0)


def test_per_tensor_tolerances_reach_scipy_and_bad_ones_are_named():
    pytest.importorskip("scipy")
    from scipy.integrate import solve_ivp
    y0 = (torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64))
    t = torch.tensor([0.0, 3.0], dtype=torch.float64)
    ys = nde.odeint(lambda s, y: (-y[0] * y[0], -y[1]), y0, t, method="scipy_solver",
                    options={"solver": "RK45"}, rtol=1e-12, atol=(1e-9, 1e-3))
    direct = solve_ivp(lambda s, y: np.concatenate([-y[:2] * y[:2], -y[2:]]), (0.0, 3.0), np.array([1.0, 2.0, 0.5]),
                       method="RK45", rtol=1e-12, atol=np.array([1e-9, 1e-9, 1e-3]), t_eval=[0.0, 3.0])
    torch.testing.assert_close(torch.cat([ys[0][-1], ys[1][-1]]), torch.from_numpy(direct.y[:, -1]), rtol=0, atol=0)
    f = lambda s, y: (-y[0], -y[1])  # noqa: E731
    with pytest.raises(ValueError, match="`rtol` has 3 entries but the tuple `y0` has 2 tensors"):
        nde.odeint(f, y0, t, rtol=(1e-6, 1e-6, 1e-6))
    with pytest.raises(ValueError, match=r"`atol\[1\]` must be a finite non-negative"):
        nde.odeint(f, y0, t, atol=(1e-6, -1.0))
    with pytest.raises(ValueError, match=r"`rtol\[0\]` of shape \(3,\) does not broadcast"):
        nde.odeint(f, y0, t, rtol=(torch.ones(3), 1e-6))
    with pytest.raises(ValueError, match="give one tolerance per tensor"):
        nde.odeint(f, y0, t, rtol=torch.full((3,), 1e-6, dtype=torch.float64))
    with pytest.raises(ValueError, match="give them when `rtol`/`atol` are per component or per tensor"):
        nde.odeint(f, y0, t, rtol=(1e-6, 1e-3), adjoint="backsolve", adjoint_params=())


@pytest.mark.parametrize("y_dtype,t_dtype", [(torch.float64, torch.float32), (torch.float32, torch.float64)])
def test_func_gets_time_in_the_states_dtype_as_in_torchdiffeq(y_dtype, t_dtype):
    seen = set()

    def f(s, y):
        seen.add(s.dtype)
        return -y * (1 + s)
    y0, t = torch.ones(3, dtype=y_dtype), torch.tensor([0.0, 0.5, 1.0], dtype=t_dtype)
    ours = nde.odeint(f, y0, t)
    assert seen == {y_dtype}
    torch.testing.assert_close(ours, torchdiffeq.odeint(f, y0, t), rtol=1e-6, atol=1e-6)


def test_step_callbacks_that_nde_does_not_call_are_announced():
    class WithCallback(torch.nn.Module):
        def forward(self, s, y):
            return -y

        def callback_accept_step(self, s, y, dt):
            raise AssertionError("not called by nde")
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pytest.warns(UserWarning, match="callback_accept_step of `func` will not run"):
        nde.odeint(WithCallback(), torch.ones(2, dtype=torch.float64), t)


@pytest.mark.parametrize("options,match", [(dict(ifactor=0.5), r"options\['ifactor'\]"),
                                           (dict(dfactor=1.5), r"options\['dfactor'\]"),
                                           (dict(dfactor=0.0), r"options\['dfactor'\]")])
def test_controller_factors_out_of_range_name_the_option(options, match):
    with pytest.raises(ValueError, match=match):
        nde.odeint(lambda s, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]), options=options)


def test_solve_ode_keeps_the_time_in_the_dtype_of_t():
    """Unlike odeint (torchdiffeq's cast), solve_ode hands func a float64 t for a float32 state: at t ~ 1e6 float32
    would round the stage times to multiples of 0.0625."""
    seen = []
    t = torch.tensor([1e6, 1e6 + 1.0], dtype=torch.float64)
    nde.solve_ode(lambda s, y: seen.append(s) or -y, torch.ones(2), t)
    assert {s.dtype for s in seen} == {torch.float64}
    assert any(float(s) % 0.0625 != 0 for s in seen)
