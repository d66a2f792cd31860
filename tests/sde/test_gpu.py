"""CUDA: the same solve on GPU and CPU agrees (same Brownian increments, moved to the device)."""
import pytest
import torch

from nde.sde import sdeint, sdeint_adjoint
from tests.sde.models import NeuralSDE


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method,adjoint", [("reversible_heun", True), ("midpoint", False)])
def test_cuda_matches_cpu(method, adjoint):
    torch.manual_seed(0)
    sde = NeuralSDE("stratonovich")
    y0 = torch.randn(8, 3, dtype=torch.float64)
    dw = torch.randn(20, 8, 3, dtype=torch.float64) * 0.05 ** 0.5

    def bm_on(device):
        grid = [0.05 * k for k in range(21)]
        table = {(round(a, 12), round(b, 12)): dw[k].to(device) for k, (a, b) in enumerate(zip(grid[:-1], grid[1:]))}
        return lambda ta, tb: table[(round(float(ta), 12), round(float(tb), 12))]

    solve = sdeint_adjoint if adjoint else sdeint
    out = {}
    for device in ("cpu", "cuda"):
        model = sde.to(device)
        y = y0.to(device).requires_grad_(True)
        ys = solve(model, y, [0.0, 1.0], bm=bm_on(device), method=method, dt=0.05)
        grad, = torch.autograd.grad(ys[-1].pow(2).sum(), y)
        out[device] = (ys.detach().cpu(), grad.cpu())
    for a, b in zip(out["cpu"], out["cuda"]):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("area", ["none", "space-time"])
def test_cuda_path_does_not_depend_on_how_queries_are_grouped(area):
    """On CUDA too, a grid drawn at once equals the same intervals queried one by one (the H100
    benchmark's 'same path' rows once differed by 3.1 because of this)."""
    from nde.sde import BrownianPath
    grid = [k / 8 for k in range(9)]
    a, b = (BrownianPath(0.0, 1.0, (512, 16), device="cuda", entropy=5, levy_area_approximation=area)
            for _ in range(2))
    whole = a.increments(grid)
    one_by_one = torch.stack([b(s, t) for s, t in zip(grid[:-1], grid[1:])])
    torch.testing.assert_close(whole, one_by_one, rtol=0, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_default_path_replays_and_reversible_heun_memory_is_flat():
    """The default fixed-step path (BrownianGrid) on CUDA: an increment asked for twice is the same
    (re-seeded CUDA generator), and the reversible-Heun forward+backward peak does not grow with steps."""
    from nde.sde import BrownianGrid
    bm = BrownianGrid([k / 8 for k in range(9)], (512, 16), device="cuda", entropy=5)
    first = [bm.increment(k) for k in range(8)]
    assert all(torch.equal(bm.increment(k), first[k]) for k in reversed(range(8)))
    torch.manual_seed(0)
    sde = NeuralSDE("stratonovich").cuda().float()
    y0 = torch.randn(512, 3, device="cuda")
    peaks = []
    for steps in (100, 1000):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        sdeint_adjoint(sde, y0, [0.0, 1.0], method="reversible_heun", dt=1.0 / steps)[-1].sum().backward()
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated() - base)
    assert peaks[1] <= 1.1 * peaks[0] + 2 ** 20, peaks


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tree_is_a_function_of_the_seed_and_has_the_brownian_variance():
    """BrownianTree on CUDA: the same value whatever the query order (re-seeded CUDA generator per
    node), and Var W(t) = t."""
    from nde.sde import BrownianTree
    times = [0.9, 0.1, 0.55, 0.3]
    a, b = (BrownianTree(0.0, 1.0, (100_000,), dtype=torch.float64, device="cuda", entropy=5) for _ in range(2))
    first = {t: a(t) for t in times}
    for t in sorted(times):
        assert torch.equal(b(t), first[t])
        assert abs(first[t].var().item() / t - 1) < 0.03
