import pytest
import torch

from benchmarks._common import saved_tensor_bytes
from nde.diffusion.adjoint import adjoint_sample
from nde.diffusion.dpm_solver import ddim
from nde.diffusion.mixtures import GaussianMixtureNoisePredictor, ring_mixture
from nde.diffusion.reference import probability_flow_reference
from nde.diffusion.networks import TimeMLP
from nde.diffusion.schedules import VPCosine, VPLinear


class PerturbedMixture(torch.nn.Module):
    """eps = exact ring-mixture eps + 0.1 MLP_theta(x, t, z): realistic dynamics with weights and a conditioning z."""

    def __init__(self, schedule):
        super().__init__()
        self.exact = GaussianMixtureNoisePredictor(ring_mixture(variance=0.05), schedule)
        self.net = TimeMLP(2, schedule, hidden=16, depth=2, cond_dim=3).double()
        self.cond = torch.tensor([0.3, -0.2, 0.5], dtype=torch.float64, requires_grad=True)

    def forward(self, x, t):
        return self.exact(x, t) + 0.1 * self.net(x, t, self.cond.expand(x.shape[0], 3))


@pytest.fixture
def setup():
    torch.manual_seed(0)
    schedule = VPLinear()
    model = PerturbedMixture(schedule)
    x_T = torch.randn(4, 2, dtype=torch.float64)
    target = torch.tensor([3.0, 0.0], dtype=torch.float64)
    return schedule, model, x_T, target


def gradients(setup, gradient, steps, method="rk4", **options):
    schedule, model, x_T, target = setup
    x_T = x_T.clone().requires_grad_(True)
    model.zero_grad()
    model.cond.grad = None
    x_0 = adjoint_sample(model, x_T, schedule, steps=steps, method=method, gradient=gradient, params=[model.cond],
                         **options)
    loss = (x_0 - target).pow(2).sum()
    loss.backward()
    weight = model.net.body[0].weight
    return loss.detach(), x_T.grad, model.cond.grad.clone(), weight.grad.clone()


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_euler_on_rho_ode_is_ddim(setup):
    schedule, model, x_T, _ = setup
    with torch.no_grad():
        torch.testing.assert_close(adjoint_sample(model, x_T, schedule, steps=12, method="euler"),
                                   ddim(model, x_T, schedule, 12), rtol=1e-12, atol=1e-12)


def test_adjoint_matches_backprop_and_finite_differences(setup):
    _, adj_x, adj_z, adj_w = gradients(setup, "backsolve", 60)
    loss, bp_x, bp_z, bp_w = gradients(setup, "direct", 60)
    for a, b in ((adj_x, bp_x), (adj_z, bp_z), (adj_w, bp_w)):
        assert rel(a, b) < 1e-3  # continuous vs discrete gradient: O(h^4) apart with RK4
    # central finite differences of the same discretisation for one coordinate of x_T and of z
    schedule, model, x_T, target = setup
    h = 1e-6
    def loss_at(x, cond):
        model.cond = cond
        with torch.no_grad():
            return (adjoint_sample(model, x, schedule, steps=60, gradient="direct") - target).pow(2).sum()
    cond0 = model.cond.detach().clone()
    e = torch.zeros_like(x_T); e[1, 0] = h
    fd_x = (loss_at(x_T + e, cond0) - loss_at(x_T - e, cond0)) / (2 * h)
    ez = torch.zeros_like(cond0); ez[2] = h
    fd_z = (loss_at(x_T, cond0 + ez) - loss_at(x_T, cond0 - ez)) / (2 * h)
    assert abs(fd_x - bp_x[1, 0]) < 1e-6 * (1 + abs(fd_x))
    assert abs(fd_z - bp_z[2]) < 1e-6 * (1 + abs(fd_z))


def test_discrete_adjoint_equals_backprop(setup):
    _, d_x, d_z, d_w = gradients(setup, "discrete", 20)
    _, bp_x, bp_z, bp_w = gradients(setup, "direct", 20)
    for a, b in ((d_x, bp_x), (d_z, bp_z), (d_w, bp_w)):
        assert rel(a, b) < 1e-10



@pytest.mark.parametrize("gradient, steps, tol", [("discrete", 20, 1e-10), ("backsolve", 60, 1e-3)])
def test_tensors_listed_twice_in_params_get_their_gradient_once(setup, gradient, steps, tol):
    """params=[cond, cond, *model.parameters()] (the weights are found automatically) used to double the gradients of
    cond and of every weight in the adjoint modes; backprop through the same steps counts each once."""
    schedule, model, x_T, target = setup
    model.zero_grad()
    model.cond.grad = None
    x_0 = adjoint_sample(model, x_T, schedule, steps=steps, gradient=gradient,
                         params=[model.cond, model.cond, *model.parameters()])
    (x_0 - target).pow(2).sum().backward()
    grad_z, grad_w = model.cond.grad.clone(), model.net.body[0].weight.grad.clone()
    _, _, bp_z, bp_w = gradients(setup, "direct", steps)
    assert rel(grad_z, bp_z) < tol and rel(grad_w, bp_w) < tol

@pytest.fixture
def fine(setup):
    """Backprop through 200 RK4 steps: the reference gradient (discretisation error ~1e-8 relative)."""
    return gradients(setup, "direct", 200)


def test_adjoint_gradient_converges_to_fine_backprop(setup, fine):
    *_, fine_x, fine_z, fine_w = fine
    errors = [rel(gradients(setup, "backsolve", n)[1], fine_x) for n in (20, 40)]
    assert errors[1] < errors[0] / 8  # 4th order: 16x expected, 8x required
    assert errors[1] < 1e-3


def test_adaptive_adjoint(setup, fine):
    _, a_x, a_z, _ = gradients(setup, "backsolve", None, method="dopri5", rtol=1e-7, atol=1e-7)
    _, f_x, f_z, _ = fine
    assert rel(a_x, f_x) < 1e-3 and rel(a_z, f_z) < 1e-3


@pytest.mark.parametrize("variable", ["lambda", "rho"])
def test_adjoint_saved_memory_constant_in_steps_backprop_grows(setup, variable):
    schedule, model, x_T, _ = setup
    x_T = x_T.clone().requires_grad_(True)
    state = x_T.numel() * x_T.element_size()

    def saved(gradient, steps):
        return saved_tensor_bytes(lambda: adjoint_sample(model, x_T, schedule, steps=steps, gradient=gradient,
                                                         params=[model.cond], variable=variable))
    adj = [saved("backsolve", n) for n in (10, 40)]
    direct = [saved("direct", n) for n in (10, 40)]
    if variable == "lambda":
        assert adj[0] == adj[1]
    else:  # the rho grid is the output grid: the solver returns (and the backsolve keeps) one state per step
        assert adj[1] - adj[0] <= 30 * (state + x_T.element_size())
    assert direct[1] - direct[0] > 30 * 10 * state  # backprop keeps every stage's activations


def test_lambda_and_rho_variables_agree(setup):
    schedule, model, x_T, _ = setup
    with torch.no_grad():
        a = adjoint_sample(model, x_T, schedule, steps=80, variable="lambda")
        b = adjoint_sample(model, x_T, schedule, steps=80, variable="rho")
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_bad_arguments(setup):
    schedule, model, x_T, _ = setup
    with pytest.raises(ValueError, match="gradient"):
        adjoint_sample(model, x_T, schedule, gradient="magic")
    with pytest.raises(ValueError, match="fixed-step"):
        adjoint_sample(model, x_T, schedule, steps=None, method="rk4")
    with pytest.raises(ValueError, match="steps=None"):
        adjoint_sample(model, x_T, schedule, steps=10, method="dopri5")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("variable", ["rho", "lambda"])
def test_half_precision_x_T_agrees_with_float32(dtype, variable):
    """The rho/lambda grid and t(rho), alpha stay in float64/float32 whatever x_T's dtype (the grid cast to x_T's
    dtype gave NaN on VPCosine); only the model sees x_T's dtype, so the run agrees with the float32 one to a unit
    roundoff of the half format."""
    schedule = VPCosine()
    exact = GaussianMixtureNoisePredictor(ring_mixture(), schedule)
    model = lambda x, t: exact(x.double(), t.double()).to(x.dtype)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    reference = adjoint_sample(model, x_T, schedule, 20, gradient="direct", variable=variable)
    x_half = x_T.to(dtype).requires_grad_(True)
    x_0 = adjoint_sample(model, x_half, schedule, 20, variable=variable)
    assert x_0.dtype == dtype
    assert rel(x_0.float(), reference) < torch.finfo(dtype).eps
    x_0.float().pow(2).sum().backward()
    assert x_half.grad.dtype == dtype and bool(torch.isfinite(x_half.grad).all())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_reference_agrees_with_float32(dtype):
    """probability_flow_reference computed lambda and alpha in x_T's dtype (NaN on VPCosine in half precision)."""
    schedule = VPCosine()
    exact = GaussianMixtureNoisePredictor(ring_mixture(), schedule)
    model = lambda x, t: exact(x.double(), t.double()).to(x.dtype)
    x_T = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    reference = probability_flow_reference(model, x_T, schedule, rtol=1e-5, atol=1e-5)
    x_0 = probability_flow_reference(model, x_T.to(dtype), schedule, rtol=1e-5, atol=1e-5)
    assert x_0.dtype == dtype and rel(x_0.float(), reference) < torch.finfo(dtype).eps
