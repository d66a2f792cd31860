"""Event handling: odeint(event_fn=...) against closed forms and torchdiffeq, odeint_event's gradients
against the closed-form derivatives of the event time (implicit function theorem)."""
import math

import pytest
import torch

import nde
from nde import SolverError, Status

torchdiffeq = pytest.importorskip("torchdiffeq")

G = 9.81


def decay(t, y):
    return -y


class Ball(torch.nn.Module):
    """Free fall: state (height, velocity)."""

    def forward(self, t, state):
        x, v = state
        return v, torch.full_like(v, -G)


def impact_time(h0, v0):
    """First time the ball at height h0 with upward velocity v0 reaches height 0."""
    return (v0 + torch.sqrt(v0 ** 2 + 2 * G * h0)) / G


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3", "adaptive_heun", "fehlberg2", "dopri8"])
def test_event_time_closed_form(method):
    """y' = −y from 2 crosses 0.5 at t* = ln 4; the solution's last row is y(t*)."""
    y0 = torch.tensor([2.0], dtype=torch.float64)
    event_t, sol = nde.odeint(decay, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), method=method,
                              rtol=1e-9, atol=1e-10, event_fn=lambda t, y: y - 0.5)
    assert event_t.shape == () and event_t.dtype == torch.float64
    assert sol.shape == (2, 1)
    assert torch.equal(sol[0], y0)
    tol = 1e-6 if method in ("adaptive_heun", "fehlberg2") else 1e-7   # second order: Hermite over more steps
    assert abs(event_t.item() - math.log(4.0)) < tol
    assert abs(sol[1].item() - 0.5) < tol


@pytest.mark.parametrize("method", ["dopri5", "bosh3"])
def test_event_matches_torchdiffeq(method):
    """Same method, tolerances and event: the event time and state agree with torchdiffeq's to its bisection
    tolerance (atol), the initial-sign rule included (an event function negative at t0)."""
    y0 = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    t = torch.tensor([0.0, 1.0])

    def osc(t, y):
        return torch.stack([y[:, 1], -y[:, 0]], dim=1)

    def event_fn(t, y):
        return torch.stack([y[:, 0] - 0.2, 0.3 - y[:, 1]])   # the second component starts negative
    kwargs = dict(method=method, rtol=1e-7, atol=1e-8, event_fn=event_fn)
    ours_t, ours = nde.odeint(osc, y0, t, **kwargs)
    ref_t, ref = torchdiffeq.odeint(osc, y0, t, **kwargs)
    assert abs(ours_t.item() - ref_t.item()) < 1e-6
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("method,interp", [("euler", "linear"), ("rk4", "linear"), ("rk4", "cubic")])
def test_fixed_step_event_matches_torchdiffeq(method, interp):
    y0 = torch.tensor([2.0], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    kwargs = dict(method=method, options={"step_size": 0.05, "interp": interp}, atol=1e-9,
                  event_fn=lambda t, y: y - 0.5)
    ours_t, ours = nde.odeint(decay, y0, t, **kwargs)
    ref_t, ref = torchdiffeq.odeint(decay, y0, t, **kwargs)
    assert abs(ours_t.item() - ref_t.item()) < 1e-8
    torch.testing.assert_close(ours, ref, atol=1e-8, rtol=0)
    if interp == "cubic":   # linear interpolation between steps of 0.05 is accurate to ~3e-4 only
        assert abs(ours_t.item() - math.log(4.0)) < 1e-5


def test_event_backwards_in_time():
    """y' = y from 1 at t0 = 0, integrated backwards: y = e^t reaches 0.25 at t* = −ln 4."""
    event_t, sol = nde.odeint(lambda t, y: y, torch.tensor([1.0], dtype=torch.float64),
                              torch.tensor([0.0, -1.0], dtype=torch.float64), rtol=1e-9, atol=1e-10,
                              event_fn=lambda t, y: y - 0.25)
    assert abs(event_t.item() + math.log(4.0)) < 1e-7
    assert abs(sol[1].item() - 0.25) < 1e-7


def test_first_of_several_events_and_time_dependent_event():
    """The solve ends at the earliest zero of any component: y = 2e^{−t} crosses 1 at ln 2 ≈ 0.69, before
    the time event t − 0.9; with the time event at 0.3 that one is first."""
    y0 = torch.tensor([2.0], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    for t_event, expected in ((0.9, math.log(2.0)), (0.3, 0.3)):
        event_t, _ = nde.odeint(decay, y0, t, rtol=1e-9, atol=1e-10,
                                event_fn=lambda t, y: torch.cat([y - 1.0, (t_event - t).reshape(1)]))
        assert abs(event_t.item() - expected) < 1e-8


def test_batched_state_stops_at_first_sample():
    """A (batch,) event ends the shared solve at the first sample to cross (torchdiffeq semantics)."""
    y0 = torch.tensor([[1.0], [3.0], [2.0]], dtype=torch.float64)
    event_t, sol = nde.odeint(decay, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), rtol=1e-9, atol=1e-10,
                              event_fn=lambda t, y: y[:, 0] - 0.5)
    assert abs(event_t.item() - math.log(2.0)) < 1e-7          # sample 0 crosses first
    torch.testing.assert_close(sol[1], y0 * 0.5, atol=1e-7, rtol=0)


def test_event_at_initial_time():
    y0 = torch.tensor([0.5])
    event_t, sol = nde.odeint(decay, y0, torch.tensor([0.25, 1.0]), event_fn=lambda t, y: y - 0.5)
    assert event_t.item() == 0.25
    assert torch.equal(sol[1], y0)


@pytest.mark.parametrize("adjoint", ["direct", "backsolve", "discrete"])
def test_odeint_event_gradient_closed_form(adjoint):
    """Ball hitting the ground: t* = (v0 + √(v0² + 2g·h0))/g and v(t*) = −√(v0² + 2g·h0); the event time
    and impact velocity are differentiated through h0 and v0 (tuple state)."""
    h0 = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    v0 = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    event_t, (x, v) = nde.odeint_event(Ball(), (h0, v0), torch.tensor(0.0, dtype=torch.float64),
                                       event_fn=lambda t, s: s[0], adjoint=adjoint, rtol=1e-9, atol=1e-10)
    exact_t = impact_time(h0, v0)
    assert abs(event_t.item() - exact_t.item()) < 1e-8
    assert x.shape == v.shape == (2,)
    assert abs(x[-1].item()) < 1e-7
    got = torch.autograd.grad(event_t + 0.1 * v[-1], (h0, v0))
    want = torch.autograd.grad(exact_t - 0.1 * torch.sqrt(v0 ** 2 + 2 * G * h0), (h0, v0))
    for g, w in zip(got, want):
        assert abs(g.item() - w.item()) < 1e-6


@pytest.mark.parametrize("method", ["dopri5", "dopri8", "rk4"])
def test_discrete_adjoint_equals_direct_through_event(method):
    """The discrete adjoint replays the event step (dopri8: a fresh step to the event, as it has no
    interpolant of its order), so its gradient equals backprop through the solver to round-off."""
    a = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    func = lambda t, y: -a * y + 0.1 * torch.sin(3 * t)  # noqa: E731
    options = {"step_size": 0.05, "interp": "cubic"} if method == "rk4" else None
    grads = []
    for adjoint in ("direct", "discrete"):
        event_t, sol = nde.odeint_event(func, y0, torch.tensor(0.0, dtype=torch.float64), adjoint=adjoint,
                                        adjoint_params=(a,), event_fn=lambda t, y: y - 0.5, method=method,
                                        options=options, rtol=1e-8, atol=1e-9)
        grads.append(torch.autograd.grad(event_t + sol[-1].sum(), (y0, a)))
    for ours, ref in zip(*grads):
        torch.testing.assert_close(ours, ref, atol=1e-12, rtol=1e-10)


def test_odeint_event_with_odeint_adjoint_interface():
    """torchdiffeq's pattern: odeint_event(..., odeint_interface=odeint_adjoint)."""
    ball = Ball()
    h0 = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    v0 = torch.tensor(0.0, dtype=torch.float64)
    event_t, _ = nde.odeint_event(ball, (h0, v0), torch.tensor(0.0, dtype=torch.float64), event_fn=lambda t, s: s[0],
                                  odeint_interface=nde.odeint_adjoint, adjoint_params=(), rtol=1e-9, atol=1e-10)
    (grad,) = torch.autograd.grad(event_t, h0)
    assert abs(grad.item() - 1.0 / math.sqrt(2 * G * 1.0)) < 1e-6   # t* = √(2h0/g)


def test_odeint_event_differentiates_event_fn_parameters_and_t0():
    """y' = −y from 1 hits the threshold θ at t* = t0 − ln θ: dt*/dθ = −1/θ and dt*/dt0 = 1."""
    theta = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    t0 = torch.tensor(0.2, dtype=torch.float64, requires_grad=True)
    event_t, sol = nde.odeint_event(decay, torch.tensor([1.0], dtype=torch.float64), t0,
                                    event_fn=lambda t, y: y - theta, rtol=1e-10, atol=1e-12)
    assert abs(event_t.item() - (0.2 - math.log(0.3))) < 1e-9
    d_theta, d_t0 = torch.autograd.grad(event_t, (theta, t0))
    assert abs(d_theta.item() + 1 / 0.3) < 1e-6
    assert abs(d_t0.item() - 1.0) < 1e-6


def test_odeint_event_reverse_time_gradient():
    """y' = y from y0 backwards to 0.25: t* = ln(0.25/y0) < 0, dt*/dy0 = −1/y0."""
    y0 = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    event_t, _ = nde.odeint_event(lambda t, y: y, y0, torch.tensor(0.0, dtype=torch.float64),
                                  event_fn=lambda t, y: y - 0.25, reverse_time=True, rtol=1e-10, atol=1e-12)
    assert abs(event_t.item() - math.log(0.25)) < 1e-9
    (grad,) = torch.autograd.grad(event_t, y0)
    assert abs(grad.item() + 1.0) < 1e-6


def test_odeint_event_gradient_matches_torchdiffeq():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).double()
    func = lambda t, y: net(y) - torch.tensor([0.0, 1.0], dtype=y.dtype)  # noqa: E731
    y0 = torch.tensor([0.3, 1.0], dtype=torch.float64)
    kwargs = dict(event_fn=lambda t, y: y[1], rtol=1e-9, atol=1e-10)
    grads = []
    for lib in (nde, torchdiffeq):
        event_t, sol = lib.odeint_event(func, y0, torch.tensor(0.0, dtype=torch.float64), **kwargs)
        grads.append(torch.autograd.grad(event_t + sol[-1].sum(), tuple(net.parameters())))
    for ours, ref in zip(*grads):
        torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)


def test_odeint_direct_gradient_is_fixed_end_time():
    """As in torchdiffeq, odeint's event time carries no gradient and y(t*) is differentiated at fixed t*:
    for y' = −y, ∂y(t*)/∂y0 = e^{−t*}."""
    y0 = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    event_t, sol = nde.odeint(decay, y0, torch.tensor([0.0, 1.0], dtype=torch.float64), rtol=1e-9, atol=1e-10,
                              event_fn=lambda t, y: y - 0.5)
    assert not event_t.requires_grad
    (grad,) = torch.autograd.grad(sol[1].sum(), y0)
    assert abs(grad.item() - 0.25) < 1e-7


def test_event_rejects_bad_input():
    y0, t = torch.tensor([1.0]), torch.tensor([0.0, 1.0])
    event = lambda t, y: y - 0.5  # noqa: E731
    with pytest.raises(ValueError, match="`t` must hold two times"):
        nde.odeint(decay, y0, torch.tensor([0.0, 0.5, 1.0]), event_fn=event)
    with pytest.raises(TypeError, match="`event_fn` must be callable"):
        nde.odeint(decay, y0, t, event_fn=0.5)
    with pytest.raises(ValueError, match="step_size"):
        nde.odeint(decay, y0, t, method="rk4", event_fn=event)
    with pytest.raises(ValueError, match="scipy_solver"):
        nde.odeint(decay, y0, t, method="scipy_solver", event_fn=event)
    with pytest.raises(TypeError, match="`event_fn` must return a floating-point tensor"):
        nde.odeint(decay, y0, t, event_fn=lambda t, y: 1.0)
    with pytest.raises(ValueError, match="NaN"):
        nde.odeint(decay, y0, t, event_fn=lambda t, y: torch.where(t > 0.1, math.nan, y + 1.0))
    with pytest.raises(ValueError, match="`t0`"):
        nde.odeint_event(decay, y0, torch.tensor([0.0, 1.0]), event_fn=event)


def test_missing_event_fails_instead_of_hanging():
    """No crossing: a solve stops at max_num_steps, or once time overflows (a constant state, whose
    steps grow tenfold each)."""
    y0, t = torch.tensor([1.0]), torch.tensor([0.0, 1.0])
    with pytest.raises(SolverError, match="no event within max_steps=50"):
        nde.odeint(decay, y0, t, method="euler", options={"step_size": 0.1, "max_num_steps": 50},
                   event_fn=lambda t, y: y + 1.0)
    with pytest.raises(SolverError, match="max_steps=30"):
        nde.odeint(lambda t, y: torch.ones_like(y), y0, t, options={"max_num_steps": 30},
                   event_fn=lambda t, y: y + 1.0)
    with pytest.raises(SolverError) as info:
        nde.odeint(lambda t, y: torch.zeros_like(y), y0, t, event_fn=lambda t, y: y + 1.0)
    assert info.value.status == Status.NO_EVENT


def test_tuple_of_scalar_tensors_state():
    """A tuple of 0-d tensors is a valid state (the harmonic oscillator x'' = −x)."""
    x, v = nde.odeint(lambda t, s: (s[1], -s[0]), (torch.tensor(1.0), torch.tensor(0.0)), torch.tensor([0.0, 1.0]),
                      rtol=1e-8, atol=1e-9)
    assert x.shape == v.shape == (2,)
    assert abs(x[-1].item() - math.cos(1.0)) < 1e-6 and abs(v[-1].item() + math.sin(1.0)) < 1e-6


class BallRows(torch.nn.Module):
    """Free fall per row: y (n, 2) = (height, velocity)."""

    def forward(self, t, y):
        return torch.stack([y[:, 1], torch.full_like(y[:, 1], -G)], dim=1)


def _balls():
    h0 = torch.tensor([1.0, 2.0, 5.0, 0.5], dtype=torch.float64, requires_grad=True)
    v0 = torch.tensor([0.0, 1.0, -2.0, 3.0], dtype=torch.float64, requires_grad=True)
    return h0, v0


@pytest.mark.parametrize("adjoint", ["direct", "discrete"])
def test_per_sample_events_closed_form(adjoint):
    """solve_ode(per_sample=True, event_fn=...): every ball stops at its own impact; event times and
    impact velocities are differentiable (implicit function theorem) through h0 and v0."""
    h0, v0 = _balls()
    sol = nde.solve_ode(BallRows(), torch.stack([h0, v0], 1), torch.tensor([0.0, 10.0], dtype=torch.float64),
                        per_sample=True, adjoint=adjoint, event_fn=lambda t, y: y[:, 0], rtol=1e-9, atol=1e-10)
    exact = impact_time(h0, v0)
    assert sol.ys.shape == (2, 4, 2) and sol.event_t.shape == (4,)
    torch.testing.assert_close(sol.event_t, exact, atol=1e-8, rtol=0)
    assert sol.ys[-1][:, 0].abs().max() < 1e-8
    got = torch.autograd.grad(sol.event_t.sum() + 0.1 * sol.ys[-1][:, 1].sum(), (h0, v0))
    want = torch.autograd.grad(exact.sum() - 0.1 * torch.sqrt(v0 ** 2 + 2 * G * h0).sum(), (h0, v0))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-6, rtol=0)


def test_per_sample_events_end_time_components_and_start():
    """Rows without an event before t1 end at t1 with event_t NaN; (n, k) event values stop a row at the
    first of its components; a row whose event holds at t0 ends there; finished rows stop costing work."""
    y0 = torch.tensor([[2.0], [1.0], [0.3], [0.5]], dtype=torch.float64)
    t = torch.tensor([0.0, 2.0], dtype=torch.float64)

    def event_fn(t, y):          # y = y0·e^{−t} reaching 0.5, or the time reaching 1.5
        return torch.stack([y[:, 0] - 0.5, 1.5 - t], dim=1)
    sol = nde.solve_ode(decay, y0, t, per_sample=True, event_fn=event_fn, rtol=1e-9, atol=1e-10)
    expected = [math.log(4.0), math.log(2.0), 1.5, 0.0]   # row 2 starts below 0.5: its crossing is upwards,
    torch.testing.assert_close(sol.event_t, torch.tensor(expected, dtype=torch.float64), atol=1e-8, rtol=0)
    torch.testing.assert_close(sol.ys[-1, :, 0], y0[:, 0] * torch.exp(-sol.event_t), atol=1e-8, rtol=0)
    assert sol.stats["nfe"][3] < sol.stats["nfe"][1] < sol.stats["nfe"][2]
    late = nde.solve_ode(decay, y0[:2], torch.tensor([0.0, 0.3], dtype=torch.float64), per_sample=True,
                         event_fn=lambda t, y: y[:, 0] - 0.5)
    assert torch.isnan(late.event_t).all()
    torch.testing.assert_close(late.ys[-1], late.ys[0] * math.exp(-0.3), atol=1e-6, rtol=0)


@pytest.mark.parametrize("adjoint", ["direct", "discrete"])
def test_a_row_whose_event_holds_at_t0_is_not_integrated(adjoint):
    """Row 0 starts on its event (h = 0), where its field is defined only at t0 (NaN for d = −t < 0). It was
    stepped anyway: its NaN stopped the solve with a SolverError, although its own shared solve ends at t0 with
    no evaluation. y(end) is y0 there, with the identity as its gradient, in both gradient modes."""
    def f(t, y):
        h_dot = torch.where(y[:, 1] >= 0, -1.0, math.nan).to(y.dtype)
        return torch.stack([h_dot, -torch.ones_like(y[:, 1])], 1)
    y0 = torch.tensor([[0.0, 0.0], [1.0, 5.0]], dtype=torch.float64, requires_grad=True)
    sol = nde.solve_ode(f, y0, torch.tensor([0.0, 5.0], dtype=torch.float64), per_sample=True, adjoint=adjoint,
                        adjoint_params=(), event_fn=lambda t, y: y[:, 0], rtol=1e-9, atol=1e-10)
    assert sol.status.tolist() == [0, 0] and int(sol.stats["n_accepted"][0]) == 0
    torch.testing.assert_close(sol.event_t, torch.tensor([0.0, 1.0], dtype=torch.float64), atol=1e-8, rtol=0)
    torch.testing.assert_close(sol.ys[-1], torch.tensor([[0.0, 0.0], [0.0, 4.0]], dtype=torch.float64),
                               atol=1e-8, rtol=0)
    (grad,) = torch.autograd.grad(sol.ys[-1][0].sum(), y0)
    torch.testing.assert_close(grad, torch.tensor([[1.0, 1.0], [0.0, 0.0]], dtype=torch.float64))


@pytest.mark.parametrize("atol", [0.0, "tensor"])
def test_per_sample_events_with_zero_atol(atol):
    """atol = 0 (relative tolerance alone) is valid: the rows' events are bisected to the resolution of the
    times (it divided by zero). y' = −y from 1 and 2 reaches 0.5 at ln 2 and ln 4."""
    y0 = torch.tensor([[1.0], [2.0]], dtype=torch.float64)
    atol = torch.zeros(1, dtype=torch.float64) if atol == "tensor" else atol
    sol = nde.solve_ode(decay, y0, torch.tensor([0.0, 3.0], dtype=torch.float64), per_sample=True, rtol=1e-10,
                        atol=atol, event_fn=lambda t, y: y[:, 0] - 0.5)
    expected = torch.tensor([math.log(2.0), math.log(4.0)], dtype=torch.float64)
    torch.testing.assert_close(sol.event_t, expected, atol=1e-9, rtol=0)


def test_per_sample_events_match_row_by_row_torchdiffeq():
    """Each row of a neural field stops where torchdiffeq's event solve of that row alone stops."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)).double()
    field = lambda t, y: 0.3 * net(y) - torch.tensor([0.0, 1.0], dtype=y.dtype)  # noqa: E731
    y0 = torch.rand(5, 2, dtype=torch.float64) + torch.tensor([0.0, 0.5], dtype=torch.float64)   # above 0
    sol = nde.solve_ode(field, y0, torch.tensor([0.0, 20.0], dtype=torch.float64), per_sample=True,
                        event_fn=lambda t, y: y[:, 1], rtol=1e-8, atol=1e-9)
    for i in range(5):
        ref_t, ref = torchdiffeq.odeint(field, y0[i:i + 1], torch.tensor([0.0, 1.0], dtype=torch.float64),
                                        event_fn=lambda t, y: y[0, 1], rtol=1e-8, atol=1e-9)
        assert abs(sol.event_t[i].item() - ref_t.item()) < 1e-6
        torch.testing.assert_close(sol.ys[-1, i], ref[-1, 0], atol=1e-6, rtol=0)


def test_solve_ode_shared_event_and_end_time():
    """Shared steps: the first event of the batch ends the solve (differentiable event time); with t1
    before it, the solve ends at t1 and event_t is NaN."""
    h0, v0 = _balls()
    y0 = torch.stack([h0, v0], 1)
    sol = nde.solve_ode(BallRows(), y0, torch.tensor([0.0, 10.0], dtype=torch.float64),
                        event_fn=lambda t, y: y[:, 0], rtol=1e-9, atol=1e-10)
    exact = impact_time(h0, v0)
    first = int(exact.argmin())
    assert abs(sol.event_t.item() - exact[first].item()) < 1e-8
    (grad,) = torch.autograd.grad(sol.event_t, h0)
    torch.testing.assert_close(grad[first], 1 / torch.sqrt(v0[first] ** 2 + 2 * G * h0[first]).detach(),
                               atol=1e-6, rtol=0)
    short = nde.solve_ode(BallRows(), y0.detach(), torch.tensor([0.0, 0.2], dtype=torch.float64),
                          event_fn=lambda t, y: y[:, 0], rtol=1e-9, atol=1e-10)
    assert torch.isnan(short.event_t)
    torch.testing.assert_close(short.ys[-1, :, 0], h0.detach() + 0.2 * v0.detach() - 0.5 * G * 0.04,
                               atol=1e-8, rtol=0)


def test_solve_ode_event_errors():
    y0, t = torch.ones(3, 1), torch.tensor([0.0, 1.0])
    event = lambda t, y: y[:, 0] - 0.5  # noqa: E731
    with pytest.raises(ValueError, match="adjoint='direct' or 'discrete'"):
        nde.solve_ode(decay, y0, t, per_sample=True, adjoint="backsolve", event_fn=event)
    with pytest.raises(ValueError, match="dopri8"):
        nde.solve_ode(decay, y0, t, per_sample=True, method="dopri8", event_fn=event)
    with pytest.raises(ValueError, match=r"\(n,\) or \(n, k\)"):
        nde.solve_ode(decay, y0, t, per_sample=True, event_fn=lambda t, y: y.sum())
    with pytest.raises(ValueError, match="`t` must hold two times"):
        nde.solve_ode(decay, y0, torch.tensor([0.0, 0.5, 1.0]), per_sample=True, event_fn=event)
    with pytest.raises(ValueError, match="RNODE"):
        nde.solve_ode(decay, y0, t, event_fn=event, regularize=nde.regularize.RNODE())
    with pytest.raises(ValueError, match="step_size"):
        nde.solve_ode(decay, y0, t, method="rk4", event_fn=event)


def test_local_regulariser_samples_only_up_to_the_event():
    """LocalErrorEstimate draws its times in [t0, event time], not past the event."""
    reg = nde.regularize.LocalErrorEstimate(n_samples=8)
    seen = []
    draw = reg.sample_times
    reg.sample_times = lambda t0, t1, starts, dts, rng: seen.append((t0, t1)) or draw(t0, t1, starts, dts, rng)
    sol = nde.solve_ode(decay, torch.tensor([2.0], dtype=torch.float64), torch.tensor([0.0, 10.0], dtype=torch.float64),
                        event_fn=lambda t, y: y - 0.5, regularize=reg, rtol=1e-8, atol=1e-9)
    assert abs(sol.event_t.item() - math.log(4.0)) < 1e-7
    assert seen and abs(seen[0][1] - math.log(4.0)) < 1e-7 and torch.isfinite(sol.regularization)


def test_second_derivative_through_event_time_is_refused():
    """The event time's correction is exact to first order only: for a ball with drag, d²t*/dh0² is about
    −0.026 (finite differences of dt*/dh0), but the correction gave 0. create_graph=True through it raises,
    in odeint_event and solve_ode (shared and per sample); first derivatives still match finite differences."""
    def drag(t, s):
        x, v = s
        return v, -G - 0.3 * v * v.abs()

    def impact(h0):
        event_t, _ = nde.odeint_event(drag, (h0, torch.tensor(1.0, dtype=torch.float64)),
                                      torch.tensor(0.0, dtype=torch.float64), event_fn=lambda t, s: s[0],
                                      rtol=1e-10, atol=1e-12)
        return event_t
    h0 = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    with pytest.raises(RuntimeError, match="second derivatives"):
        torch.autograd.grad(impact(h0), h0, create_graph=True)
    (grad,) = torch.autograd.grad(impact(h0), h0)
    with torch.no_grad():
        fd = (impact(h0 + 1e-6) - impact(h0 - 1e-6)) / 2e-6
    assert abs(grad.item() - fd.item()) < 1e-5
    y0 = torch.tensor([[2.0, 1.0]], dtype=torch.float64, requires_grad=True)
    for per_sample in (False, True):
        sol = nde.solve_ode(BallRows(), y0, torch.tensor([0.0, 5.0], dtype=torch.float64), per_sample=per_sample,
                            event_fn=lambda t, y: y[:, 0] if per_sample else y[0, 0])
        with pytest.raises(RuntimeError, match="second derivatives"):
            torch.autograd.grad(sol.event_t.sum(), y0, create_graph=True)


def test_event_function_without_autograd_history():
    """An event function built without autograd (an indicator) locates the event like any other (y' = −y
    from 1 reaches 0.5 at ln 2) in solve_ode, shared and per sample, where nothing needs a gradient; where
    one does, the event time has none, which is a clear ValueError (it was an autograd RuntimeError)."""
    indicator = lambda t, y: torch.where(y < 0.5, -1.0, 1.0)  # noqa: E731
    y0, t = torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.0, 3.0], dtype=torch.float64)
    shared = nde.solve_ode(decay, y0, t, event_fn=indicator, rtol=1e-10, atol=1e-12)
    rows = nde.solve_ode(decay, y0.reshape(1, 1), t, per_sample=True, event_fn=lambda t, y: indicator(t, y)[:, 0],
                         rtol=1e-10, atol=1e-12)
    for event_t in (shared.event_t, rows.event_t[0]):
        assert abs(event_t.item() - math.log(2.0)) < 1e-10
    with pytest.raises(ValueError, match="without autograd history"):
        nde.solve_ode(decay, y0.clone().requires_grad_(True), t, event_fn=indicator)


@pytest.mark.parametrize("per_sample", [False, True])
def test_nan_event_value_inside_a_step_raises_in_both_modes(per_sample):
    """y' = −y from 1, g = y − 0.5 but NaN just above the crossing (0.5 < y < 0.501, t in (0.6912, 0.6931)), where
    only the bisection looks: shared mode raised, per-sample took NaN for "not crossed" and returned an event time."""
    y0, t = torch.ones(2, 1, dtype=torch.float64), torch.tensor([0.0, 2.0], dtype=torch.float64)

    def event(s, y):
        g = y[..., 0] - 0.5
        return torch.where((g > 0) & (g < 1e-3), math.nan, g)
    with pytest.raises(ValueError, match="`event_fn` returned NaN at t=0.69"):
        nde.solve_ode(decay, y0, t, per_sample=per_sample, event_fn=event)
