"""Common base of the tasks that run on the MLS-MPM engine (:mod:`sim.engine`, ``sim.bridge``).

Two paths through the engine:

* :meth:`Env.rollout_loss` / :meth:`Env.step_losses` run one differentiable rollout per
  sequence from the initial state (``sim.bridge.mpm_rollout``, checkpointed backward).
* :meth:`Env.step` continues an episode in O(1) per step: the state
  ``(control (B, P), x (B, N, 2), v (B, N, 2), C (B, N, 2, 2), F (B, N, 2, 2))`` is the engine's full
  particle state plus the tools' generalised coordinates, and ``sim.bridge.mpm_continue`` runs only
  the new step's substeps from it. Both paths run the same launches on the same values, so the
  stepped episode equals the rollout (tested bitwise on CPU).

``B`` worlds run one after another on the same simulator (one rollout in flight per simulator).
Tool trajectories are computed in float64 (then cast), so the per-step path and the
whole-sequence path give the same tool poses to the last float32 bit.
"""
from dataclasses import dataclass

import numpy as np
import torch

from sim.bridge import mpm_continue, mpm_rollout, tool_path
from sim.engine import MPMConfig, MPMSimulator, Tool, ToolShape
from sim.envs.base import Env, EnvConfig

__all__ = ["MPMEnv", "MPMEnvConfig", "block", "tool_sdf"]


@dataclass(frozen=True)
class MPMEnvConfig(EnvConfig):
    """:class:`EnvConfig` plus the MPM settings (see :class:`sim.engine.MPMConfig`).

    Attributes:
        n_grid: grid cells per axis; particles are seeded 2 per cell per axis.
        dt: substep; substeps_per_step: substeps per action step.
        segment_substeps: checkpoint segment length (None: store every substep).
        init_jitter: seeded random offset of the initial liquid particles, in particle spacings.
        gravity: gravity vector ``(2,)`` (None: the engine's ``(0, -9.8)``; FluidLab uses ``(0, -20)``).
    """

    horizon: int = 30
    action_bound: float = 1.0
    n_grid: int = 32
    dt: float = 1e-3
    substeps_per_step: int = 10
    segment_substeps: int | None = None
    init_jitter: float = 0.1
    gravity: tuple[float, float] | None = None

    def __post_init__(self):
        super().__post_init__()
        if not self.init_jitter >= 0:
            raise ValueError(f"init_jitter must be a finite number >= 0, got {self.init_jitter!r}")
        self.mpm_config()  # validates the engine fields

    def mpm_config(self, dtype: torch.dtype = torch.float32, device="cpu") -> MPMConfig:
        """The engine settings of the task."""
        return MPMConfig(dim=2, n_grid=self.n_grid, dt=self.dt, substeps_per_step=self.substeps_per_step,
                         max_steps=self.horizon, dtype="float64" if dtype == torch.float64 else "float32",
                         device=str(torch.device(device)), segment_substeps=self.segment_substeps,
                         gravity=self.gravity)

    @property
    def spacing(self) -> float:
        return 0.5 / self.n_grid


def block(lo: tuple[float, float], hi: tuple[float, float], spacing: float) -> np.ndarray:
    """Particle positions ``(M, 2)`` on a regular lattice filling the box ``[lo, hi)``."""
    xs = np.arange(lo[0] + spacing / 2, hi[0], spacing)
    ys = np.arange(lo[1] + spacing / 2, hi[1], spacing)
    return np.stack(np.meshgrid(xs, ys, indexing="ij"), -1).reshape(-1, 2)


class MPMEnv(Env):
    """A task on the MPM engine. By default the action is the velocity ``(2,)`` of tool 0 per
    step and the tools' generalised coordinates are their positions.

    Subclasses implement :meth:`_scene` (particles, materials, tools), :meth:`tool_start`
    and the loss, and may override :meth:`control_start` / :meth:`tool_poses` for other tool
    kinematics (the pouring task rotates a container). Observations are particle positions
    after each step ``(B, T, N, 2)``.
    """

    action_dim = 2
    config_class = MPMEnvConfig

    def __init__(self, config: MPMEnvConfig, batch_size: int = 1, device="cpu", dtype=torch.float32):
        device = self._check_setup(config, device)
        particles, materials, tools = self._scene(config)
        self.sim = MPMSimulator(config.mpm_config(dtype, device), particles, materials, tools)
        self._jitter_mask = torch.as_tensor(self._jittered(particles), dtype=torch.bool)
        super().__init__(config, batch_size=batch_size, device=device, dtype=dtype)

    # ------------------------------------------------------------------ task interface
    def _scene(self, config):
        """``(ParticleSet, materials, tools)`` of the task."""
        raise NotImplementedError

    def _jittered(self, particles) -> np.ndarray:
        """Which particles get the seeded initial jitter ``(N,)`` (default: all present at t=0)."""
        return particles.birth == 0 if particles.birth is not None else np.ones(len(particles.x), bool)

    def tool_start(self) -> torch.Tensor:
        """Initial tool positions ``(n_tools, 2)``."""
        raise NotImplementedError

    def control_start(self) -> torch.Tensor:
        """Initial generalised coordinates ``(P,)`` (float64) of the tools; default: the
        flattened tool positions."""
        return self.tool_start().to(torch.float64).flatten()

    def tool_poses(self, actions: torch.Tensor, control: torch.Tensor):
        """Tool poses over the substeps of ``actions`` ``(T, A)`` from coordinates ``control`` ``(P,)``.

        Returns ``(pos (S + 1, n_tools, 2), rot (S + 1, n_tools, 2, 2) or None, control_end (P,))``
        in float64 (``S = T * substeps_per_step``). Default: tool 0 moves with velocity ``a_t``
        (spread evenly over the substeps, as FluidLab), the other tools stay put.
        """
        start = control.reshape(-1, 2)
        velocity = torch.zeros(actions.shape[0], start.shape[0], 2, dtype=torch.float64, device=actions.device)
        velocity = torch.cat([actions[:, None].to(torch.float64), velocity[:, 1:]], dim=1)
        pos = tool_path(start, velocity, self.config.substeps_per_step, self.config.dt)
        return pos, None, pos[-1].flatten()

    def tool_positions(self, actions: torch.Tensor) -> torch.Tensor:
        """Per-substep tool positions ``(S + 1, n_tools, 2)`` of actions ``(T, A)`` from the start."""
        return self.tool_poses(actions, self.control_start().to(actions.device))[0].to(actions.dtype)

    # ------------------------------------------------------------------ Env hooks
    def _initial_state(self, generator):
        x0 = torch.as_tensor(self.sim.particles.x, dtype=torch.float64)
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
        x0 = x0 + self.config.init_jitter * self.config.spacing * noise * self._jitter_mask[:, None]
        self._check_jitter(x0)
        self._x0 = x0.to(device=self.device, dtype=self.dtype)
        n = x0.shape[0]
        v0 = torch.as_tensor(self.sim.particles.v, dtype=self.dtype, device=self.device)
        C0 = torch.zeros(n, 2, 2, dtype=self.dtype, device=self.device)
        F0 = torch.eye(2, dtype=self.dtype, device=self.device).expand(n, 2, 2)
        control = self.control_start().to(self.device)
        return control[None], self._x0[None], v0[None], C0[None], F0[None]

    def _check_jitter(self, x0: torch.Tensor) -> None:
        """Raise ``ValueError`` if the jittered positions ``x0`` ``(N, 2)`` leave the domain
        ``[dx, 1 - 2 dx]`` the engine needs."""
        dx = 1.0 / self.config.n_grid
        outside = ((x0 < dx) | (x0 > 1.0 - 2.0 * dx)).any(dim=1)
        if outside.any():
            raise ValueError(f"init_jitter={self.config.init_jitter} moves {int(outside.sum())} particles outside "
                             f"the domain [dx, 1 - 2 dx] = [{dx:g}, {1 - 2 * dx:g}]; use a smaller init_jitter "
                             "or keep the scene further from the walls")

    def _advance(self, state, actions):
        """Differentiable rollouts of ``actions`` ``(B, T, A)`` from the initial state ``state``
        (mid-episode steps go through :meth:`_continue`); the final state is not returned."""
        frames = []
        for seq in actions:
            pos, rot, _ = self.tool_poses(seq, state[0][0])
            rot = None if rot is None else rot.to(self.dtype)
            xs, _ = mpm_rollout(self.sim, seq.shape[0], tool_pos=pos.to(self.dtype), tool_rot=rot,
                                x0=self._x0, v0=state[2][0])
            frames.append(xs[1:])
        return torch.stack(frames), None

    def _continue(self, state, actions):
        """Continue every world by ``actions`` ``(B, 1, A)`` from its engine state: O(1) per step."""
        frames, ends = [], []
        for b in range(actions.shape[0]):
            pos, rot, control = self.tool_poses(actions[b], state[0][b])
            rot = None if rot is None else rot.to(self.dtype)
            xs, particles = mpm_continue(self.sim, self._t, actions.shape[1], tuple(t[b] for t in state[1:]),
                                         tool_pos=pos.to(self.dtype), tool_rot=rot)
            frames.append(xs)
            ends.append((control, *particles))
        return torch.stack(frames), tuple(torch.stack(parts) for parts in zip(*ends))

    def _render_state(self, state, index):
        return self.draw(state[1][index], state[0][index], self._t)

    # ------------------------------------------------------------------ rendering
    def particle_colors(self) -> np.ndarray:
        """RGB colour ``(N, 3)`` of every particle (by material)."""
        palette = np.array([[60, 120, 230], [240, 240, 235], [200, 90, 40], [90, 200, 90]])
        return palette[self.sim.particles.material % len(palette)]

    def overlay(self, image: np.ndarray) -> None:
        """Draw task markers (targets) into ``image`` ``(size, size, 3)`` in place (default: none)."""

    def draw(self, x: torch.Tensor, control: torch.Tensor, steps: int, size: int = 256) -> np.ndarray:
        """Image ``(size, size, 3)`` of particles ``x (N, 2)`` after ``steps`` steps and the tools at
        coordinates ``control (P,)`` (outlines of their signed-distance shapes)."""
        image = np.full((size, size, 3), 25, np.uint8)
        self.overlay(image)
        pix = np.clip((x.detach().double().cpu().numpy() * size).astype(int), 0, size - 2)
        visible = self.visible(steps)
        colors = self.particle_colors()
        for dy in (0, 1):
            for dx in (0, 1):
                image[size - 1 - pix[visible, 1] - dy, pix[visible, 0] + dx] = colors[visible]
        empty = torch.zeros(0, self.action_dim, dtype=torch.float64, device=control.device)
        pos, rot, _ = self.tool_poses(empty, control)
        pos = pos[0].detach().cpu().numpy()
        rot = np.broadcast_to(np.eye(2), (len(pos), 2, 2)) if rot is None else rot[0].detach().cpu().numpy()
        yy, xx = np.mgrid[0:size, 0:size]
        world = np.stack([xx + 0.5, size - 0.5 - yy], -1) / size
        for k, tool in enumerate(self.sim.tools):
            local = (world - pos[k]) @ rot[k]  # row form of R^T (x - p)
            image[np.abs(tool_sdf(tool, local)) < 1.5 / size] = (255, 60, 60)
        return image

    def visible(self, steps: int) -> np.ndarray:
        """Mask ``(N,)`` of particles present after ``steps`` steps (injector pool excluded)."""
        birth = self.sim.particles.birth
        return birth <= steps * self.config.substeps_per_step


def tool_sdf(tool: Tool, q: np.ndarray) -> np.ndarray:
    """Signed distance ``(...)`` of points ``q`` ``(..., 2)`` in the tool frame (a numpy mirror of
    the engine's ``_tool_sdf``, for drawing)."""
    size = np.asarray(tool.size, dtype=np.float64)
    if tool.shape == ToolShape.SPHERE:
        return np.linalg.norm(q, axis=-1) - size[0]
    if tool.shape == ToolShape.BOX:
        d = np.abs(q) - size[:2]
        return np.linalg.norm(np.maximum(d, 0.0), axis=-1) + np.minimum(d.max(-1), 0.0)
    qa = q - np.stack([np.clip(q[..., 0], -size[1], size[1]), np.zeros(q.shape[:-1])], -1)
    return np.linalg.norm(qa, axis=-1) - size[0]
