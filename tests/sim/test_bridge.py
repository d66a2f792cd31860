"""torch bridge: gradients through mpm_rollout vs finite differences (float64), Adam
reduces a task loss, float32 agrees with float64, input validation."""
import warnings

import numpy as np
import pytest
import torch
import warp as wp

from sim.bridge import mpm_continue, mpm_rollout, rotation_2d, tool_path
from sim.engine import (ELASTIC, VISCOUS_LIQUID, WATER, MPMConfig, MPMSimulator, ParticleSet,
                        SimulationError, Tool, ToolShape)

wp.config.quiet = True


def water_and_paddle(dtype="float64", steps=4, sps=5, segment=None, materials=(WATER,)):
    axes = [np.arange(0.25, 0.45, 1 / 32) + 1 / 64, np.arange(0.12, 0.3, 1 / 32) + 1 / 64]
    x = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    cfg = MPMConfig(dim=2, n_grid=16, dt=1e-3, substeps_per_step=sps, max_steps=steps, dtype=dtype,
                    segment_substeps=segment)
    paddle = Tool(ToolShape.BOX, (0.02, 0.06), softness=100.0)
    return MPMSimulator(cfg, ParticleSet(x=x, material=np.zeros(len(x), int)), list(materials), [paddle])


START = torch.tensor([[0.2, 0.22]], dtype=torch.float64)


def task_loss(sim, actions, E=None, viscosity=None, x0=None):
    c = sim.config
    pos = tool_path(START.to(actions), actions, c.substeps_per_step, c.dt * 10)
    rot = rotation_2d(torch.linspace(0, 0.3, pos.shape[0]).to(actions))[:, None]
    xs, vs = mpm_rollout(sim, actions.shape[0], tool_pos=pos, tool_rot=rot, E=E, viscosity=viscosity, x0=x0)
    return ((xs[1:, :, 0] - 0.6) ** 2).mean() + 0.01 * (vs[-1] ** 2).mean()


def fd_check(f, t, seed=0, eps=1e-6):
    direction = torch.randn(t.shape, dtype=t.dtype, generator=torch.Generator().manual_seed(seed))
    t = t.detach().requires_grad_()
    f(t).backward()
    analytic = (t.grad * direction).sum().item()
    with torch.no_grad():
        fd = ((f(t + eps * direction) - f(t - eps * direction)) / (2 * eps)).item()
    return abs(analytic - fd) / abs(fd)


def test_action_gradient_matches_finite_differences():
    sim = water_and_paddle(segment=6)
    actions = 0.5 * torch.randn(4, 1, 2, dtype=torch.float64)
    assert fd_check(lambda a: task_loss(sim, a), actions) < 1e-4


def test_parameter_and_initial_state_gradients():
    sim = water_and_paddle(materials=(VISCOUS_LIQUID,))
    actions = 0.5 * torch.randn(4, 1, 2, dtype=torch.float64)
    E = torch.tensor([400.0], dtype=torch.float64)
    visc = torch.tensor([0.5], dtype=torch.float64)
    x0 = wp.to_torch(sim.x0).clone()
    assert fd_check(lambda e: task_loss(sim, actions, E=e, viscosity=visc), E, eps=1e-3) < 1e-4
    assert fd_check(lambda v: task_loss(sim, actions, E=E, viscosity=v), visc, eps=1e-5) < 1e-4
    assert fd_check(lambda x: task_loss(sim, actions, x0=x), x0) < 1e-4


def test_gradients_returned_in_input_dtype():
    sim = water_and_paddle()
    actions = (0.5 * torch.randn(4, 1, 2)).requires_grad_()  # float32 into a float64 simulator
    task_loss(sim, actions).backward()
    assert actions.grad.dtype == torch.float32 and torch.isfinite(actions.grad).all()


def test_adam_recovers_known_actions_float32():
    # inverse problem: the target trajectory is produced by known paddle velocities
    sim = water_and_paddle(dtype="float32", steps=6, sps=5, segment=10)
    start = torch.tensor([[0.235, 0.22]])  # the paddle touches the water from the start

    def rollout(actions):
        c = sim.config
        return mpm_rollout(sim, 6, tool_pos=tool_path(start, actions, c.substeps_per_step, c.dt))[0]

    with torch.no_grad():
        target = rollout(torch.tensor([3.0, 0.5]).expand(6, 1, 2))
    actions = torch.zeros(6, 1, 2, requires_grad=True)
    opt = torch.optim.Adam([actions], lr=0.3)
    losses = []
    for _ in range(20):
        loss = 1e6 * ((rollout(actions) - target) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]


def test_float32_matches_float64_forward():
    a = 0.5 * torch.randn(4, 1, 2, dtype=torch.float64)
    out64 = task_loss(water_and_paddle("float64"), a).item()
    out32 = task_loss(water_and_paddle("float32"), a.float()).item()
    assert out32 == pytest.approx(out64, rel=1e-4)


def test_tool_path_and_rotation_helpers():
    v = torch.randn(3, 2, 2, dtype=torch.float64)
    start = torch.randn(2, 2, dtype=torch.float64)
    p = tool_path(start, v, 4, 0.1)
    assert p.shape == (13, 2, 2)
    expected = [start]
    for s in range(12):
        expected.append(expected[-1] + 0.1 * v[s // 4])
    assert torch.allclose(p, torch.stack(expected))
    R = rotation_2d(torch.tensor([0.3, -1.2], dtype=torch.float64))
    assert torch.allclose(R @ R.transpose(-1, -2), torch.eye(2, dtype=torch.float64).expand(2, 2, 2))
    assert torch.allclose(R[0] @ torch.tensor([1.0, 0.0], dtype=torch.float64),
                          torch.tensor([np.cos(0.3), np.sin(0.3)], dtype=torch.float64))


def test_bad_inputs_name_the_argument():
    sim = water_and_paddle()
    c = sim.config
    good = tool_path(START, torch.zeros(4, 1, 2, dtype=torch.float64), c.substeps_per_step, c.dt)
    bad = good.clone()
    bad[3, 0, 1] = float("nan")
    with pytest.raises(ValueError, match="tool_pos contains NaN"):
        mpm_rollout(sim, 4, tool_pos=bad)
    with pytest.raises(ValueError, match="tool_pos moves tool 0"):
        mpm_rollout(sim, 4, tool_pos=good + torch.linspace(0, 2, good.shape[0], dtype=torch.float64)[:, None, None])
    with pytest.raises(ValueError, match="tool_pos must have shape"):
        mpm_rollout(sim, 3, tool_pos=good)
    with pytest.raises(ValueError, match="n_steps"):
        mpm_rollout(sim, 5, tool_pos=good)
    with pytest.raises(ValueError, match="E must have shape"):
        mpm_rollout(sim, 4, tool_pos=good, E=torch.ones(2, dtype=torch.float64))
    with pytest.raises(TypeError, match="x0 must be a torch.Tensor"):
        mpm_rollout(sim, 4, tool_pos=good, x0=np.zeros((sim.n_particles, 2)))
    with pytest.raises(ValueError, match="tool_pos is required"):
        mpm_rollout(sim, 4)
    with pytest.raises(TypeError, match="sim must be"):
        mpm_rollout(object(), 4, tool_pos=good)


def test_unstable_rollout_raises_simulation_error():
    sim = water_and_paddle(materials=(ELASTIC,))
    c = sim.config
    pos = tool_path(START, torch.zeros(4, 1, 2, dtype=torch.float64), c.substeps_per_step, c.dt)
    with pytest.raises(SimulationError):
        mpm_rollout(sim, 4, tool_pos=pos, E=torch.tensor([1e10], dtype=torch.float64))


@pytest.mark.gpu
def test_cuda_rollout_matches_cpu():
    """Same float64 rollout and gradient on CUDA and on CPU (atomics reorder sums on CUDA)."""
    if not wp.is_cuda_available():
        pytest.skip("no CUDA device")
    results = []
    for device in ("cpu", "cuda:0"):
        axes = [np.arange(0.25, 0.45, 1 / 32) + 1 / 64, np.arange(0.12, 0.3, 1 / 32) + 1 / 64]
        x = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
        cfg = MPMConfig(dim=2, n_grid=16, dt=1e-3, substeps_per_step=5, max_steps=4, dtype="float64",
                        device=device, segment_substeps=6)
        sim = MPMSimulator(cfg, ParticleSet(x=x, material=np.zeros(len(x), int)), [WATER],
                           [Tool(ToolShape.BOX, (0.02, 0.06), softness=100.0)])
        dev = wp.device_to_torch(wp.get_device(device))
        actions = (0.5 * torch.randn(4, 1, 2, dtype=torch.float64,
                                     generator=torch.Generator().manual_seed(0))).to(dev).requires_grad_()
        loss = task_loss(sim, actions)
        loss.backward()
        results.append((loss.item(), actions.grad.cpu()))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-10)
    assert torch.allclose(results[0][1], results[1][1], rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("segment", [None, 3])
def test_continue_step_by_step_equals_one_rollout_bitwise(segment):
    """mpm_continue from the kept state, one env step at a time (chunked by the checkpoint
    segment, here also 3 substeps, not aligned with the 5-substep env steps), gives bitwise the
    states of one rollout, including a rotating tool."""
    sim = water_and_paddle(dtype="float32", steps=4, segment=segment)
    c = sim.config
    actions = torch.tensor([[[0.5, 0.2]], [[0.8, -0.3]], [[0.1, 0.4]], [[-0.6, 0.0]]], dtype=torch.float64)
    pos = tool_path(START, actions, c.substeps_per_step, c.dt * 10).float()
    rot = rotation_2d(torch.linspace(0, 0.3, pos.shape[0], dtype=torch.float64))[:, None].float()
    with torch.no_grad():
        xs, vs = mpm_rollout(sim, 4, tool_pos=pos, tool_rot=rot)
    n = sim.n_particles
    state = (torch.as_tensor(sim.particles.x, dtype=torch.float32), torch.zeros(n, 2), torch.zeros(n, 2, 2),
             torch.eye(2).expand(n, 2, 2).contiguous())
    sps = c.substeps_per_step
    for t in range(4):
        rows = slice(t * sps, (t + 1) * sps + 1)
        x_step, state = mpm_continue(sim, t, 1, state, tool_pos=pos[rows], tool_rot=rot[rows])
        assert torch.equal(x_step[0], xs[t + 1]) and torch.equal(state[1], vs[t + 1])
    with pytest.raises(ValueError, match="start_step"):
        mpm_continue(sim, 4, 1, state, tool_pos=pos[:sps + 1], tool_rot=rot[:sps + 1])
    with pytest.raises(ValueError, match="state.C"):
        mpm_continue(sim, 0, 1, (state[0], state[1], state[2][:, :1], state[3]), tool_pos=pos[:sps + 1])
    with pytest.raises(ValueError, match="tool_pos"):
        mpm_continue(sim, 0, 1, state, tool_pos=pos[:sps])


def _paddle_path(sim, steps=4):
    c = sim.config
    return tool_path(START, torch.zeros(steps, 1, 2, dtype=torch.float64), c.substeps_per_step, c.dt)


def test_positions_outside_the_grid_are_rejected():
    sim = water_and_paddle()
    pos, x0 = _paddle_path(sim), torch.as_tensor(sim.particles.x)
    with pytest.raises(ValueError, match="x0 has .* particles outside the domain"):
        mpm_rollout(sim, 4, tool_pos=pos, x0=x0 - 3.0)
    n = sim.n_particles
    state = (x0 - 0.39, torch.zeros(n, 2), torch.zeros(n, 2, 2), torch.eye(2).expand(n, 2, 2).double())
    with pytest.raises(ValueError, match="state.x"):
        mpm_continue(sim, 0, 1, state, tool_pos=pos[:6])


def test_tool_rot_must_be_rotations():
    sim = water_and_paddle()
    pos = _paddle_path(sim)
    scaled = 1.01 * torch.eye(2, dtype=torch.float64).expand(pos.shape[0], 1, 2, 2)
    with pytest.raises(ValueError, match=r"tool_rot\[0, 0\] is not a rotation"):
        mpm_rollout(sim, 4, tool_pos=pos, tool_rot=scaled)
    n = sim.n_particles
    state = (torch.as_tensor(sim.particles.x), torch.zeros(n, 2), torch.zeros(n, 2, 2), torch.eye(2).expand(n, 2, 2))
    with pytest.raises(ValueError, match="tool_rot"):
        mpm_continue(sim, 0, 1, state, tool_pos=pos[:6], tool_rot=scaled[:6])


@pytest.mark.parametrize("name, value", [("E", -400.0), ("E", 0.0), ("nu", 0.5), ("nu", -1.0), ("viscosity", -5.0)])
def test_material_overrides_are_range_checked(name, value):
    sim = water_and_paddle()
    with pytest.raises(ValueError, match=f"{name} must"):
        mpm_rollout(sim, 4, tool_pos=_paddle_path(sim), **{name: torch.tensor([value], dtype=torch.float64)})


def test_overrides_hold_for_one_call_only():
    sim = water_and_paddle(materials=(VISCOUS_LIQUID,))
    pos = _paddle_path(sim)
    with torch.no_grad():
        reference = mpm_rollout(sim, 4, tool_pos=pos)[0]
        mpm_rollout(sim, 4, tool_pos=pos, E=torch.tensor([4000.0]), nu=torch.tensor([0.3]),
                    viscosity=torch.tensor([0.1]), x0=torch.as_tensor(sim.particles.x) + 0.01,
                    v0=torch.ones(sim.n_particles, 2))
        assert torch.equal(mpm_rollout(sim, 4, tool_pos=pos)[0], reference)


def test_backward_after_another_rollout_on_the_same_simulator():
    """A second rollout (or mpm_continue) between a rollout and its backward leaves its gradient exact."""
    sim = water_and_paddle()
    a1, a2 = (0.5 * torch.randn(4, 1, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(s))
              for s in (0, 1))

    def grad(actions, between=None):
        actions = actions.clone().requires_grad_()
        loss = task_loss(sim, actions)
        if between is not None:
            between()
        loss.backward()
        return actions.grad

    reference = grad(a1)
    assert not torch.equal(reference, grad(a2))
    assert torch.equal(grad(a1, between=lambda: task_loss(sim, a2)), reference)
    n = sim.n_particles
    state = (torch.as_tensor(sim.particles.x), torch.zeros(n, 2), torch.zeros(n, 2, 2), torch.eye(2).expand(n, 2, 2))
    continue_ = lambda: mpm_continue(sim, 0, 1, state, tool_pos=_paddle_path(sim, 1) + 0.01)
    assert torch.equal(grad(a1, between=continue_), reference)


def test_numpy_int_steps_and_double_backward():
    sim = water_and_paddle()
    pos = _paddle_path(sim).requires_grad_()
    xs, _ = mpm_rollout(sim, np.int64(4), tool_pos=pos)
    with pytest.raises(RuntimeError, match="double backward"):  # was torch's "does not require grad"
        torch.autograd.grad(xs.sum(), pos, create_graph=True)


def test_tool_path_arguments_are_checked():
    """substeps_per_step=0 silently gave one row, dt=nan NaN positions, 2.5 a torch signature error."""
    start, velocity = START, torch.ones(3, 1, 2, dtype=torch.float64)
    for sps in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="substeps_per_step must be an int >= 1"):
            tool_path(start, velocity, sps, 1e-3)
    for dt in (float("nan"), float("inf"), 0.0, "1e-3"):
        with pytest.raises(ValueError, match="dt must be a finite number > 0"):
            tool_path(start, velocity, 2, dt)
    with pytest.raises(TypeError, match="start must be a torch.Tensor"):
        tool_path(np.zeros((1, 2)), velocity, 2, 1e-3)
    assert torch.equal(tool_path(start, velocity, np.int64(2), 1e-3), tool_path(start, velocity, 2, 1e-3))


def _rest_state(sim, requires_grad=False):
    n = sim.n_particles
    x = torch.as_tensor(sim.particles.x).clone().requires_grad_(requires_grad)
    zeros = lambda *shape: torch.zeros(*shape, dtype=x.dtype)
    return x, zeros(n, 2), zeros(n, 2, 2), torch.eye(2, dtype=x.dtype).expand(n, 2, 2)


def test_continue_step_arguments_are_checked():
    """numpy ints are accepted (as by sim.forward); bools and floats are not; a step range outside
    the horizon is named (n_steps=0 used to be reported as a wrong tool_pos shape)."""
    sim = water_and_paddle()
    state, pos = _rest_state(sim), _paddle_path(sim, 1)
    xs, _ = mpm_continue(sim, np.int64(0), np.int64(1), state, tool_pos=pos)
    assert torch.equal(xs, mpm_continue(sim, 0, 1, state, tool_pos=pos)[0])
    for start_step, n_steps in ((0, True), (False, 1), (0, 1.0)):
        with pytest.raises(TypeError, match="start_step and n_steps must be ints"):
            mpm_continue(sim, start_step, n_steps, state, tool_pos=pos)
    for start_step, n_steps in ((0, 0), (-1, 1), (4, 1)):
        with pytest.raises(ValueError, match=f"got start_step={start_step}, n_steps={n_steps}"):
            mpm_continue(sim, start_step, n_steps, state, tool_pos=pos)


def test_continue_warns_that_inputs_requiring_grad_get_no_gradient():
    """mpm_continue dropped the gradient of a state or tool path that requires grad without a word."""
    sim = water_and_paddle()
    pos = _paddle_path(sim, 1)
    message = "mpm_continue does not propagate gradients: state.x requires grad.*mpm_rollout"
    with pytest.warns(UserWarning, match=message):
        xs, _ = mpm_continue(sim, 0, 1, _rest_state(sim, requires_grad=True), tool_pos=pos)
    assert not xs.requires_grad
    with pytest.warns(UserWarning, match="tool_pos requires grad"):
        mpm_continue(sim, 0, 1, _rest_state(sim), tool_pos=pos.clone().requires_grad_())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning without grad mode, nor for plain inputs
        with torch.no_grad():
            mpm_continue(sim, 0, 1, _rest_state(sim, requires_grad=True), tool_pos=pos)
        mpm_continue(sim, 0, 1, _rest_state(sim), tool_pos=pos)
