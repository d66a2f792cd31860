"""MLS-MPM engine: gradients vs central finite differences (float64), closed-form motion,
mass conservation, rigid bodies, injector, determinism, and error handling."""
import numpy as np
import pytest
import warp as wp

from sim.engine import (ELASTIC, MAX_TOOLS, RIGID, SNOW, VISCOUS_LIQUID, WATER, Material, MaterialKind, MPMConfig,
                        MPMSimulator, ParticleSet, SimulationError, Tool, ToolShape)

wp.config.quiet = True
RTOL = 1e-4  # gradient relative error target (issue 8)


def block(lo, hi, spacing):
    """Particles on a regular lattice filling the box [lo, hi)."""
    axes = [np.arange(a, b - 1e-9, spacing) + 0.5 * spacing for a, b in zip(lo, hi)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(lo))


def make_sim(materials, tools=(), dim=2, n_grid=16, steps=3, sps=4, dt=1e-3, segment=None, x=None,
             material=None, **particle_kw):
    cfg = MPMConfig(dim=dim, n_grid=n_grid, dt=dt, substeps_per_step=sps, max_steps=steps,
                    dtype="float64", segment_substeps=segment)
    if x is None:
        x = block((0.3,) * dim, (0.5,) * dim, 1.0 / (2 * n_grid))
    if material is None:
        material = np.zeros(len(x), int)
    return MPMSimulator(cfg, ParticleSet(x=x, material=material, **particle_kw), materials, tools)


def linear_path(sim, start, end):
    """Tool positions moving linearly from ``start`` to ``end`` (n_tools, d) over the horizon."""
    S = sim.config.max_substeps
    a = np.linspace(0.0, 1.0, S + 1)[:, None, None]
    return (1 - a) * np.asarray(start, float)[None] + a * np.asarray(end, float)[None]


class Objective:
    """L = sum W * obs_x + 0.1 sum V * obs_v over all observed steps (random fixed weights)."""

    def __init__(self, sim, seed=0):
        rng = np.random.default_rng(seed)
        self.sim = sim
        self.W = rng.standard_normal(sim.obs_x.numpy().shape)
        self.V = rng.standard_normal(sim.obs_v.numpy().shape)

    def value(self):
        self.sim.forward(self.sim.config.max_steps)
        return (self.W * self.sim.obs_x.numpy()).sum() + 0.1 * (self.V * self.sim.obs_v.numpy()).sum()

    def gradient(self):
        self.value()
        vec = self.sim.kernels.vec
        self.sim.backward(self.sim.config.max_steps, wp.array(self.W, dtype=vec),
                          wp.array(0.1 * self.V, dtype=vec))


def check_directional(obj, array, direction, eps):
    """Compare <grad, direction> of ``array`` with a central difference; returns rel. error."""
    base = array.numpy().copy()
    obj.gradient()
    analytic = float((array.grad.numpy() * direction).sum())
    array.assign(base + eps * direction)
    plus = obj.value()
    array.assign(base - eps * direction)
    minus = obj.value()
    array.assign(base)
    fd = (plus - minus) / (2 * eps)
    assert abs(fd) > 1e-8, "degenerate check: the loss does not depend on this input"
    return abs(analytic - fd) / abs(fd)


def random_dir(array, seed=1):
    return np.random.default_rng(seed).standard_normal(array.numpy().shape)


def test_free_fall_matches_closed_form():
    # a liquid block far from the walls falls as a whole: y(t) = y0 - g t^2 / 2 (+ O(dt) drift)
    sim = make_sim([WATER], steps=5, sps=10, dt=1e-3, n_grid=32)
    sim.forward(5)
    xs = sim.obs_x.numpy()
    t = 50 * 1e-3
    drop = xs[0, :, 1].mean() - xs[-1, :, 1].mean()
    # symplectic Euler: sum_{k=1..n} k g dt^2 = g dt^2 n(n+1)/2
    assert drop == pytest.approx(9.8 * 1e-6 * 50 * 51 / 2, rel=1e-6)
    assert drop == pytest.approx(0.5 * 9.8 * t * t, rel=0.03)
    assert np.allclose(xs[-1, :, 0], xs[0, :, 0], atol=1e-9)


@pytest.mark.parametrize("material, param", [(WATER, "E"), (VISCOUS_LIQUID, "viscosity"),
                                             (ELASTIC, "E"), (ELASTIC, "nu"), (SNOW, "E")])
def test_material_parameter_gradient(material, param):
    sim = make_sim([material])
    # shear + compression so that every stress term (and the plastic clamp) is active
    x = sim.x0.numpy()
    c = x.mean(0)
    v = np.stack([2.0 * (x[:, 1] - c[1]), -3.0 * (x[:, 1] - c[1])], 1)
    sim.v0.assign(v)
    obj = Objective(sim)
    arr = getattr(sim, param)
    err = check_directional(obj, arr, np.ones(1), eps=1e-4 * float(arr.numpy()[0]))
    assert err < RTOL


@pytest.mark.parametrize("material", [WATER, VISCOUS_LIQUID, ELASTIC, SNOW])
def test_initial_state_gradient(material):
    sim = make_sim([material])
    x = sim.x0.numpy()
    sim.v0.assign(np.stack([1.5 * (x[:, 1] - 0.4), -2.0 * (x[:, 0] - 0.4)], 1))
    obj = Objective(sim)
    assert check_directional(obj, sim.x0, random_dir(sim.x0), 1e-6) < RTOL
    assert check_directional(obj, sim.v0, random_dir(sim.v0, 2), 1e-6) < RTOL


def test_plastic_clamp_is_active_and_differentiable():
    # stretch along x, compress along y: singular values leave [1 - theta_c, 1 + theta_s] by
    # ~4e-3 per substep. (Isotropic compression is avoided on purpose: there singular values
    # hover at the clamp bound, a kink of the model where finite differences are meaningless.)
    snow = Material(MaterialKind.PLASTIC, E=1000.0, theta_c=1e-3, theta_s=1e-3)
    x = block((0.3, 0.3), (0.5, 0.5), 1 / 32)
    c = x.mean(0)
    v0 = np.stack([4.0 * (x[:, 0] - c[0]) + 2.0 * (x[:, 1] - c[1]), -4.0 * (x[:, 1] - c[1])], 1)
    sim = make_sim([snow], x=x, v=v0, steps=2, sps=3)
    obj = Objective(sim)
    assert check_directional(obj, sim.x0, random_dir(sim.x0), 1e-6) < RTOL
    assert check_directional(obj, sim.E, np.ones(1), 0.1) < RTOL
    # the purely elastic material with the same E must end elsewhere: the clamp was active
    elastic = make_sim([Material(MaterialKind.ELASTIC, E=1000.0)], x=x, v=v0, steps=2, sps=3)
    elastic.forward(2)
    sim.forward(2)
    assert np.abs(elastic.obs_x.numpy() - sim.obs_x.numpy()).max() > 1e-7


@pytest.mark.parametrize("shape, size", [(ToolShape.SPHERE, (0.06,)), (ToolShape.BOX, (0.04, 0.06)),
                                         (ToolShape.CAPSULE, (0.03, 0.04))])
def test_tool_contact_gradient(shape, size):
    tool = Tool(shape, size, softness=100.0, friction=0.3)
    sim = make_sim([WATER], tools=[tool], steps=3, sps=5)
    pos = linear_path(sim, [[0.24, 0.40]], [[0.34, 0.38]])
    angle = np.linspace(0.0, 0.6, pos.shape[0])
    rot = np.stack([np.stack([np.cos(angle), -np.sin(angle)], -1),
                    np.stack([np.sin(angle), np.cos(angle)], -1)], -2)[:, None]
    sim.load_tool_poses(pos, rot)
    obj = Objective(sim)
    obj.value()
    free = make_sim([WATER], steps=3, sps=5)
    free.forward(3)
    assert np.abs(free.obs_x.numpy() - sim.obs_x.numpy()).max() > 1e-4, "tool did not touch the water"
    assert check_directional(obj, sim.tool_pos, random_dir(sim.tool_pos), 1e-6) < RTOL
    assert check_directional(obj, sim.tool_rot, random_dir(sim.tool_rot, 3), 1e-6) < RTOL


def test_hard_contact_keeps_material_out_of_tool():
    # a resting box pressed by a hard (softness 0) sphere from above: no particle ends up inside
    tool = Tool(ToolShape.SPHERE, (0.08,), softness=0.0)
    sim = make_sim([ELASTIC], tools=[tool], steps=5, sps=10, n_grid=32,
                   x=block((0.3, 0.1), (0.7, 0.3), 1 / 64))
    sim.load_tool_poses(linear_path(sim, [[0.5, 0.45]], [[0.5, 0.36]]))
    sim.forward(5)
    d = np.linalg.norm(sim.obs_x.numpy()[-1] - [0.5, 0.36], axis=1)
    assert d.min() > 0.08 - 1.5 / 32  # within the grid resolution of the surface


def rigid_sim(**kw):
    x_liq = block((0.2, 0.15), (0.6, 0.3), 1 / 32)
    x_box = block((0.35, 0.35), (0.45, 0.42), 1 / 32)
    x = np.concatenate([x_liq, x_box])
    mat = np.r_[np.zeros(len(x_liq), int), np.ones(len(x_box), int)]
    body = np.r_[np.full(len(x_liq), -1), np.zeros(len(x_box), int)]
    return make_sim([WATER, RIGID], x=x, material=mat, body=body, **kw), len(x_liq)


def test_rigid_body_stays_rigid_and_gradient():
    sim, n_liq = rigid_sim(steps=4, sps=5)
    # non-zero liquid velocities: exactly zero grid velocities sit on the kink of the wall
    # condition (v < 0), where one-sided slopes differ and finite differences are meaningless
    v = 0.1 * np.random.default_rng(0).standard_normal((sim.n_particles, 2))
    v[n_liq:] = [0.5, -1.0]
    sim.v0.assign(v)
    sim.forward(4)
    xs = sim.obs_x.numpy()[:, n_liq:]
    dist = lambda p: np.linalg.norm(p[:, None] - p[None], axis=-1)
    assert np.allclose(dist(xs[-1]), dist(xs[0]), atol=1e-10)
    assert np.abs(xs[-1] - xs[0]).max() > 1e-3  # it moved
    obj = Objective(sim)
    assert check_directional(obj, sim.x0, random_dir(sim.x0), 1e-6) < RTOL
    assert check_directional(obj, sim.v0, random_dir(sim.v0), 1e-6) < RTOL


def injector_sim():
    """A nozzle tool moving right, emitting 4 particles at substeps 3, 6, 9."""
    x_liq = block((0.3, 0.15), (0.5, 0.25), 1 / 32)
    n_new = 12
    x = np.concatenate([x_liq, np.zeros((n_new, 2))])
    birth = np.r_[np.zeros(len(x_liq), int), np.repeat([3, 6, 9], 4)]
    offset = np.r_[np.zeros((len(x_liq), 2)), np.tile([[-0.01, 0], [0.01, 0], [0, -0.01], [0, 0.01]], (3, 1))]
    vel = np.r_[np.zeros((len(x_liq), 2)), np.tile([[0.0, -1.0]], (n_new, 1))]
    tool = Tool(ToolShape.SPHERE, (0.01,), softness=0.0)
    sim = make_sim([WATER], tools=[tool], x=x, steps=3, sps=4, birth=birth,
                   spawn_tool=np.r_[np.full(len(x_liq), -1), np.zeros(n_new, int)],
                   spawn_offset=offset, spawn_velocity=vel)
    sim.load_tool_poses(linear_path(sim, [[0.3, 0.6]], [[0.5, 0.6]]))
    return sim, len(x_liq)


def test_injector_spawns_at_nozzle_and_conserves_mass():
    sim, n_liq = injector_sim()
    sim.forward(3)
    xs = sim.obs_x.numpy()
    pos = sim.tool_pos.numpy()[:, 0]
    # the first four particles appear at state 3 (nozzle pose of row 3 + offsets) and take one
    # more substep (spawn velocity (0, -1) plus one gravity kick) before obs row 1 = state 4
    born3 = xs[1, n_liq:n_liq + 4]
    expected = pos[3] + np.array([[-0.01, 0], [0.01, 0], [0, -0.01], [0, 0.01]])
    assert np.allclose(born3, expected + 1e-3 * np.array([0, -1.0 - 9.8e-3]), atol=1e-9)
    # grid mass equals the mass of the active particles (mass is conserved by p2g)
    mass = sim.p_mass.numpy()
    grid_mass = sim._buffers.grid_m[-1].numpy().sum()  # last substep: s = 11, particles born <= 11
    assert grid_mass == pytest.approx(mass.sum(), rel=1e-12)
    grid_mass_first = sim._buffers.grid_m[0].numpy().sum()  # s = 0: only the initial liquid
    assert grid_mass_first == pytest.approx(mass[:n_liq].sum(), rel=1e-12)


def test_injector_gradient_wrt_nozzle_path():
    sim, _ = injector_sim()
    obj = Objective(sim)
    assert check_directional(obj, sim.tool_pos, random_dir(sim.tool_pos), 1e-6) < RTOL


def test_forward_is_deterministic():
    sim, _ = rigid_sim(steps=2, sps=4)
    sim.forward(2)
    first = sim.obs_x.numpy().copy()
    sim.forward(2)
    assert np.array_equal(first, sim.obs_x.numpy())
    other, _ = rigid_sim(steps=2, sps=4)
    other.forward(2)
    assert np.array_equal(first, other.obs_x.numpy())


def test_3d_gradients_elastic_with_tool():
    tool = Tool(ToolShape.BOX, (0.05, 0.05, 0.05), softness=100.0)
    sim = make_sim([SNOW], tools=[tool], dim=3, n_grid=12, steps=2, sps=3, dt=1e-3,
                   x=block((0.35, 0.3, 0.35), (0.55, 0.45, 0.55), 1 / 24))
    sim.load_tool_poses(linear_path(sim, [[0.3037, 0.5, 0.4537]], [[0.3637, 0.48, 0.4737]]))
    x = sim.x0.numpy()
    sim.v0.assign(-2.0 * (x - x.mean(0)))
    obj = Objective(sim)
    assert check_directional(obj, sim.x0, random_dir(sim.x0), 1e-6) < RTOL
    assert check_directional(obj, sim.tool_pos, random_dir(sim.tool_pos), 1e-6) < RTOL
    assert check_directional(obj, sim.E, np.ones(1), 0.1) < RTOL


# ---------------------------------------------------------------- errors and clamping
def test_nonfinite_state_raises():
    sim = make_sim([Material(MaterialKind.ELASTIC, E=1e9)], steps=2, sps=10)
    x = sim.x0.numpy()
    sim.v0.assign(-5.0 * (x - x.mean(0)))
    with pytest.raises(SimulationError, match="non-finite"):
        sim.forward(2)


def test_escaping_particles_are_clamped_or_raise():
    # a fast jet towards the right wall with walls too thin to stop it within one substep
    cfg = dict(dim=2, n_grid=16, dt=2e-3, substeps_per_step=5, max_steps=2, dtype="float64", bound=1)
    x = block((0.7, 0.3), (0.8, 0.4), 1 / 32)
    v = np.tile([[60.0, 0.0]], (len(x), 1))
    sim = MPMSimulator(MPMConfig(**cfg), ParticleSet(x=x, material=np.zeros(len(x), int), v=v), [WATER])
    sim.forward(2)
    assert sim.n_clamped > 0
    assert sim.obs_x.numpy()[-1, :, 0].max() <= 1 - 2 / 16 + 1e-12
    strict = MPMSimulator(MPMConfig(**cfg, on_escape="raise"),
                          ParticleSet(x=x, material=np.zeros(len(x), int), v=v), [WATER])
    with pytest.raises(SimulationError, match="left the domain"):
        strict.forward(2)


def test_escaping_rigid_particles_are_clamped():
    """A spinning rigid box thrown at the left wall: g2p clamped its particles, then shape matching
    rotated the body back past the wall, to x = 0.029 < dx/2 (its p2g stencil then reached grid
    node -1, outside the arrays)."""
    n_grid = 16
    x = block((0.12, 0.3), (0.3, 0.4), 1 / 32)
    spin = np.c_[-(x[:, 1] - x[:, 1].mean()), x[:, 0] - x[:, 0].mean()]
    v = np.tile([[-60.0, 0.0]], (len(x), 1)) + 120.0 * spin
    particles = ParticleSet(x=x, material=np.zeros(len(x), int), body=np.zeros(len(x), int), v=v)
    cfg = dict(n_grid=n_grid, dt=1e-3, substeps_per_step=1, max_steps=30, dtype="float64", gravity=(0.0, 0.0))
    sim = MPMSimulator(MPMConfig(**cfg), particles, [RIGID])
    sim.forward(30)
    assert sim.n_clamped > 0
    xs = sim.obs_x.numpy()
    assert xs.min() >= 1 / n_grid and xs.max() <= 1 - 2 / n_grid
    with pytest.raises(SimulationError, match="left the domain"):
        MPMSimulator(MPMConfig(**cfg, on_escape="raise"), particles, [RIGID]).forward(30)


def test_bad_inputs_raise_clear_errors():
    sim = make_sim([WATER], tools=[Tool(ToolShape.SPHERE, (0.05,))])
    pos = linear_path(sim, [[0.2, 0.5]], [[0.3, 0.5]])
    pos[3, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        sim.load_tool_poses(pos)
    with pytest.raises(ValueError, match="shape"):
        sim.load_tool_poses(pos[:, :, :1])
    fast = linear_path(sim, [[0.2, 0.5]], [[0.3, 0.5]])
    fast[5:, 0, 0] += 0.1  # a jump of 0.1 > dx = 1/16 between substeps 4 and 5
    with pytest.raises(ValueError, match="between substeps 4 and 5"):
        sim.load_tool_poses(fast)
    with pytest.raises(ValueError, match="n_steps"):
        sim.forward(sim.config.max_steps + 1)
    with pytest.raises(ValueError, match="dim"):
        MPMConfig(dim=4)
    with pytest.raises(ValueError, match="positions"):
        make_sim([WATER], x=np.array([[1.5, 0.5]]))
    with pytest.raises(ValueError, match="body"):
        make_sim([RIGID], x=np.array([[0.5, 0.5]]))
    with pytest.raises(ValueError, match="at most"):
        make_sim([WATER], tools=[Tool(ToolShape.SPHERE, (0.05,))] * (MAX_TOOLS + 1))
    with pytest.raises(ValueError, match="nu"):
        Material(MaterialKind.ELASTIC, nu=0.5)
    with pytest.raises(TypeError, match="E must be a real number"):
        Material(MaterialKind.ELASTIC, E="400")
    with pytest.raises(TypeError, match="viscosity must be a real number"):
        Material(MaterialKind.LIQUID, viscosity=None)


def test_3d_rigid_body_and_injector_gradients():
    liquid = block((0.3, 0.2, 0.3), (0.5, 0.3, 0.5), 1 / 24)
    cube = block((0.36, 0.36, 0.36), (0.44, 0.44, 0.44), 1 / 24)
    pool = np.zeros((4, 3))
    x = np.concatenate([liquid, cube, pool])
    n = [len(liquid), len(cube), len(pool)]
    sim = make_sim([WATER, RIGID], tools=[Tool(ToolShape.SPHERE, (0.01,), softness=0.0)], dim=3,
                   n_grid=12, steps=2, sps=3, x=x, material=np.repeat([0, 1, 0], n),
                   body=np.r_[np.full(n[0], -1), np.zeros(n[1], int), np.full(n[2], -1)],
                   v=0.2 * np.random.default_rng(0).standard_normal(x.shape),
                   birth=np.r_[np.zeros(n[0] + n[1], int), [2, 2, 4, 4]],
                   spawn_tool=np.r_[np.full(n[0] + n[1], -1), np.zeros(4, int)],
                   spawn_offset=np.r_[np.zeros((n[0] + n[1], 3)), np.tile([[0.01, 0, 0], [-0.01, 0, 0]], (2, 1))],
                   spawn_velocity=np.r_[np.zeros((n[0] + n[1], 3)), np.tile([[0, -1.0, 0]], (4, 1))])
    sim.load_tool_poses(linear_path(sim, [[0.35, 0.6, 0.41]], [[0.45, 0.58, 0.43]]))
    sim.forward(2)
    xs = sim.obs_x.numpy()[:, n[0]:n[0] + n[1]]
    dist = lambda p: np.linalg.norm(p[:, None] - p[None], axis=-1)
    assert np.allclose(dist(xs[-1]), dist(xs[0]), atol=1e-10)
    obj = Objective(sim)
    assert check_directional(obj, sim.x0, random_dir(sim.x0), 1e-6) < RTOL
    assert check_directional(obj, sim.v0, random_dir(sim.v0, 2), 1e-6) < RTOL
    assert check_directional(obj, sim.tool_pos, random_dir(sim.tool_pos, 3), 1e-6) < RTOL


def test_viscosity_dissipates_shear_energy():
    # a shear flow v_x = y - y_c without gravity: higher viscosity, less kinetic energy left
    def energy(viscosity):
        x = block((0.3, 0.3), (0.6, 0.6), 1 / 64)
        v = np.stack([2.0 * (x[:, 1] - 0.45), np.zeros(len(x))], 1)
        cfg = MPMConfig(dim=2, n_grid=32, dt=2e-4, substeps_per_step=10, max_steps=4, dtype="float64",
                        gravity=(0.0, 0.0))
        liquid = Material(MaterialKind.LIQUID, E=400.0, viscosity=viscosity)
        sim = MPMSimulator(cfg, ParticleSet(x=x, v=v, material=np.zeros(len(x), int)), [liquid])
        sim.forward(4)
        return (sim.obs_v.numpy()[-1] ** 2).sum()
    # (explicit viscosity is stable for dt < ~rho dx^2 / (2 dim viscosity))
    e0, e1, e2 = energy(0.0), energy(0.05), energy(0.2)
    assert e0 > e1 > e2
    assert e2 < 0.9 * e0


def test_forward_rejects_particles_outside_the_grid():
    # out-of-grid particles would scatter outside the grid arrays (memory corruption)
    sim = make_sim([WATER], steps=1, sps=2)
    sim.x0.assign(sim.x0.numpy() - 3.0)
    with pytest.raises(ValueError, match="x0 has .* particles outside the domain"):
        sim.forward(1)
    sim.resume[0].assign(sim.x0.numpy())
    with pytest.raises(ValueError, match="state.x"):
        sim.advance(0, 1)


def _injector_sim(on_escape="clamp"):
    """Two water particles and two injected ones, spawned by a nozzle parked right of the domain."""
    x = np.array([[0.4, 0.4], [0.45, 0.4], [0.5, 0.5], [0.5, 0.5]])
    cfg = MPMConfig(dim=2, n_grid=16, dt=1e-3, substeps_per_step=2, max_steps=2, dtype="float64",
                    on_escape=on_escape)
    particles = ParticleSet(x=x, material=np.zeros(4, int), birth=np.array([0, 0, 1, 3]),
                            spawn_tool=np.array([-1, -1, 0, 0]), spawn_offset=np.zeros((4, 2)),
                            spawn_velocity=np.tile([0.0, -1.0], (4, 1)))
    sim = MPMSimulator(cfg, particles, [WATER], [Tool(ToolShape.SPHERE, (1e-3,), softness=0.0)])
    pos = np.tile([1.2, 0.4], (sim.config.max_substeps + 1, 1, 1))
    sim.load_tool_poses(pos)
    return sim


def test_injection_outside_the_domain_is_clamped():
    sim = _injector_sim()
    sim.forward(2)
    x = sim.obs_x.numpy()[-1]
    assert sim.n_clamped == 2
    assert np.all((x >= 1 / 16) & (x <= 1 - 2 / 16))
    assert x[2, 0] == pytest.approx(1 - 2 / 16)  # the spawn point (1.2, 0.4) clamped to the wall
    sim.backward(2, wp.array(np.ones((3, 4, 2)), dtype=sim.kernels.vec))
    assert np.isfinite(sim.tool_pos.grad.numpy()).all()
    assert sim.tool_pos.grad.numpy()[:, 0, 0].sum() == 0.0  # the clamped axis passes no gradient
    with pytest.raises(SimulationError, match="left the domain"):
        _injector_sim("raise").forward(2)


def test_backward_needs_a_matching_forward():
    sim = make_sim([WATER], tools=[Tool(ToolShape.SPHERE, (0.05,))], steps=2, sps=2, segment=2)
    sim.load_tool_poses(linear_path(sim, [[0.2, 0.5]], [[0.22, 0.5]]))
    grad = wp.array(np.ones((3, sim.n_particles, 2)), dtype=sim.kernels.vec)
    with pytest.raises(ValueError, match=r"needs a forward\(2\) first; last forward: none"):
        sim.backward(2, grad)
    sim.forward(1)
    with pytest.raises(ValueError, match=r"last forward: forward\(1\)"):
        sim.backward(2, grad)
    sim.forward(2)
    sim.backward(2, grad)
    sim.backward(2, grad)  # a second backward of the same forward is fine
    sim.resume[0].assign(sim.x0.numpy())
    sim.advance(0, 1)
    with pytest.raises(ValueError, match="needs a forward"):
        sim.backward(2, grad)
    sim.forward(2)
    sim.load_tool_poses(linear_path(sim, [[0.2, 0.5]], [[0.21, 0.5]]))
    with pytest.raises(ValueError, match="needs a forward"):
        sim.backward(2, grad)


def test_tool_rotations_must_be_rotations():
    sim = make_sim([WATER], tools=[Tool(ToolShape.BOX, (0.05, 0.02))])
    pos = linear_path(sim, [[0.2, 0.5]], [[0.22, 0.5]])
    rot = np.broadcast_to(np.eye(2), pos.shape + (2,)).copy()
    rot[4, 0] *= 1.01  # a 1 % scale error makes a static tool kick the liquid
    with pytest.raises(ValueError, match=r"tool rot\[4, 0\] is not a rotation"):
        sim.load_tool_poses(pos, rot)
    rot[4, 0] = [[1.0, 0.0], [0.0, -1.0]]  # orthonormal, but a reflection (det -1)
    with pytest.raises(ValueError, match="det = -1"):
        sim.load_tool_poses(pos, rot)


def test_particle_spawn_data_must_be_finite():
    with pytest.raises(ValueError, match="spawn_offset"):
        make_sim([WATER], tools=[Tool(ToolShape.SPHERE, (0.05,))], x=np.array([[0.5, 0.5]]),
                 birth=np.array([1]), spawn_tool=np.array([0]), spawn_offset=np.array([[np.nan, 0.0]]))


@pytest.mark.parametrize("field, value", [("n_grid", 32.0), ("bound", 2.5), ("substeps_per_step", 2.5),
                                          ("max_steps", 2.5), ("segment_substeps", 2.5), ("dt", float("inf")),
                                          ("gravity", (float("nan"), 0.0)), ("max_tool_step", float("nan")),
                                          ("device", "foo"), ("device", "cpu:1")])
def test_engine_config_names_the_bad_field(field, value):
    with pytest.raises(ValueError, match=field):
        MPMConfig(**{field: value})


def test_materials_tools_and_particles_are_validated():
    for field, value in (("density", float("inf")), ("theta_s", float("inf")), ("viscosity", float("nan")),
                         ("E", float("inf"))):
        with pytest.raises(ValueError, match=field):
            Material(MaterialKind.LIQUID, **{field: value})
    with pytest.raises(ValueError, match="size"):
        Tool(ToolShape.SPHERE, 0.05)
    for field in ("softness", "friction"):
        for value in (float("nan"), "1", None):  # a string or None failed inside math.isfinite
            with pytest.raises(ValueError, match=field):
                Tool(ToolShape.SPHERE, (0.05,), **{field: value})
    for tool in (Tool(ToolShape.BOX, (0.2,)), Tool(ToolShape.SPHERE, (0.05, 0.1))):
        with pytest.raises(ValueError, match=r"tools\[0\].size"):
            make_sim([WATER], tools=[tool])
    with pytest.raises(ValueError, match="birth"):  # a particle born after the horizon is never injected
        make_sim([WATER], tools=[Tool(ToolShape.SPHERE, (0.05,))], x=np.array([[0.5, 0.5]]),
                 birth=np.array([100]), spawn_tool=np.array([0]))


def test_simulator_arguments_of_the_wrong_type_name_the_argument():
    """A bare Material or Tool failed with "'Material' object is not iterable", an array of positions
    for particles with "'numpy.ndarray' object has no attribute 'filled'"."""
    cfg = MPMConfig(n_grid=16, max_steps=1, substeps_per_step=1)
    x = np.array([[0.5, 0.5]])
    particles = ParticleSet(x=x, material=np.zeros(1, int))
    for args, name in (((x, [WATER]), "particles"), ((particles, WATER), "materials"),
                       ((particles, [WATER], Tool(ToolShape.SPHERE, (0.05,))), "tools")):
        with pytest.raises(TypeError, match=f"{name} must be a"):
            MPMSimulator(cfg, *args)


def test_numpy_ints_are_ints_and_bools_are_not():
    """np.int64 config fields were rejected ("must be an int"); a bool n_steps ran one step."""
    cfg = MPMConfig(dim=np.int64(2), n_grid=np.int64(16), substeps_per_step=np.int64(2), max_steps=np.int64(3),
                    bound=np.int64(2), segment_substeps=np.int64(4))
    assert all(type(getattr(cfg, f)) is int for f in ("dim", "n_grid", "substeps_per_step", "max_steps", "bound",
                                                       "segment_substeps"))
    for field in ("n_grid", "substeps_per_step", "max_steps", "bound", "dim"):
        with pytest.raises(ValueError, match=field):
            MPMConfig(**{field: True})
    with pytest.raises(ValueError, match="dt must be a finite positive number"):
        MPMConfig(dt=True)
    with pytest.raises(ValueError, match="gravity must have 2 finite components"):
        MPMConfig(gravity=("0", "-9.8"))
    sim = make_sim([WATER], steps=2, sps=2)
    sim.forward(np.int64(2))
    for call in (lambda: sim.forward(True), lambda: sim.backward(True)):
        with pytest.raises(ValueError, match="n_steps must be an int in"):
            call()
    with pytest.raises(TypeError, match="start_step and n_steps must be ints"):
        sim.advance(0, True)
    with pytest.raises(ValueError, match="size"):
        Tool(ToolShape.SPHERE, (True,))


def _angular_momentum(sim, n_grid):
    """APIC angular momentum sum m (x x v) + m (dx^2 / 4) (C_10 - C_01) of the state in ``sim.resume``."""
    m = sim.p_mass.numpy()
    x, v, C = (a.numpy() for a in sim.resume[:3])
    spin = m * (x[:, 0] * v[:, 1] - x[:, 1] * v[:, 0])
    return spin.sum() + (m * (C[:, 1, 0] - C[:, 0, 1])).sum() / (4 * n_grid ** 2)


def test_spinning_elastic_block_conserves_angular_momentum():
    """APIC transfers and a symmetric stress conserve angular momentum exactly. wp.svd2 returned
    U = V = I for every F with F^T F = c I (a rigidly rotating particle: F = I + dt W), so the
    2-D polar rotation was I, the stress 2 mu (F - I) F^T not symmetric, and L drifted by 8.6e-4."""
    x = block((0.375, 0.375), (0.625, 0.625), 1 / 32)
    c = x.mean(0)
    v = 3.0 * np.stack([c[1] - x[:, 1], x[:, 0] - c[0]], 1)
    cfg = MPMConfig(dim=2, n_grid=16, dt=2e-4, substeps_per_step=1, max_steps=20, dtype="float64",
                    gravity=(0.0, 0.0))
    sim = MPMSimulator(cfg, ParticleSet(x=x, v=v, material=np.zeros(len(x), int)), [ELASTIC])
    sim.resume[0].assign(x)
    sim.resume[1].assign(v)
    sim.resume[3].assign(np.broadcast_to(np.eye(2), (len(x), 2, 2)).copy())
    start = _angular_momentum(sim, 16)
    sim.advance(0, 20)
    assert abs(_angular_momentum(sim, 16) - start) < 1e-12 * abs(start)


def test_2d_polar_rotation_matches_closed_form():
    """The 2-D polar rotation is the rotation nearest to F, [[a, -b], [b, a]] / |(a, b)| with
    a = F00 + F11, b = F10 - F01: also for scaled rotations (wp.svd2 gave I) and inverted F
    (wp.svd2 gave a reflection), as svd3 does in 3-D."""
    from sim.engine.spectral import build_spectral
    polar, _ = build_spectral(2, wp.float64, wp.vec2d, wp.mat22d, "test_spectral_polar_2d")

    @wp.kernel(module="test_spectral_polar_2d")
    def rotations(F: wp.array(dtype=wp.mat22d), R: wp.array(dtype=wp.mat22d)):
        i = wp.tid()
        R[i] = polar(F[i])

    def rot(angle):
        return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])

    rng = np.random.default_rng(0)
    F = np.stack([rot(0.3), 0.9 * rot(-2.0), np.eye(2) + 1e-3 * rot(np.pi / 2), np.diag([1.0, -0.8]),
                  rot(1.0) @ np.diag([1.2, -0.5]), np.eye(2) + 0.3 * rng.standard_normal((2, 2))])
    R = wp.zeros(len(F), dtype=wp.mat22d)
    wp.launch(rotations, len(F), inputs=[wp.array(F, dtype=wp.mat22d)], outputs=[R])
    a, b = F[:, 0, 0] + F[:, 1, 1], F[:, 1, 0] - F[:, 0, 1]
    expected = np.stack([np.stack([a, -b], -1), np.stack([b, a], -1)], -2) / np.hypot(a, b)[:, None, None]
    np.testing.assert_allclose(R.numpy(), expected, rtol=0, atol=1e-12)
