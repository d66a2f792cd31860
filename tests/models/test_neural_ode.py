"""NeuralODE layer: closed-form linear flows, time dependence, augmentation, gradients, pass-through."""
import pytest
import torch
from torch import nn

import nde
from nde.models import NeuralODE

TIGHT = dict(rtol=1e-10, atol=1e-10)


class Linear(nn.Module):
    """y' = A y, with A a parameter."""

    def __init__(self, A):
        super().__init__()
        self.A = nn.Parameter(A.clone())

    def forward(self, t, y):
        return y @ self.A.T


class Autonomous(nn.Module):
    def __init__(self, A):
        super().__init__()
        self.A = nn.Parameter(A.clone())

    def forward(self, y):
        return y @ self.A.T


class TimeScaled(nn.Module):
    """y' = t y  ->  y(t) = y0 exp(t^2 / 2)."""

    def forward(self, t, y):
        return t * y


def _A(d=3):
    return 0.5 * torch.randn(d, d, dtype=torch.float64)


def test_linear_flow_matches_matrix_exponential():
    A = _A()
    y0 = torch.randn(4, 3, dtype=torch.float64)
    t = torch.tensor([0.0, 0.3, 1.1], dtype=torch.float64)
    ys = NeuralODE(Linear(A), **TIGHT)(y0, t)
    assert ys.shape == (4, 3, 3)
    expected = torch.stack([y0 @ torch.linalg.matrix_exp(A * s).T for s in t], dim=1)
    torch.testing.assert_close(ys, expected, rtol=1e-8, atol=1e-8)


def test_layer_returns_final_state_and_autonomous_matches():
    A = _A()
    y0 = torch.randn(4, 3, dtype=torch.float64)
    final = NeuralODE(Autonomous(A), autonomous=True, **TIGHT)(y0)
    assert final.shape == (4, 3)
    torch.testing.assert_close(final, y0 @ torch.linalg.matrix_exp(A).T, rtol=1e-8, atol=1e-8)


def test_time_dependent_field():
    y0 = torch.randn(5, 2, dtype=torch.float64)
    out = NeuralODE(TimeScaled(), t=(0.0, 1.5), **TIGHT)(y0)
    torch.testing.assert_close(out, y0 * torch.exp(torch.tensor(1.5 ** 2 / 2, dtype=torch.float64)),
                               rtol=1e-8, atol=1e-8)


def test_augmented_channels_start_at_zero_and_evolve():
    A = _A(5)
    y0 = torch.randn(4, 3, dtype=torch.float64)
    out = NeuralODE(Linear(A), augment_dim=2, **TIGHT)(y0)
    y0_aug = torch.cat([y0, torch.zeros(4, 2, dtype=torch.float64)], -1)
    torch.testing.assert_close(out, y0_aug @ torch.linalg.matrix_exp(A).T, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("adjoint", ["direct", "backsolve", "discrete"])
def test_gradients_match_closed_form(adjoint):
    """d/dA of sum(exp(A) y0) against the derivative of the closed form by autograd through matrix_exp."""
    A = _A()
    y0 = torch.randn(4, 3, dtype=torch.float64)
    model = NeuralODE(Linear(A), adjoint=adjoint, **TIGHT)
    model(y0).pow(2).sum().backward()
    A_ref = A.clone().requires_grad_(True)
    (y0 @ torch.linalg.matrix_exp(A_ref).T).pow(2).sum().backward()
    torch.testing.assert_close(model.vector_field.A.grad, A_ref.grad, rtol=1e-6, atol=1e-6)


def test_solver_kwargs_pass_through(monkeypatch):
    """Options the core may add later (e.g. regularize=) reach nde.solve_ode unchanged."""
    seen = {}
    real = nde.solve_ode

    def spy(func, y0, t, **kwargs):
        seen.update(kwargs)
        kwargs.pop("regularize")
        return real(func, y0, t, **kwargs)

    monkeypatch.setattr(nde, "solve_ode", spy)
    model = NeuralODE(Linear(_A()), rtol=1e-6, atol=1e-8)
    model(torch.randn(2, 3, dtype=torch.float64), regularize="some-future-option", rtol=1e-7)
    assert seen["regularize"] == "some-future-option" and seen["rtol"] == 1e-7 and seen["atol"] == 1e-8


def test_bad_arguments():
    with pytest.raises(TypeError, match="vector_field"):
        NeuralODE(lambda t, y: y)
    with pytest.raises(ValueError, match="augment_dim"):
        NeuralODE(TimeScaled(), augment_dim=-1)
    with pytest.raises(TypeError, match="y0"):
        NeuralODE(TimeScaled())(torch.ones(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="t must"):
        NeuralODE(TimeScaled())(torch.ones(2, 2), t=[0.0])


def test_regulariser_applies_in_training_mode_only():
    from nde import regularize
    torch.manual_seed(0)
    field = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    model = NeuralODE(field, autonomous=True, regularize=regularize.ErrorEstimate())
    y0 = torch.randn(4, 2, dtype=torch.float64)
    out = model(y0)
    assert model.regularization is not None and model.regularization.requires_grad
    (out.sum() + model.regularization).backward()
    assert all(p.grad is not None for p in field.parameters())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(y0), out.detach(), rtol=1e-6, atol=1e-8)
    assert model.regularization is None


class One(nn.Module):
    """y' = 1, so y(t1) - y(t0) = t1 - t0."""

    def forward(self, t, y):
        return torch.ones_like(y)


def test_times_that_lose_their_spacing_in_the_data_dtype_raise():
    """Unix seconds: [1.7e9, 1.7e9 + 1000] is 1024 s wide in float32, so the solve would integrate over the
    wrong interval; float64 data (or times from 0) integrate over exactly 1000."""
    t = torch.tensor([1.7e9, 1.7e9 + 1000.0], dtype=torch.float64)
    model = NeuralODE(One(), method="rk4", step_size=100.0)
    with pytest.raises(ValueError, match="t loses precision in torch.float32"):
        model(torch.zeros(1, 1), t)
    assert model(torch.zeros(1, 1, dtype=torch.float64), t)[0, -1].item() == pytest.approx(1000.0, rel=1e-12)
    assert model(torch.zeros(1, 1), t - t[0])[0, -1].item() == pytest.approx(1000.0, rel=1e-6)
    with pytest.raises(ValueError, match="t loses precision"):
        NeuralODE(One(), t=t.tolist())(torch.zeros(1, 1))


def test_flags_and_constructor_arguments_are_type_checked():
    with pytest.raises(ValueError, match="augment_dim"):
        NeuralODE(TimeScaled(), augment_dim=True)
    with pytest.raises(TypeError, match="autonomous"):
        NeuralODE(TimeScaled(), autonomous="no")
    for t in (1.0, None, [0.5], torch.tensor(1.0)):
        with pytest.raises(ValueError, match="t must be a sequence of at least 2 times"):
            NeuralODE(TimeScaled(), t=t)
    with pytest.raises(TypeError, match="methd"):
        NeuralODE(TimeScaled(), methd="rk4")
    assert NeuralODE(TimeScaled(), t=torch.tensor([0.0, 2.0])).default_t == (0.0, 2.0)


def test_augmenting_a_scalar_state_raises_naming_y0():
    """A 0-d y0 has no last dimension to append channels to (it failed inside torch.cat); unaugmented it solves."""
    with pytest.raises(ValueError, match="y0 must have a last dimension for augment_dim=2"):
        NeuralODE(TimeScaled(), augment_dim=2)(torch.tensor(1.0))
    out = NeuralODE(TimeScaled(), **TIGHT)(torch.tensor(1.0, dtype=torch.float64))
    assert out.item() == pytest.approx(torch.e ** 0.5, rel=1e-8)
