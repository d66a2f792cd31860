"""Common base of the tasks that run on the Eulerian smoke grid (:mod:`sim.engine.smoke`)."""
from dataclasses import dataclass

import numpy as np
import torch

from sim.engine.smoke import SmokeConfig, SmokeGrid
from sim.envs.base import Env, EnvConfig
from sim.envs.render import field_to_rgb

__all__ = ["SmokeEnv", "SmokeEnvConfig"]


@dataclass(frozen=True)
class SmokeEnvConfig(EnvConfig):
    """:class:`EnvConfig` plus the smoke grid settings (see :class:`sim.engine.smoke.SmokeConfig`).

    Attributes:
        init_noise: standard deviation of the seeded random initial velocity (cells/step).
    """

    resolution: int = 32
    jacobi_iters: int = 30
    dt: float = 1.0
    buoyancy: float = 0.0
    jet_position: tuple[float, float] = (0.1, 0.5)
    jet_radius: float = 3.0
    jet_source: float = 0.1
    init_noise: float = 0.01

    def __post_init__(self):
        super().__post_init__()
        if not self.init_noise >= 0:
            raise ValueError(f"init_noise must be a finite number >= 0, got {self.init_noise!r}")
        self.smoke_config()  # validates the grid fields

    def smoke_config(self) -> SmokeConfig:
        return SmokeConfig(resolution=self.resolution, dt=self.dt, jacobi_iters=self.jacobi_iters,
                           buoyancy=self.buoyancy, jet_position=self.jet_position,
                           jet_radius=self.jet_radius, jet_source=self.jet_source)


class SmokeEnv(Env):
    """A task on the smoke grid: state ``(v (B, N, N, 2), q (B, N, N))``; the action is the
    jet force ``(2,)``; observations are the scalar frames ``(B, T, N, N)``."""

    action_dim = 2
    config_class = SmokeEnvConfig

    def __init__(self, config: SmokeEnvConfig, batch_size: int = 1, device="cpu", dtype=torch.float32):
        device = self._check_setup(config, device)
        self.grid = SmokeGrid(config.smoke_config(), dtype=dtype)
        super().__init__(config, batch_size=batch_size, device=device, dtype=dtype)

    @property
    def resolution(self) -> int:
        return self.config.resolution

    def cell_coordinates(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell-centre coordinates ``x, y`` as fractions of the box, each ``(N, N)``."""
        n = self.resolution
        c = torch.arange(n, dtype=self.dtype, device=self.device) / (n - 1)
        return torch.meshgrid(c, c, indexing="ij")

    def box_mask(self, box: tuple[float, float, float, float]) -> torch.Tensor:
        """0/1 mask ``(N, N)`` of the cells inside ``box = (x0, x1, y0, y1)`` (fractions)."""
        x, y = self.cell_coordinates()
        return ((x >= box[0]) & (x <= box[1]) & (y >= box[2]) & (y <= box[3])).to(self.dtype)

    def _initial_scalar(self) -> torch.Tensor:
        """Initial scalar field ``(N, N)``; empty by default."""
        n = self.resolution
        return torch.zeros(n, n, dtype=self.dtype, device=self.device)

    def _initial_state(self, generator):
        n = self.resolution
        noise = torch.randn(1, n, n, 2, generator=generator, dtype=torch.float64)
        v0 = (self.config.init_noise * noise).to(device=self.device, dtype=self.dtype)
        return v0, self._initial_scalar()[None]

    def _advance(self, state, actions):
        v, q = state
        frames, v_final = self.grid.simulate(v, q, actions)
        return frames, (v_final, frames[:, -1])

    def overlay(self) -> torch.Tensor | None:
        """Mask ``(N, N)`` drawn over renders (targets, detectors); none by default."""
        return None

    def _render_state(self, state, index) -> np.ndarray:
        return field_to_rgb(state[1][index], vmax=1.0, scale=max(1, 256 // self.resolution),
                            overlay=self.overlay())
