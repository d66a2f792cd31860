"""Segment checkpointing: plan arithmetic, and checkpointed gradients bitwise equal to
storing every substep, with far less memory."""
import math

import numpy as np
import pytest
import warp as wp

from sim.checkpoint import SegmentPlan, suggest_segment_length
from sim.engine import (RIGID, SNOW, VISCOUS_LIQUID, MPMConfig, MPMSimulator, ParticleSet, Tool,
                        ToolShape)

wp.config.quiet = True


def test_segment_plan_covers_horizon_in_order():
    plan = SegmentPlan(10, 4)
    assert plan.segments == [(0, 4), (4, 8), (8, 10)]
    assert SegmentPlan(3, 10).segments == [(0, 3)]
    with pytest.raises(ValueError, match="segment_length"):
        SegmentPlan(5, 0)
    with pytest.raises(ValueError, match="n_steps"):
        SegmentPlan(0, 2)


def test_suggested_length_minimises_memory_model():
    T, m_ckpt, m_step = 1000, 40, 900
    s_star = suggest_segment_length(T, m_ckpt, m_step)
    cost = lambda s: 2 * s * m_step + math.ceil(T / s) * m_ckpt
    best = min(range(1, T + 1), key=cost)
    assert abs(s_star - best) <= 1
    assert s_star == round(math.sqrt(T * m_ckpt / (2 * m_step)))
    with pytest.raises(ValueError):
        suggest_segment_length(10, 0, 1)


def test_plan_and_suggestion_arguments_are_checked():
    """Float step counts raised "'float' object cannot be interpreted as an integer" and a NaN byte
    count "cannot convert float NaN to integer"; numpy ints are ints, bools are not."""
    for args, name in (((2.5, 1), "n_steps"), ((4, 2.5), "segment_length"), ((True, 1), "n_steps")):
        with pytest.raises(ValueError, match=f"{name} must be an int >= 1"):
            SegmentPlan(*args)
    plan = SegmentPlan(np.int64(4), np.int64(2))
    assert plan.segments == [(0, 2), (2, 4)] and type(plan.n_steps) is int
    for args, name in (((float("nan"), 1, 1), "n_steps"), ((2.5, 1, 1), "n_steps"),
                       ((10, float("nan"), 1), "checkpoint_bytes"), ((10, 1, float("inf")), "step_bytes")):
        with pytest.raises(ValueError, match=name):
            suggest_segment_length(*args)
    assert suggest_segment_length(np.int64(1000), np.int64(40), 900) == suggest_segment_length(1000, 40, 900)


def _lattice(lo, hi, h):
    axes = [np.arange(a, b, h) + 0.5 * h for a, b in zip(lo, hi)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)


def build(segment):
    """Viscous liquid + plastic block + rigid box + injector + paddle, 3 steps x 5 substeps."""
    liquid = _lattice((0.2, 0.15), (0.5, 0.25), 1 / 32)
    snow = _lattice((0.55, 0.15), (0.7, 0.3), 1 / 32)
    box = _lattice((0.3, 0.35), (0.38, 0.41), 1 / 32)
    pool = np.zeros((6, 2))
    x = np.concatenate([liquid, snow, box, pool])
    n = [len(liquid), len(snow), len(box), len(pool)]
    material = np.repeat([0, 1, 2, 0], n)
    body = np.r_[np.full(n[0] + n[1], -1), np.zeros(n[2], int), np.full(n[3], -1)]
    birth = np.r_[np.zeros(sum(n[:3]), int), [2, 2, 7, 7, 11, 11]]
    spawn_tool = np.r_[np.full(sum(n[:3]), -1), np.ones(6, int)]
    offset = np.r_[np.zeros((sum(n[:3]), 2)), np.tile([[-0.01, 0.0], [0.01, 0.0]], (3, 1))]
    spawn_v = np.r_[np.zeros((sum(n[:3]), 2)), np.tile([[0.0, -1.0]], (6, 1))]
    rng = np.random.default_rng(0)
    cfg = MPMConfig(dim=2, n_grid=16, dt=1e-3, substeps_per_step=5, max_steps=3, dtype="float64",
                    segment_substeps=segment)
    particles = ParticleSet(x=x, material=material, v=0.2 * rng.standard_normal(x.shape), body=body,
                            birth=birth, spawn_tool=spawn_tool, spawn_offset=offset, spawn_velocity=spawn_v)
    tools = [Tool(ToolShape.CAPSULE, (0.03, 0.05), softness=100.0, friction=0.5),
             Tool(ToolShape.SPHERE, (0.01,), softness=0.0)]
    sim = MPMSimulator(cfg, particles, [VISCOUS_LIQUID, SNOW, RIGID], tools)
    S = cfg.max_substeps
    a = np.linspace(0, 1, S + 1)[:, None]
    pos = np.stack([np.c_[0.15 + 0.1 * a, 0.22 + 0.0 * a], np.c_[0.3 + 0.2 * a, 0.6 + 0.0 * a]], 1)
    angle = 0.5 * a[:, 0]
    rot = np.stack([np.stack([np.cos(angle), -np.sin(angle)], -1), np.stack([np.sin(angle), np.cos(angle)], -1)], -2)
    sim.load_tool_poses(pos, np.stack([rot, np.broadcast_to(np.eye(2), rot.shape)], 1))
    return sim


def gradients(sim):
    rng = np.random.default_rng(1)
    shape = sim.obs_x.numpy().shape
    sim.forward(3)
    gx = wp.array(rng.standard_normal(shape), dtype=sim.kernels.vec)
    gv = wp.array(rng.standard_normal(shape), dtype=sim.kernels.vec)
    sim.backward(3, gx, gv)
    arrays = (sim.x0, sim.v0, sim.tool_pos, sim.tool_rot, sim.E, sim.nu, sim.viscosity)
    return sim.obs_x.numpy().copy(), [a.grad.numpy().copy() for a in arrays]


@pytest.mark.parametrize("segment", [1, 4, 7])
def test_checkpointed_gradient_equals_stored_gradient(segment):
    obs_full, full = gradients(build(None))
    obs_ckpt, ckpt = gradients(build(segment))
    assert np.array_equal(obs_full, obs_ckpt)
    for g_full, g_ckpt in zip(full, ckpt):
        assert np.abs(g_full).max() > 0  # every input receives a gradient
        assert np.array_equal(g_full, g_ckpt)


def test_repeated_backward_does_not_accumulate():
    sim = build(4)
    _, first = gradients(sim)
    _, second = gradients(sim)
    for a, b in zip(first, second):
        assert np.array_equal(a, b)


def test_checkpointing_memory_is_sublinear():
    full, ckpt = build(None).memory_bytes(), build(4).memory_bytes()
    assert ckpt["segment_substeps"] == 4 and full["segment_substeps"] == 15
    total = lambda m: m["segment"] + m["checkpoints"]
    assert total(ckpt) < 0.5 * total(full)


def test_truncated_rollout_equals_prefix_of_full_rollout():
    # the expanding-window use: roll out fewer env steps than the simulator was built for
    sim = build(4)
    rng = np.random.default_rng(2)
    g = rng.standard_normal(sim.obs_x.numpy().shape)
    g[2:] = 0.0  # the loss sees env steps 0 and 1 only
    vec = sim.kernels.vec
    sim.forward(3)
    full_obs = sim.obs_x.numpy()[:2].copy()
    sim.backward(3, wp.array(g, dtype=vec))
    full = [a.grad.numpy().copy() for a in (sim.x0, sim.tool_pos, sim.E)]
    sim.forward(2)
    assert np.array_equal(sim.obs_x.numpy()[:2], full_obs)
    sim.backward(2, wp.array(g[:3], dtype=vec))
    for a, ref in zip((sim.x0, sim.tool_pos, sim.E), full):
        np.testing.assert_allclose(a.grad.numpy(), ref, rtol=1e-12, atol=1e-12)
