"""SmokeTransport: push a puff of smoke into a goal region with the jet; the smoke-grid
analogue of FluidLab's GatheringEasy/Transporting (``sum_t |x_object - x_goal|``)."""
from dataclasses import dataclass

import torch

from sim.envs.base import check_positive
from sim.envs.smoke_env import SmokeEnv, SmokeEnvConfig

__all__ = ["SmokeTransport", "SmokeTransportConfig"]


@dataclass(frozen=True)
class SmokeTransportConfig(SmokeEnvConfig):
    """Attributes:
        puff_center: initial centre of the Gaussian puff (fractions of the box).
        puff_radius: its radius (fraction of the box).
        goal: goal point of the puff's centre of mass (fractions of the box).
    """

    jet_position: tuple[float, float] = (0.3, 0.5)
    jet_radius: float = 4.0
    jet_source: float = 0.0
    puff_center: tuple[float, float] = (0.3, 0.5)
    puff_radius: float = 0.1
    goal: tuple[float, float] = (0.6, 0.7)

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "puff_radius")


class SmokeTransport(SmokeEnv):
    """Per-step loss ``l_t = |c(q_t) - goal|^2 / |c(q_0) - goal|^2`` where ``c(q)`` is the
    smoke's centre of mass ``sum q x / sum q`` (fractions of the box)."""

    config_class = SmokeTransportConfig

    def __init__(self, config: SmokeTransportConfig | None = None, **kwargs):
        super().__init__(config or SmokeTransportConfig(), **kwargs)
        self._goal = torch.tensor(self.config.goal, dtype=self.dtype, device=self.device)
        x, y = self.cell_coordinates()
        self._xy = torch.stack([x, y], dim=-1)
        self._scale = self._check_scale((self.center_of_mass(self._initial_scalar()[None]) - self._goal).pow(2).sum(),
                                        "goal and puff_center (the puff starts at the goal)")

    def _initial_scalar(self):
        cx, cy = self.config.puff_center
        x, y = self.cell_coordinates()
        return torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / self.config.puff_radius ** 2)

    def center_of_mass(self, q: torch.Tensor) -> torch.Tensor:
        """Centre of mass ``(..., 2)`` of fields ``(..., N, N)``."""
        mass = q.sum((-2, -1))[..., None]
        return (q[..., None] * self._xy).sum((-3, -2)) / mass

    def step_losses_of(self, frames, start=0):
        return (self.center_of_mass(frames) - self._goal).pow(2).sum(-1) / self._scale

    def overlay(self):
        x, y = self.cell_coordinates()
        return (((x - self._goal[0]) ** 2 + (y - self._goal[1]) ** 2) < 0.05 ** 2).to(self.dtype)
