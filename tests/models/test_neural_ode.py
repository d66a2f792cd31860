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
