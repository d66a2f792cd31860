"""The SDE benchmark's floor loops compute what nde's solvers compute, so torchsde / floor bounds a solver."""
import pytest
import torch

pytest.importorskip("torchsde")
from benchmarks.sde import NeuralSDE, _calls, _floor_calls  # noqa: E402


# The benchmark's MLP diffusion is not element-wise; both loops use the same diagonal-noise formula.
@pytest.mark.filterwarnings("ignore:.*cross-derivatives")
@pytest.mark.parametrize("method", ["euler", "milstein"])
def test_floor_loop_matches_nde_solution_and_gradients(method):
    torch.manual_seed(0)
    sde = NeuralSDE("ito", state=3, hidden=8).double()
    y0 = torch.randn(5, 3, dtype=torch.float64)
    floor_forward, floor_inference, _ = _floor_calls(sde, y0, method, 20)
    nde_forward, nde_inference, _ = _calls(sde, y0, method, False, 20, "nde", "same path", "cpu")
    torch.testing.assert_close(floor_inference(), nde_inference()[-1], rtol=0, atol=1e-12)
    params = list(sde.parameters())
    floor_grads = torch.autograd.grad(floor_forward().pow(2).mean(), params)
    nde_grads = torch.autograd.grad(nde_forward()[-1].pow(2).mean(), params)
    for floor_grad, nde_grad in zip(floor_grads, nde_grads):
        torch.testing.assert_close(floor_grad, nde_grad, rtol=0, atol=1e-12)
