"""Common base of the tasks that run on the MLS-MPM engine (:mod:`sim.engine`, ``sim.bridge``).

State ``(history (B, t, A), x (B, N, 2))``: the engine keeps its full state (C, F/J, rigid
bodies, injector pool) inside the simulator, so a step continues an episode by replaying
the action history from the initial state (exact, deterministic, O(t) per step);
:meth:`Env.rollout_loss` runs one rollout per sequence. ``B`` sequences run one after
another on the same simulator (one rollout in flight per simulator).
"""
from dataclasses import dataclass

import numpy as np
import torch

from sim.bridge import mpm_rollout, tool_path
from sim.engine import MPMConfig, MPMSimulator
from sim.envs.base import Env, EnvConfig

__all__ = ["MPMEnv", "MPMEnvConfig", "block"]


@dataclass(frozen=True)
class MPMEnvConfig(EnvConfig):
    """:class:`EnvConfig` plus the MPM settings (see :class:`sim.engine.MPMConfig`).

    Attributes:
        n_grid: grid cells per axis; particles are seeded 2 per cell per axis.
        dt: substep; substeps_per_step: substeps per action step.
        segment_substeps: checkpoint segment length (None: store every substep).
        init_jitter: seeded random offset of the initial liquid particles, in particle spacings.
    """

    horizon: int = 30
    action_bound: float = 1.0
    n_grid: int = 32
    dt: float = 1e-3
    substeps_per_step: int = 10
    segment_substeps: int | None = None
    init_jitter: float = 0.1

    @property
    def spacing(self) -> float:
        return 0.5 / self.n_grid


def block(lo: tuple[float, float], hi: tuple[float, float], spacing: float) -> np.ndarray:
    """Particle positions ``(M, 2)`` on a regular lattice filling the box ``[lo, hi)``."""
    xs = np.arange(lo[0] + spacing / 2, hi[0], spacing)
    ys = np.arange(lo[1] + spacing / 2, hi[1], spacing)
    return np.stack(np.meshgrid(xs, ys, indexing="ij"), -1).reshape(-1, 2)


class MPMEnv(Env):
    """A task on the MPM engine whose action is the velocity ``(2,)`` of tool 0 per step.

    Subclasses implement :meth:`_scene` (particles, materials, tools), :meth:`tool_start`
    and the loss; observations are particle positions after each step ``(B, T, N, 2)``.
    """

    action_dim = 2

    def __init__(self, config: MPMEnvConfig, batch_size: int = 1, device="cpu", dtype=torch.float32):
        particles, materials, tools = self._scene(config)
        mpm = MPMConfig(dim=2, n_grid=config.n_grid, dt=config.dt, substeps_per_step=config.substeps_per_step,
                        max_steps=config.horizon, dtype="float64" if dtype == torch.float64 else "float32",
                        device=str(torch.device(device)), segment_substeps=config.segment_substeps)
        self.sim = MPMSimulator(mpm, particles, materials, tools)
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

    def tool_positions(self, actions: torch.Tensor) -> torch.Tensor:
        """Per-substep tool positions ``(S + 1, n_tools, 2)`` from actions ``(T, 2)`` (tool 0 moves)."""
        start = self.tool_start()
        velocity = torch.zeros(actions.shape[0], start.shape[0], 2, dtype=actions.dtype, device=actions.device)
        velocity = torch.cat([actions[:, None], velocity[:, 1:]], dim=1)
        return tool_path(start, velocity, self.config.substeps_per_step, self.config.dt)

    # ------------------------------------------------------------------ Env hooks
    def _initial_state(self, generator):
        x0 = torch.as_tensor(self.sim.particles.x, dtype=torch.float64)
        noise = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
        x0 = x0 + self.config.init_jitter * self.config.spacing * noise * self._jitter_mask[:, None]
        self._x0 = x0.to(device=self.device, dtype=self.dtype)
        history = torch.zeros(1, 0, self.action_dim, dtype=self.dtype, device=self.device)
        return history, self._x0[None]

    def _advance(self, state, actions):
        history = state[0]
        full = torch.cat([history, actions], dim=1)
        done = history.shape[1]
        frames = []
        for seq in full:
            xs, _ = mpm_rollout(self.sim, seq.shape[0], tool_pos=self.tool_positions(seq), x0=self._x0)
            frames.append(xs[1 + done:])
        frames = torch.stack(frames)
        return frames, (full, frames[:, -1])

    def _render_state(self, state, index):
        return self.draw(state[1][index], state[0][index])

    # ------------------------------------------------------------------ rendering
    def particle_colors(self) -> np.ndarray:
        """RGB colour ``(N, 3)`` of every particle (by material)."""
        palette = np.array([[60, 120, 230], [240, 240, 235], [200, 90, 40], [90, 200, 90]])
        return palette[self.sim.particles.material % len(palette)]

    def draw(self, x: torch.Tensor, history: torch.Tensor, size: int = 256) -> np.ndarray:
        """Image ``(size, size, 3)`` of particles ``x (N, 2)`` and the tools after ``history``."""
        image = np.full((size, size, 3), 25, np.uint8)
        pix = np.clip((x.detach().double().cpu().numpy() * size).astype(int), 0, size - 2)
        visible = self.visible(history.shape[0])
        colors = self.particle_colors()
        for dy in (0, 1):
            for dx in (0, 1):
                image[size - 1 - pix[visible, 1] - dy, pix[visible, 0] + dx] = colors[visible]
        if history.shape[0]:
            tools = self.tool_positions(history.detach())[-1]
        else:
            tools = self.tool_start()
        yy, xx = np.mgrid[0:size, 0:size]
        for k, tool in enumerate(self.sim.tools):
            cx, cy = tools[k].detach().double().cpu().numpy() * size
            radius = max(2.0, tool.size[0] * size)
            ring = np.abs(np.hypot(xx - cx, (size - 1 - yy) - cy) - radius) < 1.5
            image[ring] = (255, 60, 60)
        return image

    def visible(self, steps: int) -> np.ndarray:
        """Mask ``(N,)`` of particles present after ``steps`` steps (injector pool excluded)."""
        birth = self.sim.particles.birth
        return birth <= steps * self.config.substeps_per_step
