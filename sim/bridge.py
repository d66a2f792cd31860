"""torch.autograd bridge to the Warp MPM simulator, so torch optimisers drive the controls.

Only the physics runs in Warp. Action parameterisation (clamping, per-substep interpolation,
cumulative positions, rotations) stays in torch, where autograd covers it; the bridge moves a
few tensors across: per-substep tool poses, the initial particle state and the material
parameters go in, the per-env-step particle positions and velocities come out.

Inputs are wrapped zero-copy with ``wp.from_torch`` and copied device-side into the
simulator's persistent buffers (they must stay valid for the recompute in backward);
outputs and gradients are cloned out of those buffers, since the next rollout reuses them.
"""
import contextlib
import math
import warnings

import torch
import warp as wp

from ._checks import is_int, is_real
from .engine.mpm import MPMSimulator, check_tool_rotations, check_tool_steps

_PARAMS = ("E", "nu", "viscosity")


def _stream_scope(device: torch.device):
    if device.type == "cuda":
        return wp.ScopedStream(wp.stream_from_torch(device))
    return contextlib.nullcontext()


def _check_tensor(name: str, t: torch.Tensor, shape: tuple, sim: MPMSimulator) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if str(wp.device_from_torch(t.device)) != str(wp.get_device(sim.config.device)):
        raise ValueError(f"{name} is on {t.device} but the simulator runs on {sim.config.device}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf")


def _load(dst: wp.array, src: torch.Tensor, dtype, scalar: torch.dtype) -> None:
    """Copy ``src`` into the first rows of ``dst`` (zero-copy view of src, device-side copy)."""
    view = wp.from_torch(src.detach().to(scalar).contiguous(), dtype=dtype)
    wp.copy(dst, view, count=view.size)


def _run_forward(sim: MPMSimulator, n_steps: int, inputs) -> None:
    """Load ``inputs`` ``(tool_pos, tool_rot, x0, v0, E, nu, viscosity)`` into the simulator's
    buffers and run its forward over ``n_steps`` env steps."""
    k, scalar = sim.kernels, getattr(torch, sim.config.dtype)
    tool_pos, tool_rot, x0, v0, *params = inputs
    if sim.n_tools:
        _load(sim.tool_pos, tool_pos, k.vec, scalar)
        _load(sim.tool_rot, tool_rot, k.mat, scalar)
    _load(sim.x0, x0, k.vec, scalar)
    _load(sim.v0, v0, k.vec, scalar)
    for name, value in zip(_PARAMS, params):
        _load(getattr(sim, name), value, k.scalar, scalar)
    sim.forward(n_steps)


class MPMRollout(torch.autograd.Function):
    """``(tool_pos, tool_rot, x0, v0, E, nu, viscosity) -> (xs, vs)``; see :func:`mpm_rollout`.

    The simulator holds one rollout at a time. If it ran another rollout (or an
    ``mpm_continue``) between this forward and its backward, e.g. the worlds of a batched
    env rollout, backward re-loads this rollout's inputs and recomputes its forward first, so
    the gradient is always that of this rollout.
    """

    @staticmethod
    def forward(ctx, sim, n_steps, tool_pos, tool_rot, x0, v0, E, nu, viscosity):
        inputs = (tool_pos, tool_rot, x0, v0, E, nu, viscosity)
        with _stream_scope(x0.device):
            _run_forward(sim, n_steps, inputs)
            xs = wp.to_torch(sim.obs_x)[: n_steps + 1].clone()
            vs = wp.to_torch(sim.obs_v)[: n_steps + 1].clone()
        ctx.sim, ctx.n_steps, ctx.S = sim, n_steps, n_steps * sim.config.substeps_per_step
        ctx.generation = sim.generation
        ctx.save_for_backward(*inputs)
        ctx.dtypes = [t.dtype for t in inputs]
        return xs, vs

    @staticmethod
    def backward(ctx, grad_xs, grad_vs):
        if torch.is_grad_enabled():
            raise RuntimeError("double backward (create_graph=True) through mpm_rollout is not supported")
        sim, k = ctx.sim, ctx.sim.kernels
        with _stream_scope(grad_xs.device):
            if sim.generation != ctx.generation:  # the simulator ran another rollout since
                _run_forward(sim, ctx.n_steps, ctx.saved_tensors)
                ctx.generation = sim.generation
            scalar = getattr(torch, sim.config.dtype)
            gx = wp.from_torch(grad_xs.to(scalar).contiguous(), dtype=k.vec)
            gv = wp.from_torch(grad_vs.to(scalar).contiguous(), dtype=k.vec)
            sim.backward(ctx.n_steps, gx, gv)
            rows = ctx.S + 1
            grads = [wp.to_torch(sim.tool_pos.grad)[:rows], wp.to_torch(sim.tool_rot.grad)[:rows],
                     wp.to_torch(sim.x0.grad), wp.to_torch(sim.v0.grad)]
            grads += [wp.to_torch(getattr(sim, name).grad) for name in _PARAMS]
        if not sim.n_tools:
            grads[0], grads[1] = None, None
        out = [None if g is None or not need else g.clone().to(dt)
               for g, need, dt in zip(grads, ctx.needs_input_grad[2:], ctx.dtypes)]
        return (None, None, *out)


def _construction_values(sim: MPMSimulator, device: torch.device, names: list[str]) -> dict:
    """The defaults of :func:`mpm_rollout` for ``names`` (of x0, v0, E, nu, viscosity): the particles and
    materials the simulator was built with (not its buffers, which hold the last rollout's inputs)."""
    scalar = getattr(torch, sim.config.dtype)
    sources = {"x0": lambda: sim.particles.x, "v0": lambda: sim.particles.v}
    sources.update({name: (lambda name=name: [getattr(m, name) for m in sim.materials]) for name in _PARAMS})
    return {name: torch.as_tensor(sources[name](), dtype=scalar, device=device) for name in names}


def _check_material_parameters(E: torch.Tensor, nu: torch.Tensor, viscosity: torch.Tensor) -> None:
    """The ranges :class:`sim.engine.Material` enforces, for per-rollout overrides."""
    if not (E > 0).all():
        raise ValueError(f"E must be positive, got {E.tolist()}")
    if not ((nu > -1.0) & (nu < 0.5)).all():
        raise ValueError(f"nu must lie in (-1, 0.5), got {nu.tolist()}")
    if not (viscosity >= 0).all():
        raise ValueError(f"viscosity must be >= 0, got {viscosity.tolist()}")


def _check_tool_motion(tool_pos: torch.Tensor, tool_rot: torch.Tensor, limit: float) -> None:
    """Per-substep tool steps within ``limit`` and proper rotation matrices."""
    steps = torch.linalg.vector_norm(torch.diff(tool_pos.detach(), dim=0), dim=-1)
    check_tool_steps(steps.double().cpu().numpy(), limit, name="tool_pos")
    check_tool_rotations(tool_rot.detach().double().cpu().numpy(), name="tool_rot")


def mpm_rollout(sim: MPMSimulator, n_steps: int, tool_pos: torch.Tensor = None,
                tool_rot: torch.Tensor = None, x0: torch.Tensor = None, v0: torch.Tensor = None,
                E: torch.Tensor = None, nu: torch.Tensor = None, viscosity: torch.Tensor = None):
    """Differentiable rollout of ``n_steps`` env steps.

    Args (torch tensors on the simulator's device; any dtype, cast to the simulator's):
        tool_pos: (S+1, n_tools, d) tool positions per substep, S = n_steps * substeps_per_step.
        tool_rot: (S+1, n_tools, d, d) tool rotation matrices (default identity).
        x0, v0: (N, d) initial particle positions / velocities (default: the ``ParticleSet``
            the simulator was built with).
        E, nu, viscosity: (n_materials,) material parameters (default: the simulator's
            ``Material`` list); overrides hold for this call only.
    Returns:
        xs, vs: (n_steps+1, N, d) positions / velocities after each env step (row 0: initial).
    Gradients flow to every argument that requires grad. ``ValueError`` for: non-finite inputs;
    tools moving more than ``MPMConfig.max_tool_step`` (default dx) per substep; ``tool_rot``
    entries that are not rotations; ``E <= 0``, ``nu`` outside (-1, 0.5), ``viscosity < 0``;
    present particles of ``x0`` outside ``[dx, 1 - 2 dx]``. An unstable rollout raises
    ``sim.engine.SimulationError``. Another rollout on ``sim`` before this one's backward is
    allowed: the backward then recomputes this forward (see :class:`MPMRollout`).
    """
    if not isinstance(sim, MPMSimulator):
        raise TypeError(f"sim must be an MPMSimulator, got {type(sim).__name__}")
    c = sim.config
    if not is_int(n_steps) or not 1 <= n_steps <= c.max_steps:
        raise ValueError(f"n_steps must be an int in [1, {c.max_steps}], got {n_steps!r}")
    n_steps = int(n_steps)
    S, d, n, T = n_steps * c.substeps_per_step, c.dim, sim.n_particles, max(sim.n_tools, 1)
    device = wp.device_to_torch(wp.get_device(c.device))
    given = {"tool_pos": tool_pos, "tool_rot": tool_rot, "x0": x0, "v0": v0, "E": E, "nu": nu,
             "viscosity": viscosity}
    default = _construction_values(sim, device, [name for name in ("x0", "v0", *_PARAMS) if given[name] is None])
    shapes = {"tool_pos": (S + 1, T, d), "tool_rot": (S + 1, T, d, d), "x0": (n, d), "v0": (n, d),
              "E": (len(sim.materials),), "nu": (len(sim.materials),), "viscosity": (len(sim.materials),)}
    if sim.n_tools == 0 and (tool_pos is not None or tool_rot is not None):
        raise ValueError("tool_pos/tool_rot given but the simulator has no tools")
    if sim.n_tools and tool_pos is None:
        raise ValueError("tool_pos is required when the simulator has tools")
    if tool_rot is None:
        given["tool_rot"] = torch.eye(d, device=device).expand(S + 1, T, d, d)
    if not sim.n_tools:  # a placeholder: no tool poses are loaded
        given["tool_pos"] = torch.zeros(S + 1, T, d, device=device)
    args = []
    for name, shape in shapes.items():
        t = default[name] if given[name] is None else given[name]
        _check_tensor(name, t, shape, sim)
        args.append(t)
    if sim.n_tools:
        _check_tool_motion(args[0], args[1], c.tool_step_limit)
    _check_material_parameters(*(t.detach() for t in args[4:]))
    return MPMRollout.apply(sim, n_steps, *args)


def mpm_continue(sim: MPMSimulator, start_step: int, n_steps: int, state: tuple, tool_pos: torch.Tensor = None,
                 tool_rot: torch.Tensor = None):
    """Continue an episode for ``n_steps`` env steps from its engine state at ``start_step``
    (no gradient; O(n_steps), independent of ``start_step``; see :meth:`MPMSimulator.advance`).

    Args (torch tensors on the simulator's device):
        start_step, n_steps: ints (Python or numpy) with ``0 <= start_step``, ``1 <= n_steps`` and
            ``start_step + n_steps <= max_steps``.
        state: ``(x, v, C, F)`` of shapes (N, d), (N, d), (N, d, d), (N, d, d), the full particle
            state after ``start_step`` env steps (C: APIC matrices, F: deformation gradients).
        tool_pos: (S+1, n_tools, d) tool positions of substeps ``start_step * substeps_per_step``
            .. ``+ S``, S = n_steps * substeps_per_step; tool_rot: (S+1, n_tools, d, d) (default identity).
    Returns:
        ``(xs, state)``: positions ``(n_steps, N, d)`` after each env step and the end state ``(x, v, C, F)``.
    Raises ``ValueError`` as :func:`mpm_rollout` does, and if a particle of ``state`` present at
    ``start_step`` lies outside ``[dx, 1 - 2 dx]``. No gradient flows back: an input that
    requires grad gets a warning (use :func:`mpm_rollout` for a differentiable rollout). A pending
    :func:`mpm_rollout` backward on the same ``sim`` recomputes its forward afterwards.
    """
    if not isinstance(sim, MPMSimulator):
        raise TypeError(f"sim must be an MPMSimulator, got {type(sim).__name__}")
    _check_continue_steps(sim, start_step, n_steps)
    start_step, n_steps = int(start_step), int(n_steps)
    tool_rot = _check_continue_inputs(sim, n_steps, state, tool_pos, tool_rot)
    _warn_detached({"state.x": state[0], "state.v": state[1], "state.C": state[2], "state.F": state[3],
                    "tool_pos": tool_pos, "tool_rot": tool_rot})
    with torch.no_grad():
        return _continue(sim, start_step, n_steps, state, tool_pos, tool_rot)


def _check_continue_steps(sim: MPMSimulator, start_step, n_steps) -> None:
    """``start_step`` and ``n_steps`` of :func:`mpm_continue`: ints (not bools) inside the horizon."""
    if not (is_int(start_step) and is_int(n_steps)):
        raise TypeError(f"start_step and n_steps must be ints, got {start_step!r}, {n_steps!r}")
    limit = sim.config.max_steps
    if start_step < 0 or n_steps < 1 or start_step + n_steps > limit:
        raise ValueError(f"need 0 <= start_step, 1 <= n_steps and start_step + n_steps <= {limit}, "
                         f"got start_step={start_step}, n_steps={n_steps}")


def _check_continue_inputs(sim: MPMSimulator, n_steps: int, state, tool_pos, tool_rot):
    """Shapes, devices and values of :func:`mpm_continue`'s tensors; returns ``tool_rot`` (identity
    by default; None without tools)."""
    c = sim.config
    S, d, n, T = n_steps * c.substeps_per_step, c.dim, sim.n_particles, max(sim.n_tools, 1)
    if not isinstance(state, (tuple, list)) or len(state) != 4:
        raise ValueError("state must be a tuple (x, v, C, F)")
    for name, t, shape in zip("xvCF", state, [(n, d), (n, d), (n, d, d), (n, d, d)]):
        _check_tensor(f"state.{name}", t, shape, sim)
    if not sim.n_tools:
        return None
    if tool_pos is None:
        raise ValueError("tool_pos is required when the simulator has tools")
    _check_tensor("tool_pos", tool_pos, (S + 1, T, d), sim)
    if tool_rot is None:
        tool_rot = torch.eye(d, device=tool_pos.device).expand(S + 1, T, d, d)
    _check_tensor("tool_rot", tool_rot, (S + 1, T, d, d), sim)
    _check_tool_motion(tool_pos, tool_rot, c.tool_step_limit)
    return tool_rot


def _warn_detached(tensors: dict) -> None:
    """Warn about the inputs of :func:`mpm_continue` that require grad: no gradient reaches them."""
    names = [name for name, t in tensors.items() if isinstance(t, torch.Tensor) and t.requires_grad]
    if names and torch.is_grad_enabled():
        verb = "requires grad but is" if len(names) == 1 else "require grad but are"
        warnings.warn(f"mpm_continue does not propagate gradients: {', '.join(names)} {verb} detached; "
                      "use mpm_rollout for a differentiable rollout", stacklevel=3)


def _continue(sim: MPMSimulator, start_step: int, n_steps: int, state: tuple, tool_pos, tool_rot):
    """Load the checked inputs of :func:`mpm_continue` and advance the simulator."""
    c, k = sim.config, sim.kernels
    S, scalar = n_steps * c.substeps_per_step, getattr(torch, c.dtype)
    first = start_step * c.substeps_per_step
    with _stream_scope(state[0].device):
        if sim.n_tools:
            _load(sim.tool_pos[first:first + S + 1], tool_pos, k.vec, scalar)
            _load(sim.tool_rot[first:first + S + 1], tool_rot, k.mat, scalar)
        for dst, src, dtype in zip(sim.resume, state, (k.vec, k.vec, k.mat, k.mat)):
            _load(dst, src, dtype, scalar)
        sim.advance(start_step, n_steps)
        xs = wp.to_torch(sim.obs_x)[start_step + 1:start_step + 1 + n_steps].clone()
        end = tuple(wp.to_torch(a).clone() for a in sim.resume)
    dtype = state[0].dtype
    return xs.to(dtype), tuple(t.to(dtype) for t in end)


def tool_path(start: torch.Tensor, step_velocity: torch.Tensor, substeps_per_step: int, dt: float) -> torch.Tensor:
    """Per-substep tool positions from per-env-step velocities (FluidLab spreads each action
    evenly over the substeps of its step).

    start: (n_tools, d); step_velocity: (n_steps, n_tools, d) (tensors); substeps_per_step: an
    int >= 1; dt: a finite number > 0 (or a one-element tensor).
    Returns (n_steps * substeps_per_step + 1, n_tools, d): ``p[s+1] = p[s] + dt v[s // substeps]``.
    """
    _check_tool_path(start, step_velocity, substeps_per_step, dt)
    substeps_per_step = int(substeps_per_step)
    steps = torch.repeat_interleave(step_velocity, substeps_per_step, dim=0) * dt
    return torch.cat([start[None], start[None] + torch.cumsum(steps, dim=0)], dim=0)


def _check_tool_path(start, step_velocity, substeps_per_step, dt) -> None:
    """The arguments of :func:`tool_path`, each named in its error."""
    for name, t in (("start", start), ("step_velocity", step_velocity)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if step_velocity.ndim != 3 or start.shape != step_velocity.shape[1:]:
        raise ValueError(f"step_velocity must be (n_steps, *start.shape), got {tuple(step_velocity.shape)} "
                         f"and start {tuple(start.shape)}")
    if not is_int(substeps_per_step) or substeps_per_step < 1:
        raise ValueError(f"substeps_per_step must be an int >= 1, got {substeps_per_step!r}")
    if isinstance(dt, torch.Tensor):
        valid = dt.numel() == 1 and bool(torch.isfinite(dt).all() and (dt > 0).all())
    else:
        valid = is_real(dt) and math.isfinite(dt) and dt > 0
    if not valid:
        raise ValueError(f"dt must be a finite number > 0, got {dt!r}")


def rotation_2d(angle: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 2, 2) for angles (...) in radians (counter-clockwise)."""
    c, s = torch.cos(angle), torch.sin(angle)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
