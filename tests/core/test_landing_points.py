"""step_t / jump_t (torchdiffeq's options): steps land on the points; at jump points func may be
discontinuous in t. Checked against torchdiffeq (values and NFE), closed forms and finite differences."""
import math

import pytest
import torch

import nde

torchdiffeq = pytest.importorskip("torchdiffeq")

JUMP = 0.4


class Switched(torch.nn.Module):
    """dy/dt = a·y for t < JUMP and b·y after it: y(t) is known in closed form; counts evaluations."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(-1.0, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.tensor(0.7, dtype=torch.float64))
        self.calls = 0

    def forward(self, t, y):
        self.calls += 1
        return torch.where(t < JUMP, self.a, self.b) * y

    def exact(self, y0, t):
        a, b = self.a.detach(), self.b.detach()
        left = torch.exp(a * t.clamp(max=JUMP))
        right = torch.exp(b * (t - JUMP).clamp(min=0))
        return (left * right).unsqueeze(-1) * y0


Y0 = torch.tensor([1.0, -2.0], dtype=torch.float64)
T = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)


def counted(solve, f, *args, **kwargs):
    f.calls = 0
    out = solve(f, *args, **kwargs)
    return out, f.calls


@pytest.mark.parametrize("key", ["jump_t", "step_t"])
@pytest.mark.parametrize("t", [T, T.flip(0)], ids=["forward", "backward"])
def test_values_and_nfe_match_torchdiffeq(key, t):
    f = Switched()
    opts = {key: torch.tensor([JUMP, 0.7], dtype=torch.float64)}
    ours, n_ours = counted(nde.odeint, f, Y0, t, rtol=1e-8, atol=1e-8, options=opts)
    theirs, n_theirs = counted(torchdiffeq.odeint, f, Y0, t, rtol=1e-8, atol=1e-8, options=opts)
    assert n_ours == n_theirs
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


def test_jump_points_make_a_discontinuous_field_cheap_and_accurate():
    f = Switched()
    plain, n_plain = counted(nde.odeint, f, Y0, T, rtol=1e-9, atol=1e-9)
    jumped, n_jumped = counted(nde.odeint, f, Y0, T, rtol=1e-9, atol=1e-9,
                               options={"jump_t": torch.tensor([JUMP], dtype=torch.float64)})
    exact = f.exact(Y0, T)
    assert (jumped - exact).abs().max() < 1e-8
    assert n_jumped < 0.7 * n_plain            # no step-size collapse at the jump


def test_solution_lands_on_the_points():
    f = Switched()
    sol = nde.solve_ode(f, Y0, T, rtol=1e-6, atol=1e-6, step_t=[0.55], jump_t=[JUMP])
    ends = (sol.heuristics["t"] + sol.heuristics["dt"]).tolist()
    assert any(math.isclose(e, 0.55, abs_tol=1e-15) for e in ends)
    assert any(math.isclose(e, JUMP, abs_tol=1e-15) for e in ends)


@pytest.mark.parametrize("adjoint", ["direct", "discrete", "backsolve"])
def test_gradients_through_a_jump(adjoint):
    """d y(1) / d(a, b, y0) against the closed form y(1) = exp(a·JUMP + b·(1 − JUMP))·y0."""
    f = Switched()
    y0 = Y0.clone().requires_grad_(True)
    sol = nde.solve_ode(f, y0, T, rtol=1e-10, atol=1e-10, adjoint=adjoint, jump_t=[JUMP])
    sol.ys[-1].sum().backward()
    growth = math.exp(f.a.item() * JUMP + f.b.item() * (1 - JUMP))
    total = Y0.sum().item()
    assert abs(f.a.grad.item() - JUMP * growth * total) < 1e-6
    assert abs(f.b.grad.item() - (1 - JUMP) * growth * total) < 1e-6
    torch.testing.assert_close(y0.grad, torch.full_like(Y0, growth), rtol=1e-7, atol=1e-7)


def test_bad_landing_points():
    f = Switched()
    with pytest.raises(ValueError, match="must not have any repeated"):
        nde.odeint(f, Y0, T, options={"step_t": [0.5], "jump_t": [0.5]})
    with pytest.raises(ValueError, match="step_t"):
        nde.solve_ode(f, Y0.expand(3, 2), T, per_sample=True, step_t=[0.5])
    with pytest.raises(ValueError, match="jump_t"):
        nde.solve_ode(f, Y0, T, method="rk4", jump_t=[0.5])
    with pytest.raises(ValueError, match=r"`options\['jump_t'\]` must be a 1-D"):
        nde.odeint(f, Y0, T, options={"jump_t": [float("nan")]})
