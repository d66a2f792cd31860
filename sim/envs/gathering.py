"""Gathering: push a floating object to a goal line by stirring the water with a paddle;
FluidLab's GatheringEasy (plate in a water tank, rigid ducks, loss ``sum_t |x_duck - 0.8|``)
in 2-D on the MPM engine: water plus a light rigid box, a soft-contact circle paddle."""
from dataclasses import dataclass

import numpy as np
import torch

from sim.engine import WATER, Material, MaterialKind, ParticleSet, Tool, ToolShape
from sim.envs.base import check_box, check_positive
from sim.envs.mpm_env import MPMEnv, MPMEnvConfig, block

__all__ = ["Gathering", "GatheringConfig"]


@dataclass(frozen=True)
class GatheringConfig(MPMEnvConfig):
    """Attributes:
        water: water box ``(x0, y0, x1, y1)``.
        object_box: the floating rigid box ``(x0, y0, x1, y1)``.
        object_density: its density (water is 1).
        paddle_start: paddle centre at t = 0; paddle_radius: its radius.
        goal_x: goal of the object's centre of mass along x.
    """

    action_bound: float = 3.0
    water: tuple[float, float, float, float] = (0.1, 0.1, 0.9, 0.3)
    object_box: tuple[float, float, float, float] = (0.34, 0.27, 0.44, 0.34)
    object_density: float = 0.5
    paddle_start: tuple[float, float] = (0.2, 0.22)
    paddle_radius: float = 0.05
    goal_x: float = 0.6

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "object_density", "paddle_radius")
        for name in ("water", "object_box"):
            box = getattr(self, name)
            check_box(name, box[:2], box[2:])


class Gathering(MPMEnv):
    """Per-step loss ``l_t = (c_x(t) - goal_x)^2 / (c_x(0) - goal_x)^2`` with ``c`` the rigid
    object's centre of mass."""

    default_lr = 0.3
    config_class = GatheringConfig

    def __init__(self, config: GatheringConfig | None = None, **kwargs):
        super().__init__(config or GatheringConfig(), **kwargs)
        self._object = torch.as_tensor(self.sim.particles.material == 1, device=self.device)
        self._check_scale(self._object.sum(), "object_box (it holds no particle)")
        start = float(self._x0[self._object, 0].mean())
        self._scale = self._check_scale((start - self.config.goal_x) ** 2, "goal_x (the object starts at the goal)")

    def _scene(self, config):
        s = config.spacing
        w, o = config.water, config.object_box
        water = block(w[:2], w[2:], s)
        inside = ((water[:, 0] > o[0] - s) & (water[:, 0] < o[2] + s) & (water[:, 1] > o[1] - s))
        water = water[~inside]
        obj = block(o[:2], o[2:], s)
        x = np.concatenate([water, obj])
        material = np.r_[np.zeros(len(water), int), np.ones(len(obj), int)]
        body = np.r_[np.full(len(water), -1), np.zeros(len(obj), int)]
        materials = [WATER, Material(MaterialKind.RIGID, density=config.object_density)]
        tools = [Tool(ToolShape.SPHERE, (config.paddle_radius,), softness=100.0)]
        return ParticleSet(x=x, material=material, body=body), materials, tools

    def _jittered(self, particles):
        return particles.material == 0

    def tool_start(self):
        return torch.tensor([self.config.paddle_start], dtype=self.dtype, device=self.device)

    def step_losses_of(self, frames, start=0):
        center = frames[:, :, self._object, 0].mean(-1)
        return (center - self.config.goal_x) ** 2 / self._scale
