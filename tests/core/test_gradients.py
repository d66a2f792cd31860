"""The three gradient modes: gradcheck, discrete == direct, backsolve -> direct, time gradients."""
import pytest
import torch

import nde


class Field(torch.nn.Module):
    def __init__(self, dim=2, hidden=8):
        super().__init__()
        torch.manual_seed(3)
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.Tanh(),
                                       torch.nn.Linear(hidden, dim)).double()

    def forward(self, t, y):
        return self.net(y) * (1 + 0.2 * torch.sin(t.reshape(-1, 1)))


def _all_grads(func, y0, t, loss, **kw):
    func.zero_grad()
    y0 = y0.detach().requires_grad_(True)
    t = t.detach().requires_grad_(True)
    ys = nde.solve_ode(func, y0, t, **kw).ys
    loss(ys).backward()
    return [y0.grad, t.grad] + [p.grad.clone() for p in func.parameters()]


def _loss(ys):
    return (ys ** 2).sum() + ys[1].sin().sum()


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3", "rk4", "adaptive_heun", "fehlberg2",
                                    "fehlberg2 fixed"])
@pytest.mark.parametrize("per_sample", [False, True])
def test_discrete_equals_direct_to_round_off(method, per_sample):
    """adaptive_heun and fehlberg2 start each step from the previous step's last stage, which is not f(t, y):
    the replay carries that stage's adjoint between steps (and per sample back into f(t0, y0))."""
    fixed = method in ("rk4", "fehlberg2 fixed")
    if per_sample and fixed:
        pytest.skip("per-sample steps need adaptive steps")
    func, y0 = Field(), torch.randn(6, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 0.7, 1.5], dtype=torch.float64)
    kw = dict(method=method.split()[0], rtol=1e-4 if "heun" in method or "fehlberg" in method else 1e-6,
              atol=1e-6, per_sample=per_sample, step_size=0.1 if fixed else None)
    direct = _all_grads(func, y0, t, _loss, adjoint="direct", **kw)
    discrete = _all_grads(func, y0, t, _loss, adjoint="discrete", **kw)
    for a, b in zip(direct, discrete):
        assert torch.allclose(a, b, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("per_sample", [False, True])
def test_backsolve_converges_to_direct(per_sample):
    func, y0 = Field(), torch.randn(6, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 0.7, 1.5], dtype=torch.float64)
    direct = _all_grads(func, y0, t, _loss, adjoint="direct", rtol=1e-10, atol=1e-10, per_sample=per_sample)
    back = _all_grads(func, y0, t, _loss, adjoint="backsolve", rtol=1e-10, atol=1e-10, per_sample=per_sample,
                      adjoint_rtol=1e-10, adjoint_atol=1e-10)
    for a, b in zip(direct, back):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-8)


def test_discrete_with_per_sample_output_times():
    func, y0 = Field(), torch.randn(5, 2, dtype=torch.float64)
    t = torch.stack([torch.tensor([0.0, 0.3 + 0.1 * i, 1.0 + 0.2 * i]) for i in range(5)]).double()
    kw = dict(rtol=1e-6, atol=1e-6, per_sample=True)
    for a, b in zip(_all_grads(func, y0, t, _loss, adjoint="direct", **kw),
                    _all_grads(func, y0, t, _loss, adjoint="discrete", **kw)):
        assert torch.allclose(a, b, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("adjoint", ["direct", "discrete", "backsolve"])
def test_gradcheck(adjoint):
    """torch.autograd.gradcheck on y0 and a parameter, float64, fixed steps (a smooth function)."""
    W = torch.tensor([[-0.3, 1.0], [-1.0, -0.2]], dtype=torch.float64, requires_grad=True)
    y0 = torch.tensor([[0.5, -0.2], [0.1, 0.3]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)

    def fn(y0, W):
        f = lambda t, y: torch.tanh(y @ W.T)
        extra = dict(adjoint_params=(W,), adjoint_rtol=1e-10, adjoint_atol=1e-10) if adjoint != "direct" else {}
        return nde.solve_ode(f, y0, t, method="rk4", step_size=0.05, adjoint=adjoint, **extra).ys

    tol = 1e-5 if adjoint == "backsolve" else 1e-7
    assert torch.autograd.gradcheck(fn, (y0, W), atol=tol, rtol=tol)


def test_time_gradients_match_finite_differences():
    func, y0 = Field(), torch.randn(4, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 0.4, 1.0], dtype=torch.float64)
    grads = _all_grads(func, y0, t, _loss, rtol=1e-11, atol=1e-11)[1]
    eps = 1e-6
    for i in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[i] = eps
        lp = _loss(nde.solve_ode(func, y0, t + e, rtol=1e-11, atol=1e-11).ys).item()
        lm = _loss(nde.solve_ode(func, y0, t - e, rtol=1e-11, atol=1e-11).ys).item()
        assert grads[i].item() == pytest.approx((lp - lm) / (2 * eps), rel=1e-5, abs=1e-6)


def test_discrete_adjoint_keeps_no_graph():
    """The discrete mode stores checkpoints, not the autograd graph: far fewer saved bytes."""
    from benchmarks._common import saved_tensor_bytes
    func, y0 = Field(hidden=64), torch.randn(64, 2, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([0.0, 3.0], dtype=torch.float64)
    direct = saved_tensor_bytes(lambda: nde.solve_ode(func, y0, t, rtol=1e-8, atol=1e-8).ys)
    discrete = saved_tensor_bytes(lambda: nde.solve_ode(func, y0, t, rtol=1e-8, atol=1e-8, adjoint="discrete").ys)
    assert discrete < direct / 5


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "bosh3"])
def test_direct_solve_saves_only_what_the_field_calls_save(method):
    """Stage sums (adds) save nothing for backward, and step-size control must stay out of the graph: the
    tensors a direct solve saves are exactly those saved inside its field calls."""
    field = Field(hidden=16)
    inside = {"bytes": 0, "depth": 0}

    def pack(x):
        if inside["depth"]:
            inside["bytes"] += x.numel() * x.element_size()
        return x

    def counted(t, y):
        inside["depth"] += 1
        try:
            return field(t, y)
        finally:
            inside["depth"] -= 1

    y0 = torch.randn(32, 2, dtype=torch.float64, requires_grad=True)
    total = {"bytes": 0}

    def pack_all(x):
        total["bytes"] += x.numel() * x.element_size()
        return pack(x)

    with torch.autograd.graph.saved_tensors_hooks(pack_all, lambda x: x):
        ys = nde.odeint(counted, y0, torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64), method=method,
                        rtol=1e-5, atol=1e-6)
    assert inside["bytes"] > 0 and total["bytes"] == inside["bytes"]
    ys.sum().backward()


@pytest.mark.parametrize("adjoint", ["backsolve", "discrete"])
def test_second_derivatives_through_an_adjoint_raise_instead_of_coming_out_zero(adjoint):
    """The adjoint modes compute the gradient by a solve of their own that records no graph of it; with
    create_graph=True the mixed second derivative d/dθ (dL/dy0) came out 0 (direct: about -1.16 here)."""
    func, t = Field(), torch.tensor([0.0, 1.0], dtype=torch.float64)
    y0 = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    ys = nde.solve_ode(func, y0, t, adjoint="direct").ys
    (gy,) = torch.autograd.grad(ys[-1].pow(2).sum(), y0, create_graph=True)
    assert torch.autograd.grad(gy.sum(), next(func.parameters()))[0].abs().max() > 1e-3   # it exists
    ys = nde.solve_ode(func, y0, t, adjoint=adjoint).ys
    with pytest.raises(RuntimeError, match="second derivatives .* not supported; use the 'direct'"):
        torch.autograd.grad(ys[-1].pow(2).sum(), y0, create_graph=True)
    (first,) = torch.autograd.grad(ys[-1].pow(2).sum(), y0)   # first derivatives are unaffected
    torch.testing.assert_close(first, gy.detach(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("adjoint", ["backsolve", "discrete"])
def test_a_tensor_listed_twice_in_adjoint_params_gets_its_gradient_once(adjoint):
    """The gradient of a parameter does not depend on how often it is listed (it was counted once per entry, as in
    torchdiffeq); checked against direct backprop."""
    func, y0, t = Field(), torch.tensor([[0.3, -0.2]], dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    weight = func.net[0].weight
    direct = torch.autograd.grad(nde.solve_ode(func, y0, t, rtol=1e-10, atol=1e-10).ys.sum(), weight)[0]
    twice = [weight] + list(func.parameters())
    ys = nde.solve_ode(func, y0, t, rtol=1e-10, atol=1e-10, adjoint=adjoint, adjoint_params=twice).ys
    (grad,) = torch.autograd.grad(ys.sum(), weight)
    torch.testing.assert_close(grad, direct, rtol=1e-6, atol=1e-8)
