"""SmokeCirculation: steer the jet's smoke (cool air) into a target zone of the room while
keeping a second zone clean; FluidLab's Circulation task (detector cells with target
temperature 1 and 0, ``circulation_loss.py``) on the 2-D smoke grid."""
from dataclasses import dataclass

import torch

from sim.envs.base import check_box, check_positive
from sim.envs.smoke_env import SmokeEnv, SmokeEnvConfig

__all__ = ["SmokeCirculation", "SmokeCirculationConfig"]


@dataclass(frozen=True)
class SmokeCirculationConfig(SmokeEnvConfig):
    """Attributes:
        fill_zone: ``(x0, x1, y0, y1)`` box whose smoke should reach ``level``.
        clean_zone: box whose smoke should stay at 0.
        level: target smoke level of the fill zone.
        attraction: weight of the shaping term that pulls the smoke's centre of mass to the
            fill zone (FluidLab's "gradient sharing" attraction losses); without it the loss
            has zero gradient until smoke reaches the zone.
    """

    horizon: int = 50
    action_bound: float = 2.0
    fill_zone: tuple[float, float, float, float] = (0.35, 0.6, 0.55, 0.8)
    clean_zone: tuple[float, float, float, float] = (0.35, 0.6, 0.2, 0.45)
    level: float = 0.2
    attraction: float = 0.1

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "level")
        if not self.attraction >= 0:
            raise ValueError(f"attraction must be >= 0, got {self.attraction!r}")
        for name in ("fill_zone", "clean_zone"):
            zone = getattr(self, name)
            check_box(name, zone[0::2], zone[1::2])


class SmokeCirculation(SmokeEnv):
    """Per-step loss ``l_t = mean_fill relu(level - q)^2 / level^2 + mean_clean q^2 / level^2
    + attraction |c(q_t) - c_fill|^2 / |c_jet - c_fill|^2`` with ``c(q)`` the smoke's centre of
    mass and ``c_fill`` the fill zone's centre (fractions of the box)."""

    default_lr = 0.2
    config_class = SmokeCirculationConfig

    def __init__(self, config: SmokeCirculationConfig | None = None, **kwargs):
        super().__init__(config or SmokeCirculationConfig(), **kwargs)
        self._fill = self.box_mask(self.config.fill_zone)
        self._clean = self.box_mask(self.config.clean_zone)
        self._check_scale(self._fill.sum(), "fill_zone (it holds no grid cell)")
        self._check_scale(self._clean.sum(), "clean_zone (it holds no grid cell)")
        x, y = self.cell_coordinates()
        self._xy = torch.stack([x, y], dim=-1)
        zone = self.config.fill_zone
        self._fill_center = torch.tensor([(zone[0] + zone[1]) / 2, (zone[2] + zone[3]) / 2],
                                         dtype=self.dtype, device=self.device)
        jet = torch.tensor(self.config.jet_position, dtype=self.dtype, device=self.device)
        self._attraction_scale = self._check_scale((jet - self._fill_center).pow(2).sum(),
                                                   "jet_position and fill_zone (the jet is at the zone's centre)")

    def step_losses_of(self, frames, start=0):
        level = self.config.level
        fill = (torch.relu(level - frames) ** 2 * self._fill).sum((-2, -1)) / self._fill.sum()
        clean = (frames ** 2 * self._clean).sum((-2, -1)) / self._clean.sum()
        mass = frames.sum((-2, -1))[..., None].clamp_min(1e-12)
        center = (frames[..., None] * self._xy).sum((-3, -2)) / mass
        attract = (center - self._fill_center).pow(2).sum(-1) / self._attraction_scale
        return (fill + clean) / level ** 2 + self.config.attraction * attract

    def overlay(self):
        return self._fill + 0.5 * self._clean
