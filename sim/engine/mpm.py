"""Differentiable MLS-MPM simulator (2-D / 3-D) with segment-checkpointed backward.

Usage (numpy / Warp level; ``sim.bridge.mpm_rollout`` is the torch front end)::

    sim = MPMSimulator(MPMConfig(dim=2, n_grid=32, max_steps=20), particles, [WATER], [paddle])
    sim.load_tool_poses(pos, rot)          # (n_substeps+1, n_tools, d), (n_substeps+1, n_tools, d, d)
    sim.forward(n_steps=20)                # sim.obs_x / sim.obs_v: (max_steps+1, N) per env step
    sim.backward(20, grad_obs_x, grad_obs_v)
    sim.x0.grad, sim.tool_pos.grad, sim.E.grad, ...

One env step is ``substeps_per_step`` MPM substeps; states are observed once per env step.
"""
import math
from dataclasses import dataclass, field

import numpy as np
import warp as wp

from .._checks import is_int, is_real, plain_ints
from ..checkpoint import SegmentPlan, backward_sweep
from .materials import Material, MaterialKind
from .mpm_kernels import MAX_TOOLS, get_kernels
from .replay import RecordedStep
from .tools import Tool


class SimulationError(RuntimeError):
    """The simulation produced non-finite values or (with ``on_escape='raise'``) lost particles."""


#: Largest ``max |R^T R - I|`` and ``|det R - 1|`` accepted for a tool rotation matrix. The tool
#: velocity ``(p1 + R1 R0^T (x - p0) - x) / dt`` turns a scale error ``e`` into a spurious speed
#: ``e |x - p0| / dt``, so rotations must be orthonormal to about float32 precision.
ROTATION_TOL = 1e-4


def _check_int(name: str, value, low: int) -> None:
    """``ValueError`` naming ``name`` unless ``value`` is an int (Python or numpy; not a bool or
    float) ``>= low``."""
    if not is_int(value) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")


def _check_finite_positive(name: str, value) -> None:
    """``ValueError`` naming ``name`` unless ``value`` is a finite number ``> 0`` (not a bool)."""
    if not (is_real(value) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")


@dataclass(frozen=True)
class MPMConfig:
    """Grid, time step and memory settings.

    The domain is the unit square/cube ``[0, 1]^dim`` with ``n_grid`` cells per axis and slip
    walls ``bound`` cells thick. ``segment_substeps`` is the checkpoint segment length
    (``None``: store every substep of the longest rollout, i.e. no recompute).
    ``on_escape``: particles that would leave ``[dx, 1 - 2 dx]`` are clamped back and
    counted (``'clamp'``, default) or the rollout raises :class:`SimulationError` (``'raise'``).
    ``max_tool_step``: largest tool translation per substep (default ``dx``: the grid-based
    contact cannot resolve faster tools); larger steps raise ``ValueError``.
    """
    dim: int = 2
    n_grid: int = 64
    dt: float = 2e-4
    substeps_per_step: int = 10
    max_steps: int = 50
    gravity: tuple = None
    bound: int = 3
    dtype: str = "float32"
    device: str = "cpu"
    segment_substeps: int = None
    on_escape: str = "clamp"
    max_tool_step: float = None

    def __post_init__(self):
        if not is_int(self.dim) or self.dim not in (2, 3):
            raise ValueError(f"dim must be 2 or 3, got {self.dim!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        for name, low in (("n_grid", 8), ("substeps_per_step", 1), ("max_steps", 1), ("bound", 1)):
            _check_int(name, getattr(self, name), low)
        if self.segment_substeps is not None:
            _check_int("segment_substeps", self.segment_substeps, 1)
        if not self.bound < self.n_grid // 2:
            raise ValueError(f"bound must lie in [1, n_grid/2), got {self.bound}")
        _check_finite_positive("dt", self.dt)
        if self.max_tool_step is not None:
            _check_finite_positive("max_tool_step", self.max_tool_step)
        if self.gravity is not None and not _finite_vector(self.gravity, self.dim):
            raise ValueError(f"gravity must have {self.dim} finite components, got {self.gravity!r}")
        if self.on_escape not in ("clamp", "raise"):
            raise ValueError(f"on_escape must be 'clamp' or 'raise', got {self.on_escape!r}")
        try:
            wp.get_device(self.device)
        except (ValueError, RuntimeError, TypeError) as error:
            raise ValueError(f"device must name a Warp device available here ('cpu', 'cuda:0', ...), "
                             f"got {self.device!r}") from error
        plain_ints(self)

    @property
    def dx(self) -> float:
        return 1.0 / self.n_grid

    @property
    def tool_step_limit(self) -> float:
        return self.dx if self.max_tool_step is None else float(self.max_tool_step)

    @property
    def max_substeps(self) -> int:
        return self.max_steps * self.substeps_per_step

    @property
    def gravity_vector(self) -> tuple:
        if self.gravity is not None:
            return tuple(float(g) for g in self.gravity)
        return (0.0, -9.8) if self.dim == 2 else (0.0, -9.8, 0.0)


def _finite_vector(value, length: int) -> bool:
    """Whether ``value`` is a sequence of ``length`` finite numbers (not bools or strings)."""
    try:
        array = np.asarray(value)
    except (TypeError, ValueError, RuntimeError):  # ragged, or a tensor numpy cannot read
        return False
    return array.shape == (length,) and array.dtype.kind in "iuf" and bool(np.isfinite(array).all())


def check_tool_steps(step_lengths: np.ndarray, limit: float, name: str = "tool pos") -> None:
    """Raise ``ValueError`` if a tool moves more than ``limit`` between two substeps.

    step_lengths: (S, n_tools) translation per substep."""
    if step_lengths.size and step_lengths.max() > limit:
        s, t = np.unravel_index(int(np.argmax(step_lengths)), step_lengths.shape)
        raise ValueError(f"{name} moves tool {t} by {step_lengths[s, t]:.3g} between substeps {s} and "
                         f"{s + 1}, more than max_tool_step={limit:.3g} (the contact is resolved on the grid: "
                         "keep |v_tool| dt <= dx, i.e. smaller actions or dt, or raise MPMConfig.max_tool_step)")


def check_tool_rotations(rot: np.ndarray, name: str = "tool rot") -> None:
    """Raise ``ValueError`` if a tool rotation matrix is not a proper rotation (orthonormal with
    determinant +1, within :data:`ROTATION_TOL`); e.g. a linear blend of two rotations is not one.

    rot: (S+1, n_tools, d, d)."""
    if not rot.size:
        return
    eye = np.eye(rot.shape[-1])
    error = np.abs(np.swapaxes(rot, -1, -2) @ rot - eye).max(axis=(-2, -1))
    det = np.linalg.det(rot)
    bad = (error > ROTATION_TOL) | (np.abs(det - 1.0) > ROTATION_TOL)
    if bad.any():
        s, t = np.argwhere(bad)[0]
        raise ValueError(f"{name}[{s}, {t}] is not a rotation (max |R^T R - I| = {error[s, t]:.3g}, "
                         f"det = {det[s, t]:.6g}; tolerance {ROTATION_TOL:g}): build rotations from angles "
                         "(e.g. sim.bridge.rotation_2d) instead of blending matrices")


def _list_of(items) -> list | None:
    """``items`` as a list, or None if it is not iterable (e.g. a single ``Material``)."""
    try:
        return list(items)
    except TypeError:
        return None


@dataclass
class ParticleSet:
    """Initial particles (numpy arrays, N particles, d = dim).

    x: (N, d) positions in the domain; material: (N,) index into the material list;
    v: (N, d) velocities (default 0); body: (N,) rigid-body id or -1 (required >= 0 for
    RIGID particles, ids 0..B-1); birth: (N,) substep at which a particle enters
    (0: present from the start; > 0: parked in the injector pool until then, then placed at
    ``tool_pos + R spawn_offset`` with velocity ``R spawn_velocity`` of tool ``spawn_tool``).
    A spawn point outside ``[dx, 1 - 2 dx]`` (e.g. a nozzle parked outside the domain) is
    clamped into it like an escaping particle: counted in ``n_clamped``, and an error with
    ``on_escape='raise'``.
    """
    x: np.ndarray
    material: np.ndarray
    v: np.ndarray = None
    body: np.ndarray = None
    birth: np.ndarray = None
    spawn_tool: np.ndarray = None
    spawn_offset: np.ndarray = None
    spawn_velocity: np.ndarray = None

    def filled(self, dim: int) -> "ParticleSet":
        """A copy with defaults filled in and shapes checked."""
        x = np.asarray(self.x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != dim or x.shape[0] < 1:
            raise ValueError(f"particles.x must have shape (N, {dim}) with N >= 1, got {x.shape}")
        n = x.shape[0]

        def vecs(a, name):
            a = np.zeros((n, dim)) if a is None else np.asarray(a, dtype=np.float64)
            if a.shape != (n, dim):
                raise ValueError(f"particles.{name} must have shape ({n}, {dim}), got {a.shape}")
            return a

        def ints(a, name, default):
            a = np.full(n, default, dtype=np.int32) if a is None else np.asarray(a)
            if a.shape != (n,) or not np.issubdtype(a.dtype, np.integer):
                raise ValueError(f"particles.{name} must be an integer array of shape ({n},)")
            return a.astype(np.int32)

        return ParticleSet(x=x, material=ints(self.material, "material", 0), v=vecs(self.v, "v"),
                           body=ints(self.body, "body", -1), birth=ints(self.birth, "birth", 0),
                           spawn_tool=ints(self.spawn_tool, "spawn_tool", -1),
                           spawn_offset=vecs(self.spawn_offset, "spawn_offset"),
                           spawn_velocity=vecs(self.spawn_velocity, "spawn_velocity"))


@dataclass
class _SegmentBuffers:
    """Per-substep arrays of one segment (states 0..K, grids and bodies 0..K-1).

    Each field is a list of views into one contiguous (count, size) block, so a whole
    segment's adjoints (or its grid accumulators) are zeroed with one call per block.
    """
    x: list = field(default_factory=list)
    v: list = field(default_factory=list)
    C: list = field(default_factory=list)
    F: list = field(default_factory=list)
    affine: list = field(default_factory=list)
    grid_mv: list = field(default_factory=list)
    grid_m: list = field(default_factory=list)
    grid_v: list = field(default_factory=list)
    x_adv: list = field(default_factory=list)
    v_adv: list = field(default_factory=list)
    body_sum: list = field(default_factory=list)
    body_A: list = field(default_factory=list)
    blocks: dict = field(default_factory=dict)

    ACCUMULATORS = ("grid_mv", "grid_m", "body_sum", "body_A")  # targets of atomic adds

    def add(self, name: str, block: wp.array) -> None:
        self.blocks[name] = block
        setattr(self, name, [block[i] for i in range(block.shape[0])])

    def zero_accumulators(self) -> None:
        for name in self.ACCUMULATORS:
            if name in self.blocks:
                self.blocks[name].zero_()

    def zero_adjoints(self) -> None:
        for block in self.blocks.values():
            block.grad.zero_()

    def nbytes(self) -> int:
        """Values plus adjoints."""
        return sum(2 * block.capacity for block in self.blocks.values())


class MPMSimulator:
    """MLS-MPM rollout with Warp arrays for state, controls and parameters.

    Differentiable inputs (each a Warp array with ``.grad`` after :meth:`backward`):
    ``x0``, ``v0`` (N,) vec; ``tool_pos`` (max_substeps+1, n_tools) vec;
    ``tool_rot`` (max_substeps+1, n_tools) mat; ``E``, ``nu``, ``viscosity`` (n_materials,).
    Outputs: ``obs_x``, ``obs_v`` of shape (max_steps+1, N) vec, the state after each env step
    (row 0 is the initial state). One rollout in flight per simulator: buffers are reused.
    """

    def __init__(self, config: MPMConfig, particles: ParticleSet, materials, tools=()):
        if not isinstance(config, MPMConfig):
            raise TypeError(f"config must be an MPMConfig, got {type(config).__name__}")
        if not isinstance(particles, ParticleSet):
            raise TypeError(f"particles must be a ParticleSet, got {type(particles).__name__}")
        self.config = config
        self.materials = _list_of(materials)
        self.tools = _list_of(tools)
        if not self.materials or not all(isinstance(m, Material) for m in self.materials):
            raise TypeError(f"materials must be a non-empty sequence of Material, got {materials!r}")
        if self.tools is None or not all(isinstance(t, Tool) for t in self.tools):
            raise TypeError(f"tools must be a sequence of Tool, got {tools!r}")
        if len(self.tools) > MAX_TOOLS:
            raise ValueError(f"at most {MAX_TOOLS} tools are supported, got {len(self.tools)}")
        for i, tool in enumerate(self.tools):
            if len(tool.size) != tool.size_length(config.dim):
                raise ValueError(f"tools[{i}].size of a {tool.shape.name} in {config.dim}-D must have "
                                 f"{tool.size_length(config.dim)} entries, got {tool.size!r}")
        self.particles = particles.filled(config.dim)
        self._check_particles()
        self.kernels = get_kernels(config.dim, config.dtype)
        self.np_dtype = np.float32 if config.dtype == "float32" else np.float64
        self._segment = config.segment_substeps or config.max_substeps
        self._segment = min(self._segment, config.max_substeps)
        self._allocate()
        self.n_clamped = 0
        self._live = None  # (segment, start, stop) whose forward values the buffers hold
        self._forward_steps = None  # n_steps of the forward the checkpoints belong to
        self.generation = 0  # counts forward / advance / load_tool_poses calls (see sim.bridge)

    # ------------------------------------------------------------------ setup
    @property
    def n_particles(self) -> int:
        return self.particles.x.shape[0]

    @property
    def n_bodies(self) -> int:
        return int(self.particles.body.max()) + 1 if (self.particles.body >= 0).any() else 0

    @property
    def n_tools(self) -> int:
        return len(self.tools)

    def _check_particles(self):
        c, p = self.config, self.particles
        lo, hi = c.dx, 1.0 - 2.0 * c.dx
        present = p.birth == 0
        for name in ("x", "v", "spawn_offset", "spawn_velocity"):
            if not np.isfinite(getattr(p, name)).all():
                raise ValueError(f"particles.{name} must be finite")
        if ((p.x[present] < lo) | (p.x[present] > hi)).any():
            raise ValueError(f"initial particle positions must lie in [{lo:g}, {hi:g}] (inside the grid)")
        if p.material.min() < 0 or p.material.max() >= len(self.materials):
            raise ValueError(f"particles.material must index the {len(self.materials)} materials")
        kinds = np.array([m.kind for m in self.materials])[p.material]
        rigid = kinds == MaterialKind.RIGID
        if (rigid != (p.body >= 0)).any():
            raise ValueError("particles.body must be >= 0 exactly for RIGID particles")
        if rigid.any():
            ids = np.unique(p.body[rigid])
            if not np.array_equal(ids, np.arange(ids.size)):
                raise ValueError("rigid body ids must be 0..B-1 without gaps")
            if (p.birth[rigid] != 0).any():
                raise ValueError("rigid particles must be present from the start (birth 0)")
        if p.birth.min() < 0 or p.birth.max() > self.config.max_substeps:
            raise ValueError(f"particles.birth must lie in [0, max_substeps={self.config.max_substeps}] "
                             "(a later particle would never be injected)")
        injected = p.birth > 0
        if injected.any() and ((p.spawn_tool[injected] < 0) | (p.spawn_tool[injected] >= len(self.tools))).any():
            raise ValueError("injected particles (birth > 0) need spawn_tool indexing a tool")

    def _check_positions(self, x: wp.array, first_substep: int, name: str) -> None:
        """Raise ``ValueError`` if a particle present at ``first_substep`` lies outside
        ``[dx, 1 - 2 dx]``: its stencil would reach outside the grid (out-of-bounds writes)."""
        c = self.config
        lo, hi = self.np_dtype(c.dx), self.np_dtype(1.0 - 2.0 * c.dx)
        x = x.numpy()
        present = self.particles.birth <= first_substep
        outside = present & ((x < lo) | (x > hi) | ~np.isfinite(x)).any(axis=1)
        if outside.any():
            i = int(np.argmax(outside))
            raise ValueError(f"{name} has {int(outside.sum())} particles outside the domain [dx, 1 - 2 dx] = "
                             f"[{lo:g}, {hi:g}] (first: particle {i} at {x[i].tolist()}); "
                             "positions must lie inside the grid")

    def _arr(self, data, dtype, grad=False):
        return wp.array(data, dtype=dtype, device=self.config.device, requires_grad=grad)

    def _zeros(self, shape, dtype, grad=False):
        return wp.zeros(shape, dtype=dtype, device=self.config.device, requires_grad=grad)

    def _allocate(self):
        c, k, p = self.config, self.kernels, self.particles
        T, vec, mat = k.scalar, k.vec, k.mat
        n, d = self.n_particles, c.dim
        rho = np.array([m.density for m in self.materials])[p.material]
        self.p_vol = (0.5 * c.dx) ** d
        self.p_mass = self._arr((rho * self.p_vol).astype(self.np_dtype), T)
        self.p_mat = self._arr(p.material, int)
        self.mat_kind = self._arr(np.array([int(m.kind) for m in self.materials], np.int32), int)
        par = lambda name: self._arr(np.array([getattr(m, name) for m in self.materials], self.np_dtype), T, True)
        self.E, self.nu, self.viscosity = par("E"), par("nu"), par("viscosity")
        self.sv_lo = self._arr(np.array([1 - m.theta_c for m in self.materials], self.np_dtype), T)
        self.sv_hi = self._arr(np.array([1 + m.theta_s for m in self.materials], self.np_dtype), T)
        self.birth = self._arr(p.birth, int)
        self.spawn_tool = self._arr(np.maximum(p.spawn_tool, 0), int)
        self.spawn_offset = self._arr(p.spawn_offset.astype(self.np_dtype), vec)
        self.spawn_velocity = self._arr(p.spawn_velocity.astype(self.np_dtype), vec)
        self._allocate_bodies()
        self._allocate_tools()
        self.x0 = self._arr(p.x.astype(self.np_dtype), vec, True)
        self.v0 = self._arr(p.v.astype(self.np_dtype), vec, True)
        self._C0 = self._zeros(n, mat)
        self._F0 = self._arr(np.broadcast_to(np.eye(d), (n, d, d)).astype(self.np_dtype), mat)
        self.obs_x = self._zeros((c.max_steps + 1, n), vec)
        self.obs_v = self._zeros((c.max_steps + 1, n), vec)
        self._grad_obs_x = self._zeros((c.max_steps + 1, n), vec)
        self._grad_obs_v = self._zeros((c.max_steps + 1, n), vec)
        n_seg = -(-c.max_substeps // self._segment)
        self._ckpt = [self._zeros((n_seg + 1, n), t) for t in (vec, vec, mat, mat)]
        self._carry = [self._zeros(n, t) for t in (vec, vec, mat, mat)]
        self._status = self._zeros(2, int)
        self.resume = [self._zeros(n, t) for t in (vec, vec, mat, mat)]
        self._buffers = self._allocate_segment(self._segment)
        self._steps = [self._record_slot(l) for l in range(self._segment)]

    def _allocate_bodies(self):
        k, p = self.kernels, self.particles
        nb = self.n_bodies
        self.p_body = self._arr(p.body, int)
        rest = np.zeros_like(p.x)
        body_mass = np.ones(max(nb, 1))
        mass = self.p_mass.numpy().astype(np.float64)
        for b in range(nb):
            sel = p.body == b
            body_mass[b] = mass[sel].sum()
            com = (mass[sel, None] * p.x[sel]).sum(0) / body_mass[b]
            rest[sel] = p.x[sel] - com
        self.rest = self._arr(rest.astype(self.np_dtype), k.vec)
        self.body_mass = self._arr(body_mass.astype(self.np_dtype), k.scalar)

    def _allocate_tools(self):
        c, k = self.config, self.kernels
        nt, d = max(self.n_tools, 1), c.dim
        size = np.zeros((nt, d))
        for i, t in enumerate(self.tools):
            size[i, :len(t.size)] = t.size
        self.tool_shape = self._arr(np.array([int(t.shape) for t in self.tools] or [0], np.int32), int)
        self.tool_size = self._arr(size.astype(self.np_dtype), k.vec)
        self.tool_softness = self._arr(np.array([t.softness for t in self.tools] or [0.0], self.np_dtype), k.scalar)
        self.tool_friction = self._arr(np.array([t.friction for t in self.tools] or [0.0], self.np_dtype), k.scalar)
        pos = np.full((c.max_substeps + 1, nt, d), -10.0)  # far outside by default
        rot = np.broadcast_to(np.eye(d), (c.max_substeps + 1, nt, d, d))
        self.tool_pos = self._arr(pos.astype(self.np_dtype), k.vec, True)
        self.tool_rot = self._arr(rot.astype(self.np_dtype), k.mat, True)

    def _allocate_segment(self, K: int) -> _SegmentBuffers:
        c, k = self.config, self.kernels
        n, cells, nb = self.n_particles, c.n_grid ** c.dim, self.n_bodies
        buf = _SegmentBuffers()
        layout = {"x": (K + 1, n, k.vec), "v": (K + 1, n, k.vec), "C": (K + 1, n, k.mat),
                  "F": (K + 1, n, k.mat), "affine": (K, n, k.mat), "grid_mv": (K, cells, k.vec), "grid_m": (K, cells, k.scalar),
                  "grid_v": (K, cells, k.vec)}
        if nb:
            layout.update(x_adv=(K, n, k.vec), v_adv=(K, n, k.vec), body_sum=(K, nb, k.vec),
                          body_A=(K, nb, k.mat))
        for name, (count, size, dtype) in layout.items():
            buf.add(name, self._zeros((count, size), dtype, True))
        return buf

    # ------------------------------------------------------------------ inputs
    def load_tool_poses(self, pos, rot=None):
        """Set tool poses per substep from numpy arrays: ``pos`` (S+1, n_tools, d),
        ``rot`` (S+1, n_tools, d, d) (identity if None), S <= max_substeps. Rows beyond S keep
        their previous values. Non-finite values and matrices that are not rotations raise
        ``ValueError``. A :meth:`backward` needs a fresh :meth:`forward` after this call."""
        c = self.config
        pos = np.asarray(pos, dtype=np.float64)
        if pos.ndim != 3 or pos.shape[1:] != (self.n_tools, c.dim) or not 2 <= pos.shape[0] <= c.max_substeps + 1:
            raise ValueError(f"tool pos must have shape (S+1, {self.n_tools}, {c.dim}) with "
                             f"S <= {c.max_substeps}, got {pos.shape}")
        if rot is None:
            rot = np.broadcast_to(np.eye(c.dim), pos.shape + (c.dim,))
        rot = np.asarray(rot, dtype=np.float64)
        if rot.shape != pos.shape + (c.dim,):
            raise ValueError(f"tool rot must have shape {pos.shape + (c.dim,)}, got {rot.shape}")
        if not (np.isfinite(pos).all() and np.isfinite(rot).all()):
            raise ValueError("tool poses must be finite (got NaN or inf)")
        check_tool_steps(np.linalg.norm(np.diff(pos, axis=0), axis=-1), c.tool_step_limit)
        check_tool_rotations(rot)
        self._invalidate_forward()
        if self.n_tools:
            full_p, full_r = self.tool_pos.numpy(), self.tool_rot.numpy()
            full_p[:pos.shape[0]] = pos
            full_r[:rot.shape[0]] = rot
            self.tool_pos.assign(full_p.astype(self.np_dtype))
            self.tool_rot.assign(full_r.astype(self.np_dtype))

    # ------------------------------------------------------------------ stepping
    def _record_slot(self, l: int) -> RecordedStep:
        """Launches of one substep reading segment state ``l`` and writing state ``l + 1``
        (the substep index ``s`` is set at replay)."""
        c, k, b = self.config, self.kernels, self._buffers
        T, n = k.scalar, self.n_particles
        dt, inv_dx = T(c.dt), T(1.0 / c.dx)
        step = RecordedStep(c.device)
        step.add(k.p2g_stress, n, [b.C[l], b.F[l], self.birth, 0, self.p_mass, self.p_mat, self.mat_kind,
                                   self.E, self.nu, self.viscosity, self.sv_lo, self.sv_hi, T(self.p_vol),
                                   dt, inv_dx, b.F[l + 1], b.affine[l]])
        scatter = [b.x[l], b.v[l], b.affine[l], self.birth, 0, self.p_mass, inv_dx, c.n_grid]
        step.add(k.p2g_scatter, n, scatter + [b.grid_mv[l], b.grid_m[l]],
                 adjoint=(k.p2g_scatter_adjoint, scatter + [b.grid_mv[l].grad, b.grid_m[l].grad, b.x[l].grad,
                                                            b.v[l].grad, b.affine[l].grad]))
        step.add(k.grid_update(self.n_tools), c.n_grid ** c.dim,
                 [b.grid_mv[l], b.grid_m[l], 0, dt, T(c.dx), k.vec(*c.gravity_vector), c.n_grid, c.bound,
                  self.tool_shape, self.tool_size, self.tool_softness, self.tool_friction,
                  self.tool_pos, self.tool_rot, b.grid_v[l]])
        rigid = self.n_bodies > 0
        x_out = b.x_adv[l] if rigid else b.x[l + 1]
        v_out = b.v_adv[l] if rigid else b.v[l + 1]
        gather = [b.x[l], b.v[l], b.C[l], self.birth, 0, b.grid_v[l], dt, inv_dx, c.n_grid,
                  T(c.dx), T(1.0 - 2.0 * c.dx), self.spawn_tool, self.spawn_offset,
                  self.spawn_velocity, self.tool_pos, self.tool_rot]
        step.add(k.g2p, n, gather + [x_out, v_out, b.C[l + 1], self._status],
                 adjoint=(k.g2p_adjoint, gather + [x_out.grad, v_out.grad, b.C[l + 1].grad, b.x[l].grad,
                                                   b.v[l].grad, b.C[l].grad, b.grid_v[l].grad,
                                                   self.tool_pos.grad, self.tool_rot.grad]))
        if rigid:
            step.add(k.body_reduce, n, [b.x_adv[l], self.p_body, self.p_mass, self.rest,
                                        b.body_sum[l], b.body_A[l]])
            step.add(k.body_project, n, [b.x[l], b.x_adv[l], b.v_adv[l], self.p_body, self.rest,
                                         self.body_mass, b.body_sum[l], b.body_A[l], dt, T(c.dx),
                                         T(1.0 - 2.0 * c.dx), b.x[l + 1], b.v[l + 1], self._status])
        return step

    def _plan(self, n_steps: int) -> SegmentPlan:
        c = self.config
        if not is_int(n_steps) or not 1 <= n_steps <= c.max_steps:
            raise ValueError(f"n_steps must be an int in [1, {c.max_steps}], got {n_steps!r}")
        return SegmentPlan(int(n_steps) * c.substeps_per_step, self._segment)

    def _state(self, l: int):
        b = self._buffers
        return [b.x[l], b.v[l], b.C[l], b.F[l]]

    def _invalidate_forward(self) -> None:
        """The inputs or buffers changed: the last forward can no longer be differentiated."""
        self._forward_steps = None
        self._live = None
        self.generation += 1

    def forward(self, n_steps: int) -> None:
        """Roll out ``n_steps`` env steps without a tape; fills ``obs_x``/``obs_v`` rows 0..n_steps
        and the checkpoints. Raises ``ValueError`` if a particle present at the start lies
        outside ``[dx, 1 - 2 dx]``, :class:`SimulationError` on non-finite state (or escapes,
        with ``on_escape='raise'``)."""
        c = self.config
        plan = self._plan(n_steps)
        self._invalidate_forward()
        self._check_positions(self.x0, 0, "x0")
        self._status.zero_()
        for dst, src in zip(self._ckpt, [self.x0, self.v0, self._C0, self._F0]):
            wp.copy(dst[0], src)
        wp.copy(self.obs_x[0], self.x0)
        wp.copy(self.obs_v[0], self.v0)
        segments = plan.segments
        for index, (start, stop) in enumerate(segments):
            self.restore_checkpoint(index, start)
            self.record_segment(start, stop)
            for s in range(start + 1, stop + 1):
                if s % c.substeps_per_step == 0:
                    row = s // c.substeps_per_step
                    wp.copy(self.obs_x[row], self._buffers.x[s - start])
                    wp.copy(self.obs_v[row], self._buffers.v[s - start])
            for dst, src in zip(self._ckpt, self._state(stop - start)):
                wp.copy(dst[index + 1], src)
        self._check_status()
        self._live = (len(segments) - 1, *segments[-1])  # the buffers hold the last segment
        self._forward_steps = int(n_steps)

    def advance(self, start_step: int, n_steps: int) -> None:
        """Continue a rollout without a tape: from the state in ``self.resume`` (x, v, C, F,
        each (N,)) at env step ``start_step`` run ``n_steps`` env steps (substeps
        ``start_step * substeps_per_step`` onwards, reading those rows of ``tool_pos``/``tool_rot``)
        and write the end state back to ``self.resume`` and the observed states to ``obs_x``/``obs_v``
        rows ``start_step+1 .. start_step+n_steps``.

        Cost is O(n_steps), independent of ``start_step``. Each substep runs the same launches on
        the same values as :meth:`forward`, so stepping an episode through ``advance`` gives
        bitwise the states of one ``forward`` over the whole episode. The segment buffers are
        overwritten: a :meth:`backward` needs a fresh :meth:`forward` first. A particle present
        at ``start_step`` outside ``[dx, 1 - 2 dx]`` raises ``ValueError``."""
        c = self.config
        if not (is_int(start_step) and is_int(n_steps)):
            raise TypeError(f"start_step and n_steps must be ints, got {start_step!r}, {n_steps!r}")
        if start_step < 0 or n_steps < 1 or start_step + n_steps > c.max_steps:
            raise ValueError(f"need 0 <= start_step, 1 <= n_steps and start_step + n_steps <= {c.max_steps}, "
                             f"got start_step={start_step}, n_steps={n_steps}")
        sps = c.substeps_per_step
        first, last = int(start_step) * sps, int(start_step + n_steps) * sps
        self._invalidate_forward()
        self._check_positions(self.resume[0], first, "state.x (resume[0])")
        self._status.zero_()
        for start in range(first, last, self._segment):
            stop = min(start + self._segment, last)
            for dst, src in zip(self._state(0), self.resume):
                wp.copy(dst, src)
            self.record_segment(start, stop)
            for s in range(start + 1, stop + 1):
                if s % sps == 0:
                    wp.copy(self.obs_x[s // sps], self._buffers.x[s - start])
                    wp.copy(self.obs_v[s // sps], self._buffers.v[s - start])
            for dst, src in zip(self.resume, self._state(stop - start)):
                wp.copy(dst, src)
        self._check_status()

    def _check_status(self):
        clamped, nonfinite = (int(v) for v in self._status.numpy())
        self.n_clamped = clamped
        if nonfinite:
            raise SimulationError(f"{nonfinite} particle updates produced non-finite positions "
                                  "(unstable time step, material parameters or tool motion)")
        if clamped and self.config.on_escape == "raise":
            raise SimulationError(f"{clamped} particle updates left the domain [dx, 1 - 2 dx] "
                                  "(on_escape='raise'; use 'clamp' to clamp them back)")

    # ------------------------------------------------------------------ backward (checkpoint.Replayable)
    # After forward the segment buffers still hold the last segment, so backward starts
    # there without recomputing it, then recomputes earlier segments from their checkpoints.
    # Changing inputs between forward and backward is not supported (one rollout in flight):
    # advance and load_tool_poses invalidate the forward; writing into x0, E, ... directly is
    # not tracked.
    def backward(self, n_steps: int, grad_obs_x=None, grad_obs_v=None) -> None:
        """Reverse sweep after :meth:`forward` with the same ``n_steps`` (``ValueError`` otherwise,
        also after an :meth:`advance` or :meth:`load_tool_poses` since that forward).

        ``grad_obs_x`` / ``grad_obs_v``: Warp arrays (R, N) vec with R <= max_steps+1, or None:
        the loss adjoint of rows 0..R-1 of ``obs_x`` / ``obs_v``. Fills ``.grad`` of x0, v0, tool_pos, tool_rot, E, nu,
        viscosity (overwritten, not accumulated across calls)."""
        plan = self._plan(n_steps)
        if self._forward_steps != n_steps:
            last = "none (or an advance / load_tool_poses came after it)" if self._forward_steps is None \
                else f"forward({self._forward_steps})"
            raise ValueError(f"backward(n_steps={n_steps}) needs a forward({n_steps}) first; last forward: {last}")
        for dst, src in ((self._grad_obs_x, grad_obs_x), (self._grad_obs_v, grad_obs_v)):
            dst.zero_()
            if src is not None:
                if src.ndim != 2 or src.shape[1] != self.n_particles or src.shape[0] > dst.shape[0]:
                    raise ValueError(f"observation gradients must have shape (<= {dst.shape[0]}, "
                                     f"{self.n_particles}), got {src.shape}")
                wp.copy(dst, src, count=src.size)
        for arr in (self.x0, self.v0, self.tool_pos, self.tool_rot, self.E, self.nu, self.viscosity):
            arr.grad.zero_()
        for arr in self._carry:
            arr.zero_()
        self._n_substeps = plan.n_steps
        backward_sweep(self, plan)
        wp.copy(self.x0.grad, self._carry[0])
        wp.copy(self.v0.grad, self._carry[1])

    def prepare_segment(self, segment: int, start: int, stop: int) -> None:
        live, self._live = self._live, None
        if live != (segment, start, stop):
            self.restore_checkpoint(segment, start)
            self.record_segment(start, stop)
        self.clear_segment_adjoints()

    def adjoint_segment(self, start: int, stop: int) -> None:
        for s in reversed(range(start, stop)):
            self._steps[s - start].adjoint(s)

    def restore_checkpoint(self, segment: int, start: int) -> None:
        for dst, src in zip(self._state(0), self._ckpt):
            wp.copy(dst, src[segment])

    def clear_segment_adjoints(self) -> None:
        self._buffers.zero_adjoints()

    def record_segment(self, start: int, stop: int) -> None:
        """Run substeps ``start .. stop-1`` into the segment buffers."""
        self._buffers.zero_accumulators()
        for s in range(start, stop):
            self._steps[s - start].forward(s)

    def seed_segment_adjoint(self, start: int, stop: int) -> None:
        k, sps, n = self.kernels, self.config.substeps_per_step, self.n_particles
        end = self._state(stop - start)
        for arr, carry in zip(end, self._carry):
            wp.copy(arr.grad, carry)
        # an observed state on a segment boundary is seeded in the later segment (before its
        # adjoint contributions accumulate), so the summation order, and hence every bit of the
        # gradient, matches a single stored-everything tape
        last = stop + 1 if stop == self._n_substeps else stop
        for s in range(start, last):
            if s % sps == 0:
                l, row = s - start, s // sps
                dev = self.config.device
                wp.launch(k.add_vec, n, inputs=[self._grad_obs_x[row], self._buffers.x[l].grad], device=dev)
                wp.launch(k.add_vec, n, inputs=[self._grad_obs_v[row], self._buffers.v[l].grad], device=dev)

    def carry_start_adjoint(self, start: int) -> None:
        for carry, arr in zip(self._carry, self._state(0)):
            wp.copy(carry, arr.grad)

    # ------------------------------------------------------------------ diagnostics
    def memory_bytes(self) -> dict:
        """Bytes of the per-substep segment buffers (values + gradients) and of the checkpoints."""
        seg = self._buffers.nbytes()
        ckpt = sum(a.capacity for a in self._ckpt)
        return {"segment": seg, "checkpoints": ckpt, "segment_substeps": self._segment}
