"""NeuralCDE: against a hand-written exact CDE solve, against torchcde, lengths, gradient modes."""
import math

import pytest
import torch
import torchcde
from torch import nn

import nde
from nde.interpolation import hermite_cubic_backward, linear_interpolation, natural_cubic_spline
from nde.models import MLPCDEField, NeuralCDE, cdeint

TIGHT = dict(rtol=1e-9, atol=1e-9)


class LinearField(nn.Module):
    """f(z)_{hc} = sum_k A[h, k, c] z_k, so dz = f(z) dX is linear in z."""

    def __init__(self, A):
        super().__init__()
        self.A = nn.Parameter(A.clone())

    def forward(self, t, z):
        return torch.einsum("hkc,bk->bhc", self.A, z)


def _exact_linear_cde(A, z0, x, t):
    """On a piecewise-linear control dX/dt is constant per interval, so
    z(t_{k+1}) = expm(sum_c A[:, :, c] (x_{k+1, c} - x_{k, c})) z(t_k) exactly."""
    zs = [z0]
    for k in range(len(t) - 1):
        out = []
        for b in range(z0.shape[0]):
            M = torch.einsum("hkc,c->hk", A, x[b, k + 1] - x[b, k])
            out.append(torch.linalg.matrix_exp(M) @ zs[-1][b])
        zs.append(torch.stack(out))
    return torch.stack(zs, dim=1)


def test_linear_cde_equals_hand_written_exact_solve():
    hidden, channels = 3, 2
    A = 0.4 * torch.randn(hidden, hidden, channels, dtype=torch.float64)
    t = torch.sort(torch.rand(5, dtype=torch.float64) * 3).values
    x = torch.randn(2, 5, channels, dtype=torch.float64)
    z0 = torch.randn(2, hidden, dtype=torch.float64)
    X = linear_interpolation(x, t)
    zs = cdeint(X, LinearField(A), z0, t, **TIGHT)
    assert zs.shape == (2, 5, hidden)
    torch.testing.assert_close(zs, _exact_linear_cde(A, z0, x, t), rtol=1e-5, atol=1e-7)


class TorchcdeField(nn.Module):
    def __init__(self, field):
        super().__init__()
        self.field = field

    def forward(self, t, z):
        return self.field(t, z)


def test_nonlinear_cde_matches_torchcde_on_a_cubic_spline():
    field = MLPCDEField(channels=3, hidden=4, width=16).double()
    t = torch.linspace(0, 2, 9, dtype=torch.float64)
    x = torch.randn(5, 9, 3, dtype=torch.float64)
    x[1, 4, 0] = float("nan")
    z0 = torch.randn(5, 4, dtype=torch.float64)
    ours = cdeint(natural_cubic_spline(x, t), field, z0, t, **TIGHT)
    X = torchcde.CubicSpline(torchcde.natural_cubic_coeffs(x, t), t)
    ref = torchcde.cdeint(X, TorchcdeField(field), z0, t, adjoint=False, method="dopri5", **TIGHT)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_default_steps_cost_about_what_torchcde_spends_on_a_path_with_knots():
    """cdeint takes torchcde's (I) controller by default: on a Hermite path with 32 knots its evaluations
    are within 15% of torchcde's, where the core's PI controller spends ~30% more."""
    torch.manual_seed(0)
    t = torch.linspace(0, 1, 32)
    x = torch.randn(32, 32, 3).cumsum(1) / 32 ** 0.5
    field, z0 = MLPCDEField(3, 16, width=64), torch.randn(32, 16)
    counts = {}

    class Counting(nn.Module):
        def __init__(self, key):
            super().__init__()
            self.key = key

        def forward(self, t_, z):
            counts[self.key] = counts.get(self.key, 0) + 1
            return field(t_, z)

    with torch.no_grad():
        X_theirs = torchcde.CubicSpline(torchcde.hermite_cubic_coefficients_with_backward_differences(x, t), t)
        torchcde.cdeint(X_theirs, Counting("torchcde"), z0, t[[0, -1]], adjoint=False, method="dopri5",
                        rtol=1e-4, atol=1e-4)
        X = hermite_cubic_backward(x, t)
        cdeint(X, Counting("default"), z0, t[[0, -1]], method="dopri5", rtol=1e-4, atol=1e-4)
        cdeint(X, Counting("pi"), z0, t[[0, -1]], method="dopri5", rtol=1e-4, atol=1e-4,
               controller=nde.PIController())
    assert counts["default"] <= 1.15 * counts["torchcde"], counts
    assert counts["pi"] > 1.15 * counts["torchcde"], counts


@pytest.mark.parametrize("interp", [linear_interpolation, hermite_cubic_backward])
def test_lengths_give_the_state_at_each_samples_last_observation(interp):
    """With per-sample lengths, each output equals solving that sample's truncated data alone
    (these two paths are causal, so the truncated path agrees up to the last observation)."""
    channels, hidden = 2, 3
    # The field's derivative jumps at the knots, where the global error is ~100x the tolerance: solve at
    # 1e-12 so that two solves on different step sequences agree to the 1e-6 compared below.
    model = NeuralCDE(MLPCDEField(channels, hidden, width=16), nn.Linear(channels, hidden),
                      rtol=1e-12, atol=1e-12).double()
    t = torch.linspace(0, 3, 6, dtype=torch.float64)
    x = torch.randn(3, 6, channels, dtype=torch.float64)
    lengths = torch.tensor([6, 4, 2])
    out = model(interp(x, t, lengths=lengths), lengths=lengths)
    for b, n in enumerate(lengths.tolist()):
        alone = model(interp(x[b:b + 1, :n], t[:n]))
        torch.testing.assert_close(out[b:b + 1], alone, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("adjoint", ["backsolve", "discrete", True])
def test_gradient_modes_agree_with_direct(adjoint):
    channels, hidden = 2, 3
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    x = torch.randn(3, 5, channels, dtype=torch.float64)
    X = natural_cubic_spline(x, t)
    grads = []
    for mode in ("direct", adjoint):
        torch.manual_seed(1)
        model = NeuralCDE(MLPCDEField(channels, hidden, width=8), nn.Linear(channels, hidden),
                          readout=nn.Linear(hidden, 1), **TIGHT).double()
        model(X, adjoint=mode).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    # "discrete" differentiates the discretisation exactly; the continuous adjoint ("backsolve",
    # torchcde's True) re-solves backwards and agrees only up to the solver tolerance.
    exact = adjoint == "discrete"
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-6 if exact else 5e-5, atol=1e-7 if exact else 1e-6)


@pytest.mark.parametrize("adjoint", ["backsolve", "discrete"])
def test_adjoint_modes_give_the_gradient_with_respect_to_the_data(adjoint):
    """The path's coefficients are built from the data; the adjoint modes differentiate them as ``direct``
    does (they used to return only the parameters' gradients: None for cdeint's data, and for NeuralCDE
    only the part through ``initial(X(t0))``)."""
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    x = torch.randn(3, 5, 2, dtype=torch.float64, requires_grad=True)
    grads = []
    for mode in ("direct", adjoint):
        torch.manual_seed(1)
        model = NeuralCDE(MLPCDEField(2, 3, width=8), nn.Linear(2, 3), readout=nn.Linear(3, 1), **TIGHT).double()
        grads.append(torch.autograd.grad(model(hermite_cubic_backward(x, t), adjoint=mode).sum(), x)[0])
    exact = adjoint == "discrete"
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-6 if exact else 5e-5, atol=1e-7 if exact else 1e-6)
    assert grads[0][:, 1:-1].abs().max() > 1e-3   # the interior observations matter


@pytest.mark.parametrize("adjoint", ["backsolve", "discrete"])
def test_adjoint_modes_differentiate_observation_times_behind_the_path(adjoint):
    """Observation times that require gradients are the path's knots and, through the Hermite slopes, in its
    coefficients too: the adjoint's product with respect to the knots ran back through the coefficients'
    graph and crashed ("backward through the graph a second time"). Checked against central differences
    of the same fixed-step solve (the path is C1 and no knot is a step point, so that solve is smooth in the
    times): ``discrete`` differentiates it exactly, ``backsolve`` re-solves backwards, to its step error."""
    torch.manual_seed(0)
    field = MLPCDEField(channels=2, hidden=3, width=8).double()
    x = torch.randn(2, 4, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 0.32, 0.67, 1.0], dtype=torch.float64)
    z0 = torch.randn(2, 3, dtype=torch.float64)
    options = dict(method="rk4_38", step_size=0.05)
    tolerance = 1e-6 if adjoint == "discrete" else 1e-3

    def loss(times, mode):
        return cdeint(hermite_cubic_backward(x, times), field, z0, t[[0, -1]], adjoint=mode, **options).sin().sum()

    times = t.clone().requires_grad_()
    grad, = torch.autograd.grad(loss(times, adjoint), times)
    eps = 1e-6
    for k in (1, 2):
        step = torch.zeros_like(t)
        step[k] = eps
        fd = (loss(t + step, "direct") - loss(t - step, "direct")) / (2 * eps)
        fd = float(fd.detach())
        assert abs(float(grad[k]) - fd) < tolerance * (1 + abs(fd))


def test_output_keeps_any_batch_shape_with_time_second_to_last_as_torchcde():
    field = MLPCDEField(channels=2, hidden=3, width=8).double()
    t = torch.linspace(0, 1, 4, dtype=torch.float64)
    for batch in [(), (2, 3)]:
        x = torch.randn(*batch, 4, 2, dtype=torch.float64)
        z0 = torch.randn(*batch, 3, dtype=torch.float64)
        ours = cdeint(natural_cubic_spline(x, t), field, z0, t, method="rk4_38", step_size=0.25)
        X = torchcde.CubicSpline(torchcde.natural_cubic_coeffs(x, t), t)
        ref = torchcde.cdeint(X, TorchcdeField(field), z0, t, adjoint=False, method="rk4",
                              options=dict(step_size=0.25))
        assert ours.shape == (*batch, 4, 3)
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


class ProdField(nn.Module):
    """A field that forms f(t, z)·dX/dt itself (torchcde's ``prod``), here tanh(W z)·(1ᵀ dX/dt)."""

    def __init__(self, hidden):
        super().__init__()
        self.W = nn.Parameter(0.5 * torch.randn(hidden, hidden, dtype=torch.float64))

    def forward(self, t, z):
        raise AssertionError("cdeint must call prod, not the matrix field")

    def prod(self, t, z, dxdt):
        return torch.tanh(z @ self.W.T) * dxdt.sum(-1, keepdim=True)


def test_a_field_with_prod_is_called_through_it_as_in_torchcde():
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    x, z0 = torch.randn(2, 5, 3, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    field = ProdField(4)
    ours = cdeint(natural_cubic_spline(x, t), field, z0, t, method="rk4_38", step_size=0.125)
    X = torchcde.CubicSpline(torchcde.natural_cubic_coeffs(x, t), t)
    ref = torchcde.cdeint(X, field, z0, t, adjoint=False, method="rk4", options=dict(step_size=0.125))
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_trajectory_output_shape_and_readout():
    model = NeuralCDE(MLPCDEField(2, 3, width=8), nn.Linear(2, 3), readout=nn.Linear(3, 5))
    X = linear_interpolation(torch.randn(4, 6, 2))
    assert model(X).shape == (4, 5)
    assert model(X, t=torch.linspace(0, 5, 7)).shape == (4, 7, 5)


def test_bad_arguments():
    X = linear_interpolation(torch.randn(4, 6, 2))
    field = MLPCDEField(2, 3)
    with pytest.raises(TypeError, match="X must"):
        cdeint(torch.randn(4, 6, 2), field, torch.zeros(4, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="z0 must"):
        cdeint(X, field, torch.zeros(5, 3), torch.tensor([0.0, 1.0]))
    for key, value in [("options", dict(step_size=0.1)), ("backend", "torchdiffeq")]:
        with pytest.raises(TypeError, match=f"`{key}` is torchcde's keyword"):
            cdeint(X, field, torch.zeros(4, 3), torch.tensor([0.0, 1.0]), **{key: value})
    with pytest.raises(TypeError, match="methd"):
        cdeint(X, field, torch.zeros(4, 3), torch.tensor([0.0, 1.0]), methd="rk4")
    with pytest.raises(ValueError, match="either t or lengths"):
        NeuralCDE(field, nn.Linear(2, 3))(X, t=[0.0, 1.0], lengths=torch.tensor([1, 2, 3, 4]))


def test_per_sample_stepping_matches_shared_and_accepts_per_sample_grids():
    """Per-sample mode (rows integrated independently, own end times) gives the same states."""
    field = MLPCDEField(channels=2, hidden=3, width=8).double()
    t = torch.linspace(0, 2, 6, dtype=torch.float64)
    x = torch.randn(3, 6, 2, dtype=torch.float64)
    X = natural_cubic_spline(x, t)
    z0 = torch.randn(3, 3, dtype=torch.float64)
    shared = cdeint(X, field, z0, t, **TIGHT)
    own = cdeint(X, field, z0, t, per_sample=True, **TIGHT)
    # Both are ~3e-7 from the exact solution at tolerance 1e-9: the spline's third derivative jumps at
    # the knots, so the two step sequences differ by their global errors, not by more.
    exact = cdeint(X, field, z0, t, method="dopri8", rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(shared, exact, rtol=0, atol=1e-6)
    torch.testing.assert_close(own, exact, rtol=0, atol=1e-6)
    ends = t[torch.tensor([5, 3, 2])]
    grids = torch.stack([torch.stack([t[0], e]) for e in ends])
    last = cdeint(X, field, z0, grids, per_sample=True, **TIGHT)[:, -1]
    torch.testing.assert_close(last, exact[torch.arange(3), torch.tensor([5, 3, 2])], rtol=0, atol=1e-6)


def test_per_sample_needs_one_batch_dimension_and_says_so():
    """The core's per-sample mode integrates rows of a (batch, hidden) state; other batch shapes failed
    inside torch.cat ("Tensors must have same number of dimensions")."""
    field = MLPCDEField(channels=2, hidden=3, width=8)
    t = torch.linspace(0, 1, 4)
    for batch in [(), (2, 3)]:
        X = linear_interpolation(torch.randn(*batch, 4, 2), t)
        with pytest.raises(ValueError, match="per_sample=True needs one batch dimension"):
            cdeint(X, field, torch.zeros(*batch, 3), t, per_sample=True)


def test_neural_cde_starts_at_the_path_start_whatever_t_asks_for():
    """z0 = initial(X(t0)) lives at X.interval[0]: outputs at t[2:] are the exact solve from there, read off
    at t[2:], so m(X, t)[:, 2:] == m(X, t[2:]) (up to the solver's error at the knots, where dX/dt jumps)."""
    hidden, channels = 3, 2
    A = 0.4 * torch.randn(hidden, hidden, channels, dtype=torch.float64)
    t = torch.tensor([0.0, 0.3, 0.7, 1.2, 2.0], dtype=torch.float64)
    x = torch.randn(2, 5, channels, dtype=torch.float64)
    X = linear_interpolation(x, t)
    model = NeuralCDE(LinearField(A), nn.Linear(channels, hidden).double(), **TIGHT)
    z0 = model.initial(x[:, 0]).detach()
    exact = _exact_linear_cde(A, z0, x, t)
    with torch.no_grad():
        torch.testing.assert_close(model(X, t=t[2:]), exact[:, 2:], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model(X, t=t)[:, 2:], model(X, t=t[2:]), rtol=1e-5, atol=1e-6)
        grids = t[2:].expand(2, 3)
        torch.testing.assert_close(model(X, t=grids, per_sample=True), exact[:, 2:], rtol=1e-5, atol=1e-6)


def test_lengths_outside_one_to_length_raise():
    X = linear_interpolation(torch.randn(4, 6, 2))
    model = NeuralCDE(MLPCDEField(2, 3, width=8), nn.Linear(2, 3), method="rk4")
    for lengths in ([0, 6, 6, 6], [6, 7, 6, 6], [-3, 6, 6, 6]):
        with pytest.raises(ValueError, match=r"lengths must lie in \[1, 6\]"):
            model(X, lengths=torch.tensor(lengths))


def test_t_outside_the_path_interval_raises_instead_of_extrapolating():
    X = linear_interpolation(torch.randn(4, 6, 2))                 # interval [0, 5]
    field = MLPCDEField(2, 3, width=8)
    with pytest.raises(ValueError, match=r"t must lie within X.interval \[0, 5\]"):
        cdeint(X, field, torch.zeros(4, 3), torch.tensor([0.0, 50.0]))
    with pytest.raises(ValueError, match="t must lie within X.interval"):
        NeuralCDE(field, nn.Linear(2, 3))(X, t=[-1.0, 2.0])
    # decreasing t (prefixed with the path's start, it went up and down) was told "strictly increasing or
    # strictly decreasing"
    with pytest.raises(ValueError, match="t must be finite and strictly increasing"):
        NeuralCDE(field, nn.Linear(2, 3))(X, t=[3.0, 2.0])
    X7 = linear_interpolation(torch.randn(4, 8, 2), torch.linspace(0, 0.7, 8))
    assert cdeint(X7, field, torch.zeros(4, 3), [0.0, 0.7], method="rk4", step_size=0.1).shape == (4, 2, 3)


def test_z0_of_another_dtype_than_the_path_raises_naming_both():
    """A float32 path with a float64 state (or the reverse) failed deep in the field's product with
    "expected scalar type Double but found Float"; it is checked at the door, and X.to(z0) fixes it."""
    X = linear_interpolation(torch.randn(4, 6, 2))
    field = MLPCDEField(2, 3, width=8).double()
    z0 = torch.zeros(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"z0 \(torch.float64, cpu\) must have X's dtype .*\(torch.float32, cpu\)"):
        cdeint(X, field, z0, X.interval)
    assert cdeint(X.to(z0), field, z0, X.interval, method="rk4", step_size=1.0).dtype == torch.float64


def test_wrong_func_or_initial_shapes_raise_naming_them():
    X = linear_interpolation(torch.randn(4, 6, 2))
    t = X.interval
    with pytest.raises(ValueError, match=r"func must return shape .*\(4, 3, 2\).*\(4, 3, 3\)"):
        cdeint(X, MLPCDEField(3, 3, width=8), torch.zeros(4, 3), t)        # built for 3 channels

    class Transposed(nn.Module):
        def forward(self, t, z):
            return z.new_zeros(z.shape[0], 2, z.shape[1])

    with pytest.raises(ValueError, match="func must return"):
        cdeint(X, Transposed(), torch.zeros(4, 3), t)
    with pytest.raises(ValueError, match="func must return"):
        cdeint(X, Transposed(), torch.zeros(4, 3), t, per_sample=True)
    with pytest.raises(ValueError, match="initial's output"):
        NeuralCDE(MLPCDEField(2, 3, width=8), nn.Linear(2, 5))(X)
    with pytest.raises(ValueError, match="initial must return shape"):
        NeuralCDE(MLPCDEField(2, 3, width=8), nn.Flatten(0))(X)
    with pytest.raises(TypeError, match="z0 must"):
        cdeint(X, MLPCDEField(2, 3), [[0.0] * 3] * 4, t)
    with pytest.raises(TypeError, match="methd"):
        NeuralCDE(MLPCDEField(2, 3), nn.Linear(2, 3), methd="rk4")


class AnyBatchLinearField(LinearField):
    def forward(self, t, z):
        return torch.einsum("hkc,...k->...hc", self.A, z)


@pytest.mark.parametrize("batch", [(), (2, 3)])
def test_neural_cde_outputs_keep_any_batch_shape(batch):
    """As cdeint, NeuralCDE takes any batch shape: the final state, the trajectory read off after the start
    and the state at per-sample lengths are the exact linear CDE solve for every sample (they were read off
    along dimension 1, the batch's second dimension or, with no batch, the hidden one)."""
    hidden, channels = 3, 2
    A = 0.4 * torch.randn(hidden, hidden, channels, dtype=torch.float64)
    t = torch.tensor([0.0, 0.3, 0.7, 1.2, 2.0], dtype=torch.float64)
    x = torch.randn(*batch, 5, channels, dtype=torch.float64)
    model = NeuralCDE(AnyBatchLinearField(A), nn.Linear(channels, hidden).double(), **TIGHT)
    flat = x.reshape(-1, 5, channels)
    with torch.no_grad():
        exact = _exact_linear_cde(A, model.initial(flat[:, 0]), flat, t).reshape(*batch, 5, hidden)
        X = linear_interpolation(x, t)
        torch.testing.assert_close(model(X), exact[..., -1, :], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(model(X, t=t[2:]), exact[..., 2:, :], rtol=1e-5, atol=1e-6)
        lengths = torch.arange(math.prod(batch)).reshape(batch) % 4 + 2
        at_lengths = exact.reshape(-1, 5, hidden)[torch.arange(lengths.numel()), lengths.flatten() - 1]
        torch.testing.assert_close(model(X, lengths=lengths), at_lengths.reshape(*batch, hidden),
                                   rtol=1e-5, atol=1e-6)
