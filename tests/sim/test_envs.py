"""Environments: loss gradients vs central finite differences on tiny float64 instances,
determinism with a seed, the step path against the rollout path, render, action errors."""
import warnings

import numpy as np
import pytest
import torch

from sim.bridge import mpm_rollout
from sim.envs import (Gathering, GatheringConfig, LatteArt, LatteArtConfig, Pouring, PouringConfig, SmokeArt,
                      SmokeArtConfig, SmokeCirculation, SmokeCirculationConfig, SmokeMixing, SmokeMixingConfig,
                      SmokeTransport, SmokeTransportConfig)

TINY = dict(resolution=12, jacobi_iters=6, horizon=5)
MPM_TINY = dict(n_grid=16, horizon=5, substeps_per_step=4, dt=2e-3)
TASKS = {
    "circulation": lambda **kw: SmokeCirculation(SmokeCirculationConfig(**TINY), **kw),
    "smoke_art": lambda **kw: SmokeArt(SmokeArtConfig(**TINY, wave_period=4.0), **kw),
    "transport": lambda **kw: SmokeTransport(SmokeTransportConfig(**TINY, jet_radius=2.0, puff_radius=0.2), **kw),
    "mixing": lambda **kw: SmokeMixing(SmokeMixingConfig(**TINY, jet_radius=2.0), **kw),
    "gathering": lambda **kw: Gathering(GatheringConfig(
        **MPM_TINY, water=(0.2, 0.2, 0.7, 0.35), object_box=(0.4, 0.32, 0.5, 0.4), paddle_start=(0.28, 0.28)), **kw),
    "latte_art": lambda **kw: LatteArt(LatteArtConfig(
        **MPM_TINY, coffee=(0.2, 0.2, 0.8, 0.3), flux=2, nozzle_start=(0.4, 0.4)), **kw),
    "pouring": lambda **kw: Pouring(POUR_TINY, **kw),
}
POUR_TINY = PouringConfig(**MPM_TINY, cup=(0.25, 0.5, 0.45, 0.7), fill=0.1, wall=0.035, target=(0.45, 0.1, 0.8, 0.3))
MPM_TASKS = ("gathering", "latte_art", "pouring")


def _random_actions(env, batch, seed):
    g = torch.Generator().manual_seed(seed)
    bound = env.config.action_bound
    return 0.5 * bound * torch.randn(batch, env.horizon, env.action_dim, generator=g, dtype=env.dtype)


@pytest.mark.parametrize("name", TASKS)
def test_loss_gradient_matches_central_differences(name):
    env = TASKS[name](dtype=torch.float64)
    actions = _random_actions(env, 1, seed=1)
    mask = torch.tensor([1.0, 1.0, 0.5, 1.0, 1.0], dtype=torch.float64)
    x = actions.clone().requires_grad_()
    env.rollout_loss(x, mask).sum().backward()
    g = torch.Generator().manual_seed(2)
    for _ in range(2):
        direction = torch.randn(actions.shape, generator=g, dtype=torch.float64)
        analytic = float((x.grad * direction).sum())
        eps = 1e-6
        with torch.no_grad():
            fd = float(env.rollout_loss(actions + eps * direction, mask) - env.rollout_loss(actions - eps * direction, mask))
        fd /= 2 * eps
        assert abs(fd) > 1e-6, "degenerate check: the loss does not depend on the actions"
        assert abs(analytic - fd) <= 1e-4 * abs(fd), (analytic, fd)


@pytest.mark.parametrize("name", TASKS)
def test_cpu_episode_step_path_matches_rollout(name):
    """reset/step/loss over a whole episode at tiny size equals the batched rollout loss."""
    env = TASKS[name](batch_size=2)
    actions = _random_actions(env, 2, seed=3)
    env.reset(seed=5)
    for t in range(env.horizon):
        env.step(actions[:, t])
    stepped = env.loss()
    assert stepped.shape == (2,) and torch.isfinite(stepped).all()
    image = env.render(1)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    with pytest.raises(RuntimeError, match="reset"):
        env.step(actions[:, 0])
    env.reset(seed=5)
    with torch.no_grad():
        rolled = env.rollout_loss(actions)
    torch.testing.assert_close(stepped, rolled, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", TASKS)
def test_seed_determinism(name):
    env = TASKS[name]()
    actions = _random_actions(env, 1, seed=4)
    runs = []
    for seed in (7, 7, 8):
        env.reset(seed=seed)
        with torch.no_grad():
            runs.append(env.rollout_loss(actions))
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_actions_nan_raises_and_out_of_range_is_clamped():
    env = TASKS["transport"]()
    bound = env.config.action_bound
    with pytest.raises(ValueError, match="NaN"):
        env.step(torch.tensor([float("nan"), 0.0]))
    with pytest.raises(ValueError, match=r"got \(3,\)"):  # the given shape, not the expanded one
        env.step(torch.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        env.rollout_loss(torch.zeros(1, env.horizon + 1, 2))
    with pytest.raises(TypeError, match="action must be real-valued"):   # the cast dropped the imaginary part
        env.step(torch.tensor([0.1 + 0.5j, 0.0j]))
    with pytest.raises(TypeError, match="actions must be real-valued"):
        env.rollout_loss(torch.zeros(1, env.horizon, 2, dtype=torch.complex64))
    with pytest.raises(TypeError, match="action must be a tensor or array of numbers, got str"):
        env.step("a")
    big = torch.full((1, env.horizon, 2), 10.0 * bound)
    with torch.no_grad():
        torch.testing.assert_close(env.rollout_loss(big), env.rollout_loss(torch.full_like(big, bound)))
    with pytest.raises(ValueError, match="batch_size"):
        TASKS["transport"](batch_size=0)
    with pytest.raises(ValueError, match="horizon"):
        SmokeTransportConfig(horizon=0)
    with pytest.raises(ValueError, match="bin_size"):
        SmokeMixingConfig(resolution=10, bin_size=4)


@pytest.mark.parametrize("name", MPM_TASKS)
def test_mpm_step_is_constant_cost_and_bitwise_equal_to_the_rollout(name):
    """env.step continues from the kept engine state: every step runs exactly one step's
    substeps (independent of t), and the stepped states equal the replayed rollout bitwise."""
    env = TASKS[name](batch_size=2)
    actions = _random_actions(env, 2, seed=6)
    ran = []
    record = env.sim.record_segment
    env.sim.record_segment = lambda start, stop: (ran.append(stop - start), record(start, stop))[1]
    env.reset(seed=2)
    stepped = []
    for t in range(env.horizon):
        ran.clear()
        state = env.step(actions[:, t])
        assert sum(ran) == 2 * env.config.substeps_per_step  # two worlds, one step each
        stepped.append(state[1])
    env.sim.record_segment = record
    stepped = torch.stack(stepped, dim=1)
    with torch.no_grad():
        for b in range(2):
            seq = env.clamp_actions(actions[b])
            pos, rot, _ = env.tool_poses(seq, env.control_start())
            rot = None if rot is None else rot.float()
            xs, _ = mpm_rollout(env.sim, env.horizon, tool_pos=pos.float(), tool_rot=rot, x0=env._x0)
            assert torch.equal(stepped[b], xs[1:]), (stepped[b] - xs[1:]).abs().max()


def test_pouring_moves_liquid_into_the_receiving_cup_and_checks_its_inputs():
    env = TASKS["pouring"]()
    assert env.action_dim == 1 and env.sim.n_tools == 5
    with torch.no_grad():
        still = env.step_losses(torch.zeros(1, env.horizon, 1))
        tipped = env.step_losses(torch.full((1, env.horizon, 1), -env.config.action_bound))
    # at rest the liquid stays in the cup (loss ~ 1 per step); tipping towards the target lowers it
    torch.testing.assert_close(still, torch.ones_like(still), rtol=0.05, atol=0.0)
    assert float(tipped[0, -1]) < 0.9 * float(still[0, -1])
    inside = torch.tensor([[0.5, 0.2], [0.7, 0.25]]), torch.tensor([[0.5, 0.2], [0.2, 0.6]])
    assert float(env.delivered(env._x0)) == 0.0
    assert [float(env.delivered(x)) for x in inside] == [1.0, 0.5]
    with pytest.raises(ValueError, match="action must have shape"):
        env.step(torch.zeros(2))
    with pytest.raises(ValueError, match="NaN"):
        env.step(torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match="wall"):
        PouringConfig(n_grid=16, wall=0.01)
    with pytest.raises(ValueError, match="cup"):
        PouringConfig(cup=(0.4, 0.5, 0.3, 0.7))
    with pytest.raises(ValueError, match="target"):
        PouringConfig(target=(0.5, 0.3, 0.4, 0.1))
    with pytest.raises(ValueError, match="inside the target"):
        Pouring(PouringConfig(**{**POUR_TINY.__dict__, "target": (0.1, 0.1, 0.9, 0.9)}))
    moving = Pouring(PouringConfig(**{**POUR_TINY.__dict__, "translation": True}))
    assert moving.action_dim == 3
    pos, rot, end = moving.tool_poses(torch.tensor([[0.0, 1.0, 0.0]]), moving.control_start())
    shift = float(pos[-1, 0, 0] - pos[0, 0, 0])  # the walls translate with the pivot velocity
    assert abs(shift - moving.config.substeps_per_step * moving.config.dt) < 1e-12
    assert torch.equal(pos[:, 3:], pos[:1, 3:].expand_as(pos[:, 3:]))  # the receiving cup is static


@pytest.mark.parametrize("name", MPM_TASKS)
def test_batched_rollout_gradient_equals_per_world_gradients(name):
    """The B worlds share one simulator; each world's gradient must still be its own (the bridge
    recomputes a world's forward if the simulator ran another one before its backward)."""
    env = TASKS[name](dtype=torch.float64)
    actions = _random_actions(env, 2, seed=9)

    def grad(a, between=None):
        a = a.clone().requires_grad_()
        loss = env.rollout_loss(a).sum()
        if between is not None:
            between()
        loss.backward()
        return a.grad

    per_world = torch.cat([grad(actions[:1]), grad(actions[1:])])
    assert not torch.allclose(per_world[0], per_world[1])
    torch.testing.assert_close(grad(actions), per_world, rtol=1e-10, atol=1e-14)
    env.reset()
    torch.testing.assert_close(grad(actions[:1], between=lambda: env.step(actions[1, 0])), per_world[:1],
                               rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", ["transport", "gathering"])
def test_empty_batch_of_action_sequences_is_rejected(name):
    """An empty batch failed inside torch.stack on the MPM tasks ("stack expects a non-empty
    TensorList") and gave an empty loss on the smoke tasks."""
    env = TASKS[name]()
    for call in (env.rollout_loss, env.step_losses):
        with pytest.raises(ValueError, match=r"actions must have shape \(B>=1, .*got \(0, 5, 2\)"):
            call(torch.zeros(0, env.horizon, env.action_dim))


def test_mpm_positions_entering_the_simulator_are_checked():
    with pytest.raises(ValueError, match="init_jitter"):
        GatheringConfig(**MPM_TINY, init_jitter=-1.0)
    with pytest.raises(ValueError, match="init_jitter"):
        GatheringConfig(**MPM_TINY, init_jitter=float("nan"))
    config = GatheringConfig(**MPM_TINY, water=(0.2, 0.2, 0.7, 0.35), object_box=(0.4, 0.32, 0.5, 0.4),
                             paddle_start=(0.28, 0.28), init_jitter=50.0)
    with pytest.raises(ValueError, match="init_jitter=50.0 moves .* particles outside the domain"):
        Gathering(config)
    # a nozzle parked outside the domain: its milk is clamped into the domain (was a segfault)
    env = LatteArt(LatteArtConfig(**MPM_TINY, coffee=(0.2, 0.2, 0.8, 0.3), flux=2, nozzle_start=(1.2, 0.4)))
    with torch.no_grad():
        loss = env.rollout_loss(torch.zeros(1, env.horizon, 2))
    assert torch.isfinite(loss).all() and env.sim.n_clamped > 0


@pytest.mark.parametrize("field, value", [("init_noise", float("nan")), ("init_noise", -0.1),
                                          ("buoyancy", float("nan")), ("jet_source", float("inf")),
                                          ("dt", float("inf"))])
def test_smoke_env_config_rejects_non_finite_values(field, value):
    with pytest.raises(ValueError, match=field):
        SmokeTransportConfig(**TINY, **{field: value})


GATHER = dict(water=(0.2, 0.2, 0.7, 0.35), object_box=(0.4, 0.32, 0.5, 0.4), paddle_start=(0.28, 0.28))
BAD_TASK_CONFIGS = [  # (builder, field the error must name); each used to give a NaN/inf/empty loss or an obscure error
    (lambda: SmokeCirculationConfig(**TINY, level=0.0), "level"),
    (lambda: SmokeCirculationConfig(**TINY, fill_zone=(0.5, 0.4, 0.5, 0.4)), "fill_zone"),
    (lambda: SmokeCirculation(SmokeCirculationConfig(**TINY, fill_zone=(0.5, 0.51, 0.5, 0.51))), "fill_zone"),
    (lambda: SmokeCirculation(SmokeCirculationConfig(**TINY, jet_position=(0.475, 0.675))), "jet_position"),
    (lambda: SmokeTransportConfig(**TINY, puff_radius=-0.2), "puff_radius"),
    (lambda: SmokeTransportConfig(**TINY, jet_source=-0.1), "jet_source"),
    (lambda: SmokeArtConfig(**TINY, wave_period=0.0), "wave_period"),
    (lambda: SmokeArt(SmokeArtConfig(**TINY, push=0.0, wave_amplitude=0.0, jet_source=0.0)), "push"),
    (lambda: SmokeMixingConfig(**TINY, bin_size=12), "bin_size"),
    (lambda: SmokeMixingConfig(**TINY, bin_size=0), "bin_size"),
    (lambda: GatheringConfig(**MPM_TINY, **{**GATHER, "goal_x": float("nan")}), "goal_x"),
    (lambda: GatheringConfig(**MPM_TINY, **{**GATHER, "object_box": (0.4, 0.32, 0.4, 0.4)}), "object_box"),
    (lambda: PouringConfig(**MPM_TINY, weight_power=float("nan")), "weight_power"),
    # a cup narrower than, or filled less than, half a particle spacing (0.25 / n_grid) held no particle: an empty
    # ParticleSet error; so did a narrow cup whose tilted box holds no lattice point
    (lambda: PouringConfig(**MPM_TINY, wall=0.035, cup=(0.25, 0.5, 0.26, 0.7)), "cup"),
    (lambda: PouringConfig(**MPM_TINY, wall=0.035, fill=0.01), "fill"),
    (lambda: Pouring(PouringConfig(**MPM_TINY, wall=0.035, cup=(0.25, 0.5, 0.27, 0.7), tilt=0.1)), "tilt"),
    (lambda: LatteArtConfig(**MPM_TINY, flux=0), "flux"),
    (lambda: LatteArtConfig(**MPM_TINY, flux=-1), "flux"),
    (lambda: LatteArtConfig(**MPM_TINY, wave_period=0.0), "wave_period"),
    (lambda: LatteArtConfig(**{**MPM_TINY, "n_grid": 16.0}), "n_grid"),
    (lambda: LatteArtConfig(**MPM_TINY, segment_substeps=2.5), "segment_substeps"),
]


@pytest.mark.parametrize("build, field", BAD_TASK_CONFIGS, ids=[f for _, f in BAD_TASK_CONFIGS])
def test_task_configs_name_the_bad_field(build, field):
    with pytest.raises(ValueError, match=field):
        build()


BAD_FIELD_TYPES = [  # each failed deep inside (TypeError/IndexError/RuntimeError not naming it) or was accepted
    (SmokeCirculationConfig, TINY, "action_bound", "2"),
    (SmokeCirculationConfig, TINY, "level", True),
    (SmokeCirculationConfig, TINY, "fill_zone", (0.5, 0.6)),
    (SmokeMixingConfig, TINY, "init_noise", None),
    (SmokeArtConfig, TINY, "push", None),
    (GatheringConfig, MPM_TINY, "goal_x", "0.6"),
    (GatheringConfig, MPM_TINY, "paddle_start", 0.3),
    (LatteArtConfig, MPM_TINY, "inject_speed", (1.0,)),
    (PouringConfig, MPM_TINY, "tilt", "0"),
    (PouringConfig, MPM_TINY, "translation", "yes"),
]


@pytest.mark.parametrize("cls, base, field, value", BAD_FIELD_TYPES, ids=[f"{c.__name__}.{f}" for c, _, f, _ in BAD_FIELD_TYPES])
def test_config_fields_of_the_wrong_type_name_the_field(cls, base, field, value):
    with pytest.raises(ValueError, match=f"{field} must be"):
        cls(**base, **{field: value})


def test_wrong_config_class_or_device_is_rejected():
    with pytest.raises(TypeError, match="config must be a GatheringConfig"):
        Gathering(SmokeTransportConfig())
    with pytest.raises(TypeError, match="config must be a SmokeTransportConfig"):
        SmokeTransport(SmokeArtConfig())
    for device in ("cpu:1", "foo") + (() if torch.cuda.is_available() else ("cuda",)):
        with pytest.raises(ValueError, match="device"):
            TASKS["transport"](device=device)


def test_reset_render_and_mask_arguments_are_checked():
    """A NaN or negative loss mask gave a NaN or rewarded loss; render(0.5) and reset(seed=True) failed
    inside numpy/torch."""
    env = TASKS["circulation"]()
    with pytest.raises(ValueError, match="mask must be finite and non-negative"):
        env.rollout_loss(env.initial_actions()[None], mask=torch.full((env.horizon,), float("nan")))
    with pytest.raises(ValueError, match="mask must be a tensor"):
        env.rollout_loss(env.initial_actions()[None], mask=[1.0] * env.horizon)
    with pytest.raises(ValueError, match="index must be an int"):
        env.render(0.5)
    with pytest.raises(TypeError, match="seed must be an int"):
        env.reset(seed=True)
    env.reset(seed=np.int64(3))   # numpy ints are ints


def test_step_warns_that_an_action_requiring_grad_gets_no_gradient():
    """env.step(action.requires_grad_()) dropped the gradient without a word (loss() has none)."""
    env = TASKS["transport"]()
    action = torch.zeros(env.action_dim, requires_grad=True)
    with pytest.warns(UserWarning, match="Env.step does not propagate gradients.*rollout_loss"):
        env.step(action)
    assert not env.loss().requires_grad
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            env.step(action)  # grad mode off: the caller asked for no gradient
        env.step(action.detach())


def test_numpy_ints_are_accepted_and_bools_rejected():
    """np.int64 horizon / batch_size / bin_size / flux were rejected, while True was a horizon of 1 and
    batch_size=True failed inside torch; a seed of 2**70 raised a TypeError."""
    config = SmokeMixingConfig(**{**TINY, "horizon": np.int64(5), "resolution": np.int64(12)}, bin_size=np.int64(3))
    assert type(config.horizon) is int and type(config.bin_size) is int
    env = SmokeMixing(config, batch_size=np.int64(2))
    assert env.batch_size == 2 and type(env.batch_size) is int
    assert type(LatteArtConfig(**MPM_TINY, flux=np.int64(2)).flux) is int
    for build, field in ((lambda: SmokeTransportConfig(**{**TINY, "horizon": True}), "horizon"),
                         (lambda: SmokeMixingConfig(**TINY, bin_size=True), "bin_size"),
                         (lambda: LatteArtConfig(**MPM_TINY, flux=True), "flux"),
                         (lambda: SmokeMixing(config, batch_size=True), "batch_size")):
        with pytest.raises(ValueError, match=f"{field} must be an int"):
            build()
    with pytest.raises(TypeError, match="seed must be an int"):
        SmokeTransportConfig(**TINY, seed=2.5)
    with pytest.raises(ValueError, match=r"seed must be an int in \[0, 2\*\*63\)"):
        env.reset(seed=2 ** 70)
