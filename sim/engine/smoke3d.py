"""Eulerian 3-D smoke/gas grid on NVIDIA Warp, differentiable and driven from torch.

The 3-D counterpart of :mod:`sim.engine.smoke` (FluidLab's gas field is 3-D, 128^3): stable
fluids (Stam 1999) on a collocated ``N x N x N`` grid in a closed box, grid units, batched
over ``B`` worlds. One step:

1. forces: ``v += dt * (buoyancy * q * e_y + a_t * g(x))`` with the Gaussian jet footprint
   ``g(x) = exp(-|x - c|^2 / r^2)`` and the step's action ``a_t`` (a 3-vector force per world);
2. semi-Lagrangian self-advection ``v(x) <- v(x - dt v(x))`` with trilinear sampling
   (Stam eq. 4, clamped to the box);
3. pressure projection: central-difference divergence (zero velocity outside the box),
   ``jacobi_iters`` Jacobi sweeps of the 7-point Poisson equation ``lap p = div`` with Neumann
   walls (clamped neighbours), ``v -= grad p`` (Stam eq. 6-8);
4. the scalar ``q`` (smoke density or temperature) is advected by the projected velocity and
   the jet adds ``source * g(x)`` of it.

Gradients flow to the actions, the initial velocity and the initial scalar. The rollout is
recorded on one ``wp.Tape`` except the pressure solve: as in 2-D, the Jacobi map
``p_K = J(div)`` from ``p = 0`` is linear and symmetric (the clamped-neighbour sum is a sum of
symmetric 1-D operators), so its adjoint runs the same sweeps on ``p.grad`` and adds the result
to ``div.grad`` (one ``tape.record_func`` per step; pressure memory O(1) in the iterations).

Tensor layout: velocity ``(B, N, N, N, 3)``, scalar ``(B, N, N, N)``, actions ``(B, T, 3)``,
index ``[b, i, j, k]`` with ``i`` along x, ``j`` along y (up), ``k`` along z. Warp arrays have at
most 4 dimensions, so the frames are stored as ``(B * T, N, N, N)`` and reshaped in torch.
"""
import types
from dataclasses import dataclass
from typing import Any

import torch
import warp as wp

from .smoke import SmokeGrid, _simulate, _Step, check_grid_config

wp.init()

__all__ = ["Smoke3DConfig", "SmokeGrid3D"]


@dataclass(frozen=True)
class Smoke3DConfig:
    """Settings of a :class:`SmokeGrid3D` (lengths in cells).

    Attributes:
        resolution: cells per side ``N`` (>= 4).
        dt: time step in grid units.
        jacobi_iters: Jacobi sweeps per pressure solve (FluidLab: 500 by default, 50 in Circulation).
        buoyancy: upward (``+y``) acceleration per unit of ``q``.
        jet_position: jet centre as fractions of the box side ``(x, y, z)`` in ``[0, 1]``.
        jet_radius: footprint radius ``r`` in cells.
        jet_source: amount of ``q`` the jet adds per step at its centre (>= 0).
    """

    resolution: int = 16
    dt: float = 1.0
    jacobi_iters: int = 20
    buoyancy: float = 0.0
    jet_position: tuple[float, float, float] = (0.1, 0.5, 0.5)
    jet_radius: float = 2.0
    jet_source: float = 0.1

    def __post_init__(self):
        check_grid_config(self, dims=3)


def _make_kernels(T):
    """Build the 3-D smoke kernels for scalar type ``T`` in their own Warp module."""
    V = wp.types.vector(3, T)
    module = f"sim_engine_smoke3d_{T.__name__}"

    @wp.func(module=module)
    def cell(x: T, n: int):
        """Lower cell index and fractional offset of a coordinate clamped to the box."""
        x = wp.clamp(x, T(0.0), T(float(n - 1)))
        i0 = wp.min(int(wp.floor(x)), n - 2)
        return i0, x - T(float(i0))

    @wp.func(module=module)
    def sample(f: wp.array4d(dtype=Any), b: int, p: V, n: int):
        """Trilinear sample of a vector or scalar field at grid position ``p``."""
        i0, fx = cell(p[0], n)
        j0, fy = cell(p[1], n)
        k0, fz = cell(p[2], n)
        one = T(1.0)
        lo = ((one - fx) * (one - fy) * f[b, i0, j0, k0] + fx * (one - fy) * f[b, i0 + 1, j0, k0]
              + (one - fx) * fy * f[b, i0, j0 + 1, k0] + fx * fy * f[b, i0 + 1, j0 + 1, k0])
        hi = ((one - fx) * (one - fy) * f[b, i0, j0, k0 + 1] + fx * (one - fy) * f[b, i0 + 1, j0, k0 + 1]
              + (one - fx) * fy * f[b, i0, j0 + 1, k0 + 1] + fx * fy * f[b, i0 + 1, j0 + 1, k0 + 1])
        return (one - fz) * lo + fz * hi

    @wp.func(module=module)
    def position(i: int, j: int, k: int):
        return V(T(float(i)), T(float(j)), T(float(k)))

    @wp.func(module=module)
    def jet_profile(i: int, j: int, k: int, jet: V, inv_r2: T):
        d = position(i, j, k) - jet
        return wp.exp(-wp.dot(d, d) * inv_r2)

    @wp.kernel(module=module)
    def apply_forces(v_in: wp.array4d(dtype=V), q: wp.array4d(dtype=T), actions: wp.array2d(dtype=V),
                     step: int, jet: V, inv_r2: T, buoyancy: T, dt: T, v_out: wp.array4d(dtype=V)):
        b, i, j, k = wp.tid()
        force = actions[b, step] * jet_profile(i, j, k, jet, inv_r2) + V(T(0.0), buoyancy * q[b, i, j, k], T(0.0))
        v_out[b, i, j, k] = v_in[b, i, j, k] + dt * force

    @wp.kernel(module=module)
    def advect_velocity(v: wp.array4d(dtype=V), dt: T, n: int, v_out: wp.array4d(dtype=V)):
        b, i, j, k = wp.tid()
        v_out[b, i, j, k] = sample(v, b, position(i, j, k) - dt * v[b, i, j, k], n)

    @wp.kernel(module=module)
    def divergence(v: wp.array4d(dtype=V), n: int, div: wp.array4d(dtype=T)):
        b, i, j, k = wp.tid()
        total = T(0.0)
        if i < n - 1:
            total = total + v[b, i + 1, j, k][0]
        if i > 0:
            total = total - v[b, i - 1, j, k][0]
        if j < n - 1:
            total = total + v[b, i, j + 1, k][1]
        if j > 0:
            total = total - v[b, i, j - 1, k][1]
        if k < n - 1:
            total = total + v[b, i, j, k + 1][2]
        if k > 0:
            total = total - v[b, i, j, k - 1][2]
        div[b, i, j, k] = T(0.5) * total

    @wp.kernel(module=module, enable_backward=False)
    def jacobi_sweep(rhs: wp.array4d(dtype=T), p: wp.array4d(dtype=T), n: int, p_out: wp.array4d(dtype=T)):
        """One Jacobi sweep of the 7-point ``lap p = rhs`` with Neumann walls (clamped neighbours)."""
        b, i, j, k = wp.tid()
        total = (p[b, wp.max(i - 1, 0), j, k] + p[b, wp.min(i + 1, n - 1), j, k]
                 + p[b, i, wp.max(j - 1, 0), k] + p[b, i, wp.min(j + 1, n - 1), k]
                 + p[b, i, j, wp.max(k - 1, 0)] + p[b, i, j, wp.min(k + 1, n - 1)])
        p_out[b, i, j, k] = (total - rhs[b, i, j, k]) / T(6.0)

    @wp.kernel(module=module, enable_backward=False)
    def accumulate(src: wp.array4d(dtype=T), dst: wp.array4d(dtype=T)):
        b, i, j, k = wp.tid()
        dst[b, i, j, k] = dst[b, i, j, k] + src[b, i, j, k]

    @wp.kernel(module=module)
    def project(v: wp.array4d(dtype=V), p: wp.array4d(dtype=T), n: int, v_out: wp.array4d(dtype=V)):
        b, i, j, k = wp.tid()
        gx = p[b, wp.min(i + 1, n - 1), j, k] - p[b, wp.max(i - 1, 0), j, k]
        gy = p[b, i, wp.min(j + 1, n - 1), k] - p[b, i, wp.max(j - 1, 0), k]
        gz = p[b, i, j, wp.min(k + 1, n - 1)] - p[b, i, j, wp.max(k - 1, 0)]
        v_out[b, i, j, k] = v[b, i, j, k] - T(0.5) * V(gx, gy, gz)

    @wp.kernel(module=module)
    def advect_scalar(v: wp.array4d(dtype=V), q: wp.array4d(dtype=T), dt: T, n: int, jet: V, inv_r2: T,
                      source: T, q_out: wp.array4d(dtype=T)):
        b, i, j, k = wp.tid()
        advected = sample(q, b, position(i, j, k) - dt * v[b, i, j, k], n)
        q_out[b, i, j, k] = advected + source * jet_profile(i, j, k, jet, inv_r2)

    @wp.kernel(module=module)
    def store_frame(q: wp.array4d(dtype=T), step: int, steps: int, frames: wp.array4d(dtype=T)):
        b, i, j, k = wp.tid()
        frames[b * steps + step, i, j, k] = q[b, i, j, k]

    return types.SimpleNamespace(
        vec=V, scalar=T, apply_forces=apply_forces, advect_velocity=advect_velocity, divergence=divergence,
        jacobi_sweep=jacobi_sweep, accumulate=accumulate, project=project, advect_scalar=advect_scalar,
        store_frame=store_frame)


_KERNELS = {}


def _kernels(dtype: torch.dtype):
    if dtype not in _KERNELS:
        _KERNELS[dtype] = _make_kernels(wp.float32 if dtype == torch.float32 else wp.float64)
    return _KERNELS[dtype]


class SmokeGrid3D(SmokeGrid):
    """A batched differentiable 3-D smoke grid (model in the module docstring).

    Args:
        config: :class:`Smoke3DConfig`.
        dtype: ``torch.float32`` (default) or ``torch.float64`` (gradient tests).

    :meth:`simulate` is the torch-differentiable rollout; one rollout may be in flight per grid
    for backward (the tape lives in the autograd node). The pressure solve with its adjoint, the rollout
    and the torch bridge are :class:`SmokeGrid`'s; this class supplies the 3-D kernels and shapes.
    """

    def __init__(self, config: Smoke3DConfig | None = None, dtype: torch.dtype = torch.float32):
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        if config is not None and not isinstance(config, Smoke3DConfig):
            raise TypeError(f"config must be a Smoke3DConfig or None, got {type(config).__name__}")
        self.config = config or Smoke3DConfig()
        self.dtype = dtype
        self.kernels = _kernels(dtype)
        n = self.config.resolution
        self.jet_center = tuple(c * (n - 1) for c in self.config.jet_position)

    @property
    def resolution(self) -> int:
        return self.config.resolution

    def jet_profile(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """The jet footprint ``g(x)``, shape ``(N, N, N)``, as a torch tensor."""
        idx = torch.arange(self.resolution, dtype=self.dtype, device=device)
        d2 = sum((idx - c).pow(2).reshape([-1 if a == axis else 1 for a in range(3)])
                 for axis, c in enumerate(self.jet_center))
        return torch.exp(-d2 / self.config.jet_radius ** 2)

    def simulate(self, v0: torch.Tensor, q0: torch.Tensor, actions: torch.Tensor):
        """Roll the grid forward over ``T = actions.shape[1]`` steps.

        Args:
            v0: initial velocity ``(B, N, N, N, 3)``; q0: initial scalar ``(B, N, N, N)``;
            actions: jet forces ``(B, T, 3)``, finite.

        Returns:
            ``(frames, v_final)``: the scalar after every step ``(B, T, N, N, N)`` and the final
            velocity ``(B, N, N, N, 3)``, differentiable w.r.t. all three inputs.
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
        if q0.dim() != 4 or q0.shape[1:] != (n, n, n):
            raise ValueError(f"q0 must have shape (B, {n}, {n}, {n}), got {tuple(q0.shape)}")
        b = q0.shape[0]
        if v0.shape != (b, n, n, n, 3):
            raise ValueError(f"v0 must have shape ({b}, {n}, {n}, {n}, 3), got {tuple(v0.shape)}")
        if actions.dim() != 3 or actions.shape[0] != b or actions.shape[2] != 3 or actions.shape[1] < 1:
            raise ValueError(f"actions must have shape ({b}, T>=1, 3), got {tuple(actions.shape)}")
        if not (v0.device == q0.device == actions.device):
            raise ValueError("v0, q0 and actions must be on the same device")
        for name, t in (("v0", v0), ("q0", q0), ("actions", actions)):
            if not torch.isfinite(t).all():
                raise ValueError(f"{name} contains NaN or infinite values")

    # ----------------------------------------------------------------------------- Warp side
    def _step(self, v, q, actions, t, out: _Step, scratch, tape):
        """Advance ``(v, q)`` by one step into the buffers of ``out``."""
        k, cfg, n = self.kernels, self.config, self.resolution
        dim = q.shape
        jet = k.vec(*self.jet_center)
        inv_r2 = 1.0 / cfg.jet_radius ** 2
        wp.launch(k.apply_forces, dim=dim, inputs=[v, q, actions, t, jet, inv_r2, cfg.buoyancy, cfg.dt],
                  outputs=[out.v_forced])
        wp.launch(k.advect_velocity, dim=dim, inputs=[out.v_forced, cfg.dt, n], outputs=[out.v_advected])
        wp.launch(k.divergence, dim=dim, inputs=[out.v_advected, n], outputs=[out.div])
        self._pressure_solve(out, scratch, tape)
        wp.launch(k.project, dim=dim, inputs=[out.v_advected, out.p, n], outputs=[out.v])
        wp.launch(k.advect_scalar, dim=dim, inputs=[out.v, q, cfg.dt, n, jet, inv_r2, cfg.jet_source],
                  outputs=[out.q])

    def _frames_shape(self, batch: int, steps: int) -> tuple[tuple, tuple]:
        """Warp arrays have at most 4 dimensions: frames are stored as ``(B·T, N, N, N)``."""
        n = self.resolution
        return (batch * steps, n, n, n), (batch, steps, n, n, n)

    def _store_frame(self, q, t: int, steps: int, frames) -> None:
        wp.launch(self.kernels.store_frame, dim=q.shape, inputs=[q, t, steps], outputs=[frames])
