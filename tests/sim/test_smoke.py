"""Smoke grid: gradients vs central finite differences (float64), closed-form behaviour,
projection, O(1)-in-iterations pressure memory, input errors."""
import numpy as np
import pytest
import torch

from sim.engine.smoke import SmokeConfig, SmokeGrid
from sim.engine.smoke3d import Smoke3DConfig, SmokeGrid3D

N, B, T = 10, 2, 5


def _grid(**kw):
    cfg = dict(resolution=N, jacobi_iters=8, buoyancy=0.05, jet_radius=2.0, jet_source=0.1)
    cfg.update(kw)
    return SmokeGrid(SmokeConfig(**cfg), dtype=torch.float64)


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    v0 = 0.3 * torch.randn(B, N, N, 2, generator=g, dtype=torch.float64)
    q0 = torch.rand(B, N, N, generator=g, dtype=torch.float64)
    a = 0.5 * torch.randn(B, T, 2, generator=g, dtype=torch.float64)
    return [v0, q0, a]


@pytest.mark.parametrize("which", [0, 1, 2], ids=["v0", "q0", "actions"])
def test_gradient_matches_central_differences(which):
    grid = _grid()
    inputs = _inputs()
    g = torch.Generator().manual_seed(1)
    w_frames = torch.randn(B, T, N, N, generator=g, dtype=torch.float64)
    w_v = torch.randn(B, N, N, 2, generator=g, dtype=torch.float64)

    def loss(*xs):
        frames, v = grid.simulate(*xs)
        return (frames ** 2 * w_frames).sum() + (v * w_v).sum()

    xs = [x.clone().requires_grad_() for x in inputs]
    loss(*xs).backward()
    for k in range(2):
        direction = torch.randn(inputs[which].shape, generator=g, dtype=torch.float64)
        analytic = float((xs[which].grad * direction).sum())
        eps = 1e-6
        plus = [x.clone() for x in inputs]
        minus = [x.clone() for x in inputs]
        plus[which] += eps * direction
        minus[which] -= eps * direction
        with torch.no_grad():
            fd = float(loss(*plus) - loss(*minus)) / (2 * eps)
        assert abs(analytic - fd) <= 1e-4 * abs(fd), (analytic, fd)


def test_still_air_only_accumulates_the_jet_source():
    """Zero velocity, zero force, no buoyancy: q_t = q0 + t * source * g(x) exactly."""
    grid = _grid(buoyancy=0.0)
    v0 = torch.zeros(1, N, N, 2, dtype=torch.float64)
    q0 = torch.rand(1, N, N, dtype=torch.float64)
    frames, v = grid.simulate(v0, q0, torch.zeros(1, T, 2, dtype=torch.float64))
    steps = torch.arange(1, T + 1, dtype=torch.float64)[:, None, None]
    expected = q0 + steps * 0.1 * grid.jet_profile()
    torch.testing.assert_close(frames[0], expected, rtol=0, atol=1e-12)
    assert v.abs().max() == 0


def _interior_divergence(v):
    div = 0.5 * (v[:, 2:, 1:-1, 0] - v[:, :-2, 1:-1, 0] + v[:, 1:-1, 2:, 1] - v[:, 1:-1, :-2, 1])
    return div.abs().mean()


def test_projection_removes_divergence():
    """More Jacobi sweeps leave less divergence; converged, most of it is gone.

    (The collocated central-difference projection is exact only for smooth fields, so the
    field is a random coarse field upsampled bilinearly; the measured floor is ~0.22.)"""
    n = 24
    g = torch.Generator().manual_seed(3)
    coarse = torch.randn(1, 2, 4, 4, generator=g, dtype=torch.float64)
    v0 = torch.nn.functional.interpolate(coarse, size=(n, n), mode="bilinear", align_corners=True)
    v0 = v0.permute(0, 2, 3, 1).contiguous()
    remaining = []
    for iters in (10, 100, 1000):
        grid = _grid(resolution=n, jacobi_iters=iters, buoyancy=0.0, jet_source=0.0, dt=1e-3)
        _, v = grid.simulate(v0, torch.zeros(1, n, n, dtype=torch.float64), torch.zeros(1, 1, 2, dtype=torch.float64))
        remaining.append(float(_interior_divergence(v) / _interior_divergence(v0)))
    assert remaining[0] > remaining[1] > remaining[2]
    assert remaining[2] < 0.3


def test_pressure_solve_is_one_tape_entry_regardless_of_iterations():
    """The custom adjoint keeps tape length (and pressure memory) independent of Jacobi iterations."""
    from sim.engine import smoke

    lengths = []
    for iters in (5, 50):
        grid = _grid(jacobi_iters=iters)
        v0, q0, a = _inputs()
        frames = smoke.wp.zeros((B, T, N, N), dtype=grid.kernels.scalar, requires_grad=True)
        wv0 = smoke.wp.from_torch(v0, dtype=grid.kernels.vec, requires_grad=True)
        wq0 = smoke.wp.from_torch(q0, dtype=grid.kernels.scalar, requires_grad=True)
        wa = smoke.wp.from_torch(a, dtype=grid.kernels.vec, requires_grad=True)
        tape, _, _ = grid._rollout(wv0, wq0, wa, frames, record=True)
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
    with pytest.raises(ValueError, match="actions"):
        grid.simulate(v0, q0, a[:1])
    with pytest.raises(TypeError, match="dtype"):
        grid.simulate(v0.float(), q0, a)
    with pytest.raises(ValueError, match="resolution"):
        SmokeConfig(resolution=2)
    with pytest.raises(ValueError, match="jacobi_iters"):
        SmokeConfig(jacobi_iters=0)


@pytest.mark.parametrize("which, name", [(0, "v0"), (1, "q0")])
def test_non_finite_state_is_rejected(which, name):
    # the semi-Lagrangian clamp used to turn a NaN velocity into finite but wrong frames
    inputs = _inputs()
    inputs[which].view(-1)[5] = float("nan")
    with pytest.raises(ValueError, match=f"{name} contains NaN"):
        _grid().simulate(*inputs)


@pytest.mark.parametrize("field, value", [("dt", float("inf")), ("buoyancy", float("nan")),
                                          ("jet_source", float("nan")), ("jet_source", float("inf")),
                                          ("jet_radius", float("inf"))])
def test_config_rejects_non_finite_values(field, value):
    with pytest.raises(ValueError, match=field):
        SmokeConfig(**{field: value})
    with pytest.raises(ValueError, match=field):
        Smoke3DConfig(**{field: value})


def test_config_rejects_a_negative_jet_source():
    """A negative source drained q below zero: the smoke's total mass went negative (a centre of mass sum q x / sum q
    then means nothing)."""
    with pytest.raises(ValueError, match="jet_source must be a finite number >= 0"):
        SmokeConfig(jet_source=-0.1)
    with pytest.raises(ValueError, match="jet_source must be a finite number >= 0"):
        Smoke3DConfig(jet_source=-0.1)


def test_second_backward_and_double_backward_raise_clear_errors():
    v0, q0, a = (t.requires_grad_() for t in _inputs())
    frames, _ = _grid().simulate(v0, q0, a)
    frames.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward twice"):
        frames.sum().backward()
    frames, _ = _grid().simulate(v0, q0, a)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(frames.sum(), a, create_graph=True)


@pytest.mark.parametrize("which", [0, 1, 2], ids=["v0", "q0", "actions"])
def test_input_modified_in_place_before_backward_raises(which):
    """The Warp tape reads the inputs' memory in backward: scaling q0 in place after simulate
    silently changed d/dv0 (by up to 2.5 where its largest entry is 2.8); torch raises for its own
    saved tensors, and so must simulate."""
    inputs = _inputs()
    inputs[0].requires_grad_()
    frames, _ = _grid().simulate(*inputs)
    with torch.no_grad():
        inputs[which].mul_(2.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        frames.pow(2).sum().backward()


@pytest.mark.parametrize("grid_class, shape", [(SmokeGrid, (N, N)), (SmokeGrid3D, (4, 4, 4))])
def test_no_tape_is_recorded_with_grad_mode_off(grid_class, shape):
    """Under torch.no_grad an input requiring grad made simulate record the whole tape (per-step
    buffers and their gradients; 1.7x the time of a plain forward at 64^2), which no backward uses."""
    grid = grid_class(SmokeConfig(resolution=N) if grid_class is SmokeGrid else Smoke3DConfig(resolution=4),
                      dtype=torch.float64)
    recorded = []
    rollout = grid._rollout
    grid._rollout = lambda *args: recorded.append(args[-1]) or rollout(*args)
    v0, q0 = torch.zeros(1, *shape, len(shape), dtype=torch.float64), torch.zeros(1, *shape, dtype=torch.float64)
    actions = torch.zeros(1, 2, len(shape), dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        frames, _ = grid.simulate(v0, q0, actions)
    assert recorded == [False] and not frames.requires_grad
    grid.simulate(v0, q0, actions)
    assert recorded == [False, True]


def test_config_types_are_checked_and_numpy_ints_accepted():
    """np.int64 resolution was rejected, jacobi_iters=True accepted, dt='1' and jet_position=0.5 failed
    inside math / len()."""
    cfg = SmokeConfig(resolution=np.int64(8), jacobi_iters=np.int64(4))
    assert type(cfg.resolution) is int and type(cfg.jacobi_iters) is int
    for field, value, message in (("resolution", True, "resolution must be an int"),
                                  ("jacobi_iters", True, "jacobi_iters must be an int"),
                                  ("dt", "1", "dt must be a finite positive number"),
                                  ("buoyancy", None, "buoyancy must be a finite number"),
                                  ("jet_position", 0.5, "jet_position must be two fractions")):
        with pytest.raises(ValueError, match=message):
            SmokeConfig(**{field: value})
    with pytest.raises(ValueError, match="jet_position must be three fractions"):
        Smoke3DConfig(jet_position=(0.5, 0.5))


@pytest.mark.parametrize("grid_class, shape", [(SmokeGrid, (N, N)), (SmokeGrid3D, (4, 4, 4))])
def test_empty_batch_with_inputs_requiring_grad(grid_class, shape):
    """B = 0 ran without grad but failed in Warp's tape ('Array [] ... is missing a gradient array')
    when an input required grad: an empty batch gives empty outputs and empty gradients."""
    grid = grid_class(SmokeConfig(resolution=N) if grid_class is SmokeGrid else Smoke3DConfig(resolution=4),
                      dtype=torch.float64)
    inputs = [torch.zeros(0, *shape, len(shape), dtype=torch.float64, requires_grad=True),
              torch.zeros(0, *shape, dtype=torch.float64, requires_grad=True),
              torch.zeros(0, 3, len(shape), dtype=torch.float64, requires_grad=True)]
    frames, v = grid.simulate(*inputs)
    assert frames.shape == (0, 3, *shape) and v.shape == (0, *shape, len(shape))
    (frames.sum() + v.sum()).backward()
    assert [t.grad.shape for t in inputs] == [t.shape for t in inputs]
