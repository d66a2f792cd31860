"""3-D smoke grid: gradients vs central finite differences (float64), closed-form behaviour,
projection, O(1)-in-iterations pressure tape, input errors."""
import pytest
import torch

from sim.engine.smoke3d import Smoke3DConfig, SmokeGrid3D

N, B, T = 6, 2, 4


def _grid(**kw):
    cfg = dict(resolution=N, jacobi_iters=6, buoyancy=0.05, jet_radius=1.5, jet_source=0.1,
               jet_position=(0.2, 0.5, 0.4))
    cfg.update(kw)
    return SmokeGrid3D(Smoke3DConfig(**cfg), dtype=torch.float64)


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    v0 = 0.3 * torch.randn(B, N, N, N, 3, generator=g, dtype=torch.float64)
    q0 = torch.rand(B, N, N, N, generator=g, dtype=torch.float64)
    a = 0.5 * torch.randn(B, T, 3, generator=g, dtype=torch.float64)
    return [v0, q0, a]


@pytest.mark.parametrize("which", [0, 1, 2], ids=["v0", "q0", "actions"])
def test_gradient_matches_central_differences(which):
    grid = _grid()
    inputs = _inputs()
    g = torch.Generator().manual_seed(1)
    w_frames = torch.randn(B, T, N, N, N, generator=g, dtype=torch.float64)
    w_v = torch.randn(B, N, N, N, 3, generator=g, dtype=torch.float64)

    def loss(*xs):
        frames, v = grid.simulate(*xs)
        return (frames ** 2 * w_frames).sum() + (v * w_v).sum()

    xs = [x.clone().requires_grad_() for x in inputs]
    loss(*xs).backward()
    for _ in range(2):
        direction = torch.randn(inputs[which].shape, generator=g, dtype=torch.float64)
        analytic = float((xs[which].grad * direction).sum())
        eps = 1e-6
        plus = [x.clone() for x in inputs]
        minus = [x.clone() for x in inputs]
        plus[which] += eps * direction
        minus[which] -= eps * direction
        with torch.no_grad():
            fd = float(loss(*plus) - loss(*minus)) / (2 * eps)
        assert abs(fd) > 1e-6
        assert abs(analytic - fd) <= 1e-4 * abs(fd), (analytic, fd)


def test_still_air_only_accumulates_the_jet_source():
    """Zero velocity, zero force, no buoyancy: q_t = q0 + t * source * g(x) exactly."""
    grid = _grid(buoyancy=0.0)
    v0 = torch.zeros(1, N, N, N, 3, dtype=torch.float64)
    q0 = torch.rand(1, N, N, N, dtype=torch.float64)
    frames, v = grid.simulate(v0, q0, torch.zeros(1, T, 3, dtype=torch.float64))
    steps = torch.arange(1, T + 1, dtype=torch.float64)[:, None, None, None]
    torch.testing.assert_close(frames[0], q0 + steps * 0.1 * grid.jet_profile(), rtol=0, atol=1e-12)
    assert v.abs().max() == 0


def test_uniform_flow_translates_the_scalar_by_whole_cells():
    """A uniform velocity of one cell per step along z shifts q by one cell: semi-Lagrangian
    advection is exact for integer displacements. The field's divergence is non-zero only in the
    wall layers k = 0 and k = n - 1, so one Jacobi sweep gives a pressure there only and the
    projection leaves the velocity of layers 2 .. n-3 untouched."""
    n = 8
    grid = _grid(resolution=n, jacobi_iters=1, buoyancy=0.0, jet_source=0.0)
    v0 = torch.zeros(1, n, n, n, 3, dtype=torch.float64)
    v0[..., 2] = 1.0
    q0 = torch.rand(1, n, n, n, dtype=torch.float64)
    frames, v = grid.simulate(v0, q0, torch.zeros(1, 1, 3, dtype=torch.float64))
    torch.testing.assert_close(v[0, :, :, 2:-2], v0[0, :, :, 2:-2], rtol=0, atol=0)
    torch.testing.assert_close(frames[0, 0, :, :, 2:-2], q0[0, :, :, 1:-3], rtol=0, atol=1e-12)


def _interior_divergence(v):
    div = 0.5 * (v[:, 2:, 1:-1, 1:-1, 0] - v[:, :-2, 1:-1, 1:-1, 0] + v[:, 1:-1, 2:, 1:-1, 1]
                 - v[:, 1:-1, :-2, 1:-1, 1] + v[:, 1:-1, 1:-1, 2:, 2] - v[:, 1:-1, 1:-1, :-2, 2])
    return div.abs().mean()


def test_projection_removes_divergence():
    """More Jacobi sweeps leave less divergence of a smooth random field."""
    n = 12
    g = torch.Generator().manual_seed(3)
    coarse = torch.randn(1, 3, 3, 3, 3, generator=g, dtype=torch.float64)
    v0 = torch.nn.functional.interpolate(coarse, size=(n, n, n), mode="trilinear", align_corners=True)
    v0 = v0.permute(0, 2, 3, 4, 1).contiguous()
    remaining = []
    for iters in (5, 50, 400):
        grid = _grid(resolution=n, jacobi_iters=iters, buoyancy=0.0, jet_source=0.0, dt=1e-3)
        _, v = grid.simulate(v0, torch.zeros(1, n, n, n, dtype=torch.float64),
                             torch.zeros(1, 1, 3, dtype=torch.float64))
        remaining.append(float(_interior_divergence(v) / _interior_divergence(v0)))
    assert remaining[0] > remaining[1] > remaining[2]
    assert remaining[2] < 0.3


def test_pressure_solve_is_one_tape_entry_regardless_of_iterations():
    from sim.engine import smoke3d

    lengths = []
    for iters in (3, 30):
        grid = _grid(jacobi_iters=iters)
        v0, q0, a = _inputs()
        wp = smoke3d.wp
        frames = wp.zeros((B * T, N, N, N), dtype=grid.kernels.scalar, requires_grad=True)
        args = [wp.from_torch(v0, dtype=grid.kernels.vec, requires_grad=True),
                wp.from_torch(q0, dtype=grid.kernels.scalar, requires_grad=True),
                wp.from_torch(a, dtype=grid.kernels.vec, requires_grad=True)]
        tape, _, _ = grid._rollout(*args, frames, record=True)
        lengths.append(len(tape.launches))
    assert lengths[0] == lengths[1]


def test_bad_inputs_raise_clear_errors():
    grid = _grid()
    v0, q0, a = _inputs()
    bad = a.clone()
    bad[0, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="actions"):
        grid.simulate(v0, q0, bad)
    with pytest.raises(ValueError, match="q0"):
        grid.simulate(v0, q0[:, :-1], a)
    with pytest.raises(ValueError, match="v0"):
        grid.simulate(v0[..., :2], q0, a)
    with pytest.raises(ValueError, match="actions"):
        grid.simulate(v0, q0, a[..., :2])
    with pytest.raises(TypeError, match="dtype"):
        grid.simulate(v0.float(), q0, a)
    with pytest.raises(ValueError, match="jet_position"):
        Smoke3DConfig(jet_position=(0.5, 0.5))
    with pytest.raises(ValueError, match="resolution"):
        Smoke3DConfig(resolution=3)
