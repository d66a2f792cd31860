"""Eulerian 2-D smoke/gas grid on NVIDIA Warp, differentiable and driven from torch.

Stable fluids (Stam 1999, "Stable Fluids", SIGGRAPH) on a collocated ``N x N`` grid in a
closed box, in grid units (cell size 1), batched over ``B`` independent worlds. One step:

1. forces: ``v += dt * (buoyancy * q * e_y + a_t * g(x))`` where ``g`` is the Gaussian
   footprint ``exp(-|x - c|^2 / r^2)`` of an air-conditioner-like jet at ``c`` and
   ``a_t`` is the step's action (a 2-vector force per world);
2. semi-Lagrangian self-advection ``v(x) <- v(x - dt v(x))`` with bilinear sampling
   (Stam eq. 4, clamped to the box);
3. pressure projection: central-difference divergence (zero velocity outside the box),
   ``jacobi_iters`` Jacobi sweeps of the 5-point Poisson equation ``lap p = div`` with
   Neumann walls, ``v -= grad p`` (Stam eq. 6-8);
4. the scalar field ``q`` (smoke density or temperature) is advected by the projected
   velocity and the jet adds ``source * g(x)`` of it.

Gradients flow to the actions, the initial velocity and the initial scalar field. The
whole rollout is recorded on one ``wp.Tape`` except the pressure solve, which is a
single ``tape.record_func`` callback with its own adjoint: the Jacobi map
``p_K = J(div)`` is linear and symmetric (its neighbour sum with clamped indices is a
symmetric matrix), so ``div.grad += J(p.grad)`` runs the same sweeps on the incoming
gradient. Pressure memory is therefore O(1) in the number of iterations.

Tensor layout: velocity ``(B, N, N, 2)``, scalar ``(B, N, N)``, actions ``(B, T, 2)``,
index ``[b, i, j]`` with ``i`` along x and ``j`` along y (up).
"""

import contextlib
import math
import types
from dataclasses import dataclass

import torch
import warp as wp

from .._checks import is_int, is_real, plain_ints

wp.init()

__all__ = ["SmokeConfig", "SmokeGrid"]


@dataclass(frozen=True)
class SmokeConfig:
    """Physical and numerical settings of a :class:`SmokeGrid` (all lengths in cells).

    Attributes:
        resolution: cells per side ``N`` (>= 4).
        dt: time step in grid units.
        jacobi_iters: Jacobi sweeps per pressure solve (FluidLab uses 50 for Circulation).
        buoyancy: upward acceleration per unit of ``q``.
        jet_position: jet centre as fractions of the box side, ``(x, y)`` in ``[0, 1]``.
        jet_radius: jet footprint radius ``r`` in cells.
        jet_source: amount of ``q`` the jet adds per step at its centre (>= 0).
    """

    resolution: int = 32
    dt: float = 1.0
    jacobi_iters: int = 30
    buoyancy: float = 0.0
    jet_position: tuple[float, float] = (0.1, 0.5)
    jet_radius: float = 2.0
    jet_source: float = 0.1

    def __post_init__(self):
        check_grid_config(self, dims=2)


def check_grid_config(cfg, dims: int) -> None:
    """Validate the fields shared by the 2-D and 3-D smoke configs (``dims`` jet coordinates);
    numpy-int fields become Python ints."""
    if not is_int(cfg.resolution) or cfg.resolution < 4:
        raise ValueError(f"resolution must be an int >= 4, got {cfg.resolution!r}")
    if not is_int(cfg.jacobi_iters) or cfg.jacobi_iters < 1:
        raise ValueError(f"jacobi_iters must be an int >= 1, got {cfg.jacobi_iters!r}")
    for name in ("dt", "jet_radius"):
        value = getattr(cfg, name)
        if not (is_real(value) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    if not (is_real(cfg.buoyancy) and math.isfinite(cfg.buoyancy)):
        raise ValueError(f"buoyancy must be a finite number, got {cfg.buoyancy!r}")
    if not (is_real(cfg.jet_source) and math.isfinite(cfg.jet_source) and cfg.jet_source >= 0):
        raise ValueError(f"jet_source must be a finite number >= 0 (a negative source drains the smoke below "
                         f"zero mass), got {cfg.jet_source!r}")
    position = cfg.jet_position
    values = list(position) if hasattr(position, "__len__") else []
    if len(values) != dims or not all(is_real(c) and 0.0 <= c <= 1.0 for c in values):
        words = {2: "two", 3: "three"}[dims]
        raise ValueError(f"jet_position must be {words} fractions in [0, 1], got {position!r}")
    plain_ints(cfg)


def _make_kernels(T):
    """Build the smoke kernels for scalar type ``T`` in their own Warp module."""
    V = wp.types.vector(2, T)
    module = f"sim_engine_smoke_{T.__name__}"

    @wp.func(module=module)
    def bilinear_weights(x: T, y: T, n: int):
        """Lower-left cell and fractional offsets of a point clamped to the box."""
        x = wp.clamp(x, T(0.0), T(float(n - 1)))
        y = wp.clamp(y, T(0.0), T(float(n - 1)))
        i0 = wp.min(int(wp.floor(x)), n - 2)
        j0 = wp.min(int(wp.floor(y)), n - 2)
        return i0, j0, x - T(float(i0)), y - T(float(j0))

    @wp.func(module=module)
    def sample_vector(f: wp.array3d(dtype=V), b: int, x: T, y: T, n: int):
        i0, j0, fx, fy = bilinear_weights(x, y, n)
        one = T(1.0)
        return ((one - fx) * (one - fy) * f[b, i0, j0] + fx * (one - fy) * f[b, i0 + 1, j0]
                + (one - fx) * fy * f[b, i0, j0 + 1] + fx * fy * f[b, i0 + 1, j0 + 1])

    @wp.func(module=module)
    def sample_scalar(f: wp.array3d(dtype=T), b: int, x: T, y: T, n: int):
        i0, j0, fx, fy = bilinear_weights(x, y, n)
        one = T(1.0)
        return ((one - fx) * (one - fy) * f[b, i0, j0] + fx * (one - fy) * f[b, i0 + 1, j0]
                + (one - fx) * fy * f[b, i0, j0 + 1] + fx * fy * f[b, i0 + 1, j0 + 1])

    @wp.func(module=module)
    def jet_profile(i: int, j: int, jx: T, jy: T, inv_r2: T):
        dx = T(float(i)) - jx
        dy = T(float(j)) - jy
        return wp.exp(-(dx * dx + dy * dy) * inv_r2)

    @wp.kernel(module=module)
    def apply_forces(v_in: wp.array3d(dtype=V), q: wp.array3d(dtype=T), actions: wp.array2d(dtype=V),
                     step: int, jx: T, jy: T, inv_r2: T, buoyancy: T, dt: T, v_out: wp.array3d(dtype=V)):
        b, i, j = wp.tid()
        force = actions[b, step] * jet_profile(i, j, jx, jy, inv_r2) + V(T(0.0), buoyancy * q[b, i, j])
        v_out[b, i, j] = v_in[b, i, j] + dt * force

    @wp.kernel(module=module)
    def advect_velocity(v: wp.array3d(dtype=V), dt: T, n: int, v_out: wp.array3d(dtype=V)):
        b, i, j = wp.tid()
        u = v[b, i, j]
        v_out[b, i, j] = sample_vector(v, b, T(float(i)) - dt * u[0], T(float(j)) - dt * u[1], n)

    @wp.kernel(module=module)
    def divergence(v: wp.array3d(dtype=V), n: int, div: wp.array3d(dtype=T)):
        b, i, j = wp.tid()
        zero = V(T(0.0), T(0.0))
        left = zero
        right = zero
        down = zero
        up = zero
        if i > 0:
            left = v[b, i - 1, j]
        if i < n - 1:
            right = v[b, i + 1, j]
        if j > 0:
            down = v[b, i, j - 1]
        if j < n - 1:
            up = v[b, i, j + 1]
        div[b, i, j] = T(0.5) * (right[0] - left[0] + up[1] - down[1])

    @wp.kernel(module=module, enable_backward=False)
    def jacobi_sweep(rhs: wp.array3d(dtype=T), p: wp.array3d(dtype=T), n: int, p_out: wp.array3d(dtype=T)):
        """One Jacobi sweep of ``lap p = rhs`` with Neumann walls (clamped neighbours)."""
        b, i, j = wp.tid()
        total = (p[b, wp.max(i - 1, 0), j] + p[b, wp.min(i + 1, n - 1), j]
                 + p[b, i, wp.max(j - 1, 0)] + p[b, i, wp.min(j + 1, n - 1)])
        p_out[b, i, j] = T(0.25) * (total - rhs[b, i, j])

    @wp.kernel(module=module, enable_backward=False)
    def accumulate(src: wp.array3d(dtype=T), dst: wp.array3d(dtype=T)):
        b, i, j = wp.tid()
        dst[b, i, j] = dst[b, i, j] + src[b, i, j]

    @wp.kernel(module=module)
    def project(v: wp.array3d(dtype=V), p: wp.array3d(dtype=T), n: int, v_out: wp.array3d(dtype=V)):
        b, i, j = wp.tid()
        gx = p[b, wp.min(i + 1, n - 1), j] - p[b, wp.max(i - 1, 0), j]
        gy = p[b, i, wp.min(j + 1, n - 1)] - p[b, i, wp.max(j - 1, 0)]
        v_out[b, i, j] = v[b, i, j] - T(0.5) * V(gx, gy)

    @wp.kernel(module=module)
    def advect_scalar(v: wp.array3d(dtype=V), q: wp.array3d(dtype=T), dt: T, n: int, jx: T, jy: T,
                      inv_r2: T, source: T, q_out: wp.array3d(dtype=T)):
        b, i, j = wp.tid()
        u = v[b, i, j]
        advected = sample_scalar(q, b, T(float(i)) - dt * u[0], T(float(j)) - dt * u[1], n)
        q_out[b, i, j] = advected + source * jet_profile(i, j, jx, jy, inv_r2)

    @wp.kernel(module=module)
    def store_frame(q: wp.array3d(dtype=T), step: int, frames: wp.array4d(dtype=T)):
        b, i, j = wp.tid()
        frames[b, step, i, j] = q[b, i, j]

    return types.SimpleNamespace(
        vec=V, scalar=T, apply_forces=apply_forces, advect_velocity=advect_velocity, divergence=divergence,
        jacobi_sweep=jacobi_sweep, accumulate=accumulate, project=project, advect_scalar=advect_scalar,
        store_frame=store_frame)


_KERNELS = {torch.float32: _make_kernels(wp.float32), torch.float64: _make_kernels(wp.float64)}


@contextlib.contextmanager
def _torch_stream(device: torch.device):
    """Run Warp launches on torch's current stream (CUDA) so no extra sync is needed."""
    if device.type == "cuda":
        with wp.ScopedStream(wp.stream_from_torch(device)):
            yield
    else:
        yield


class _Step:
    """The per-step buffers of one smoke step (each written exactly once under a tape)."""

    def __init__(self, shape, kernels, device, requires_grad):
        def alloc(dtype):
            return wp.zeros(shape, dtype=dtype, device=device, requires_grad=requires_grad)

        self.v_forced = alloc(kernels.vec)
        self.v_advected = alloc(kernels.vec)
        self.div = alloc(kernels.scalar)
        self.p = alloc(kernels.scalar)
        self.v = alloc(kernels.vec)
        self.q = alloc(kernels.scalar)


class SmokeGrid:
    """A batched differentiable 2-D smoke grid (see the module docstring for the model).

    Args:
        config: :class:`SmokeConfig`.
        dtype: ``torch.float32`` (default, speed) or ``torch.float64`` (gradient tests).

    The main entry point is :meth:`simulate`, a torch-differentiable rollout. One rollout
    may be in flight per grid at a time for backward (the tape lives in the autograd graph
    node, the scratch buffers in the grid).
    """

    def __init__(self, config: SmokeConfig | None = None, dtype: torch.dtype = torch.float32):
        if dtype not in _KERNELS:
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        if config is not None and not isinstance(config, SmokeConfig):
            raise TypeError(f"config must be a SmokeConfig or None, got {type(config).__name__}")
        self.config = config or SmokeConfig()
        self.dtype = dtype
        self.kernels = _KERNELS[dtype]
        n = self.config.resolution
        self.jet_center = (self.config.jet_position[0] * (n - 1), self.config.jet_position[1] * (n - 1))

    @property
    def resolution(self) -> int:
        return self.config.resolution

    def jet_profile(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """The jet footprint ``g(x)``, shape ``(N, N)``, as a torch tensor (for rendering, losses)."""
        n = self.resolution
        idx = torch.arange(n, dtype=self.dtype, device=device)
        dx = (idx - self.jet_center[0])[:, None]
        dy = (idx - self.jet_center[1])[None, :]
        return torch.exp(-(dx ** 2 + dy ** 2) / self.config.jet_radius ** 2)

    def simulate(self, v0: torch.Tensor, q0: torch.Tensor, actions: torch.Tensor):
        """Roll the grid forward over ``T = actions.shape[1]`` steps.

        Args:
            v0: initial velocity ``(B, N, N, 2)``.
            q0: initial scalar field ``(B, N, N)``.
            actions: jet forces ``(B, T, 2)``, finite.

        Returns:
            ``(frames, v_final)``: the scalar field after every step ``(B, T, N, N)`` and the
            final velocity ``(B, N, N, 2)``; both differentiable w.r.t. all three inputs.
        """
        self._check_inputs(v0, q0, actions)
        return _simulate(v0, q0, actions, self)

    def _check_inputs(self, v0, q0, actions):
        n = self.resolution
        for name, t in (("v0", v0), ("q0", q0), ("actions", actions)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
            if t.dtype != self.dtype:
                raise TypeError(f"{name} must have dtype {self.dtype}, got {t.dtype}")
        b = q0.shape[0] if q0.dim() == 3 else None
        if q0.dim() != 3 or q0.shape[1:] != (n, n):
            raise ValueError(f"q0 must have shape (B, {n}, {n}), got {tuple(q0.shape)}")
        if v0.shape != (b, n, n, 2):
            raise ValueError(f"v0 must have shape ({b}, {n}, {n}, 2), got {tuple(v0.shape)}")
        if actions.dim() != 3 or actions.shape[0] != b or actions.shape[2] != 2 or actions.shape[1] < 1:
            raise ValueError(f"actions must have shape ({b}, T>=1, 2), got {tuple(actions.shape)}")
        if not (v0.device == q0.device == actions.device):
            raise ValueError("v0, q0 and actions must be on the same device")
        for name, t in (("v0", v0), ("q0", q0), ("actions", actions)):
            if not torch.isfinite(t).all():
                raise ValueError(f"{name} contains NaN or infinite values")

    # ----------------------------------------------------------------------------- Warp side
    def _pressure_solve(self, step: _Step, scratch, tape):
        """Jacobi solve ``p = J(div)`` from ``p = 0``; records its adjoint on ``tape``."""
        k, n, iters = self.kernels, self.resolution, self.config.jacobi_iters
        dim = step.div.shape

        def sweep(rhs, out):
            a, b = scratch[0], scratch[1]
            a.zero_()
            src = a
            for it in range(iters):
                dst = out if it == iters - 1 else (b if src is a else a)
                wp.launch(k.jacobi_sweep, dim=dim, inputs=[rhs, src, n], outputs=[dst], record_tape=False)
                src = dst

        sweep(step.div, step.p)
        if tape is not None:
            def backward():
                result = scratch[2]
                sweep(step.p.grad, result)
                wp.launch(k.accumulate, dim=dim, inputs=[result], outputs=[step.div.grad], record_tape=False)

            tape.record_func(backward, arrays=[step.div, step.p])

    def _step(self, v, q, actions, t, out: _Step, scratch, tape):
        """Advance ``(v, q)`` by one step into the buffers of ``out``."""
        k, cfg, n = self.kernels, self.config, self.resolution
        dim = q.shape
        jx, jy = self.jet_center
        inv_r2 = 1.0 / cfg.jet_radius ** 2
        wp.launch(k.apply_forces, dim=dim, inputs=[v, q, actions, t, jx, jy, inv_r2, cfg.buoyancy, cfg.dt],
                  outputs=[out.v_forced])
        wp.launch(k.advect_velocity, dim=dim, inputs=[out.v_forced, cfg.dt, n], outputs=[out.v_advected])
        wp.launch(k.divergence, dim=dim, inputs=[out.v_advected, n], outputs=[out.div])
        self._pressure_solve(out, scratch, tape)
        wp.launch(k.project, dim=dim, inputs=[out.v_advected, out.p, n], outputs=[out.v])
        wp.launch(k.advect_scalar, dim=dim, inputs=[out.v, q, cfg.dt, n, jx, jy, inv_r2, cfg.jet_source],
                  outputs=[out.q])

    def _rollout(self, v0, q0, actions, frames, record: bool):
        """Run all steps; returns ``(tape or None, final step buffers, kept step buffers)``."""
        device = v0.device
        shape = q0.shape
        scratch = [wp.empty(shape, dtype=self.kernels.scalar, device=device) for _ in range(3)]
        steps = []
        v, q = v0, q0
        tape = wp.Tape() if record else None
        with tape if record else contextlib.nullcontext():
            for t in range(actions.shape[1]):
                if record or len(steps) < 2:
                    steps.append(_Step(shape, self.kernels, device, record))
                out = steps[t] if record else steps[t % 2]
                self._step(v, q, actions, t, out, scratch, tape)
                self._store_frame(out.q, t, actions.shape[1], frames)
                v, q = out.v, out.q
        return tape, v, steps

    def _frames_shape(self, batch: int, steps: int) -> tuple[tuple, tuple]:
        """Shapes of the frames buffer: Warp's and the torch view returned by :meth:`simulate`."""
        n = self.resolution
        return (batch, steps, n, n), (batch, steps, n, n)

    def _store_frame(self, q, t: int, steps: int, frames) -> None:
        wp.launch(self.kernels.store_frame, dim=q.shape, inputs=[q, t], outputs=[frames])


def _simulate(v0, q0, actions, grid):
    """Run :class:`_SmokeRollout`; with grad mode off, on detached inputs (``needs_input_grad``
    ignores grad mode, so an input requiring grad would record a tape no backward can use)."""
    if not torch.is_grad_enabled():
        v0, q0, actions = v0.detach(), q0.detach(), actions.detach()
    return _SmokeRollout.apply(v0, q0, actions, grid)


class _SmokeRollout(torch.autograd.Function):
    """torch bridge: Warp forward (taped when a gradient is needed), Warp backward."""

    @staticmethod
    def forward(ctx, v0, q0, actions, grid: SmokeGrid):  # or a SmokeGrid3D
        k = grid.kernels
        b, steps = actions.shape[:2]
        record = any(ctx.needs_input_grad[:3]) and b > 0  # an empty Warp array has no gradient
        ctx.empty = [torch.zeros_like(t) for t in (v0, q0, actions)] if b == 0 else None
        warp_shape, torch_shape = grid._frames_shape(b, steps)
        with _torch_stream(v0.device):
            wv0 = wp.from_torch(v0.detach().contiguous(), dtype=k.vec, requires_grad=record)
            wq0 = wp.from_torch(q0.detach().contiguous(), dtype=k.scalar, requires_grad=record)
            wact = wp.from_torch(actions.detach().contiguous(), dtype=k.vec, requires_grad=record)
            frames = wp.zeros(warp_shape, dtype=k.scalar, device=wq0.device, requires_grad=record)
            tape, v_final, kept = grid._rollout(wv0, wq0, wact, frames, record)
            frames_t = wp.to_torch(frames).clone().reshape(torch_shape)
            v_final_t = wp.to_torch(v_final).clone()
        if record:
            ctx.warp = (tape, wv0, wq0, wact, frames, v_final, kept)
            ctx.save_for_backward(v0, q0, actions)  # the Warp arrays alias them: see backward
        return frames_t, v_final_t

    @staticmethod
    def backward(ctx, g_frames, g_v):
        if torch.is_grad_enabled():
            raise RuntimeError("double backward (create_graph=True) through SmokeGrid.simulate is not supported")
        if ctx.empty is not None:  # an empty batch: empty gradients
            return (*ctx.empty, None)
        if ctx.warp is None:
            raise RuntimeError("cannot backward twice through SmokeGrid.simulate: its Warp tape is freed "
                               "after the first backward (run the rollout again)")
        ctx.saved_tensors  # raises if an input was modified in place (the tape reads their memory)
        tape, wv0, wq0, wact, frames, v_final, _ = ctx.warp
        device = g_frames.device if g_frames is not None else g_v.device
        with _torch_stream(device):
            grads = {}
            if g_frames is not None:
                grads[frames] = wp.from_torch(g_frames.contiguous().reshape(frames.shape), dtype=frames.dtype)
            if g_v is not None:
                grads[v_final] = wp.from_torch(g_v.contiguous(), dtype=v_final.dtype)
            tape.backward(grads=grads)
            out = [wp.to_torch(a.grad).clone() for a in (wv0, wq0, wact)]
        ctx.warp = None
        return out[0], out[1], out[2], None
