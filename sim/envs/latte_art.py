"""LatteArt: draw a target pattern of milk on coffee with a moving injector; FluidLab's
LatteArt (nozzle injecting milk from a pre-allocated pool onto coffee; the target is recorded
by replaying a scripted sine-wave nozzle path and matched with ``ShapeMatchingLoss``,
``sum ||x_p - x_p^tgt||^2`` over milk particles) in 2-D on the MPM engine."""
import math
from dataclasses import dataclass

import numpy as np
import torch

from sim._checks import is_int
from sim.engine import WATER, Material, MaterialKind, ParticleSet, Tool, ToolShape
from sim.envs.base import check_box, check_positive
from sim.envs.mpm_env import MPMEnv, MPMEnvConfig, block

__all__ = ["LatteArt", "LatteArtConfig"]


@dataclass(frozen=True)
class LatteArtConfig(MPMEnvConfig):
    """Attributes:
        coffee: coffee box ``(x0, y0, x1, y1)``.
        milk_density: density of the milk (coffee is 1; FluidLab MILK is 0.5).
        nozzle_start: nozzle position at t = 0.
        flux: milk particles injected per step; inject_speed: their downward speed.
        push, wave_amplitude, wave_period: scripted target path
            ``v*_t = (push, A cos(2 pi t / P))``.
    """

    coffee: tuple[float, float, float, float] = (0.1, 0.1, 0.9, 0.22)
    milk_density: float = 0.5
    nozzle_start: tuple[float, float] = (0.3, 0.4)
    flux: int = 4
    inject_speed: float = 1.0
    push: float = 0.8
    wave_amplitude: float = 0.8
    wave_period: float = 15.0

    def __post_init__(self):
        super().__post_init__()
        if not is_int(self.flux) or self.flux < 1:
            raise ValueError(f"flux must be an int >= 1 (particles per step), got {self.flux!r}")
        check_positive(self, "milk_density", "wave_period")
        check_box("coffee", self.coffee[:2], self.coffee[2:])


class LatteArt(MPMEnv):
    """Per-step loss ``l_t = mean_{milk present} |x_p(t) - x*_p(t)|^2 / h^2`` against the
    scripted-policy trajectory ``x*`` (``h`` the particle spacing)."""

    default_lr = 0.1
    config_class = LatteArtConfig

    def __init__(self, config: LatteArtConfig | None = None, **kwargs):
        super().__init__(config or LatteArtConfig(), **kwargs)
        birth = torch.as_tensor(self.sim.particles.birth, device=self.device)
        steps = torch.arange(1, self.horizon + 1, device=self.device)
        self._present = (birth[None] <= steps[:, None] * self.config.substeps_per_step) & (birth[None] > 0)
        self._count = self._present.sum(-1).clamp_min(1).to(self.dtype)
        with torch.no_grad():
            self.target_frames = self._advance(self._init, self.target_actions()[None])[0][0]

    def _scene(self, config):
        s = config.spacing
        c = config.coffee
        coffee = block(c[:2], c[2:], s)
        n_milk = config.flux * config.horizon
        offsets = (np.arange(config.flux) - (config.flux - 1) / 2) * s
        spawn_offset = np.zeros((n_milk, 2))
        spawn_offset[:, 0] = np.tile(offsets, config.horizon)
        birth_steps = np.repeat(np.arange(config.horizon), config.flux)
        milk_birth = birth_steps * config.substeps_per_step + 1
        x = np.concatenate([coffee, np.full((n_milk, 2), 0.5)])
        n_coffee = len(coffee)
        particles = ParticleSet(
            x=x, material=np.r_[np.zeros(n_coffee, int), np.ones(n_milk, int)],
            birth=np.r_[np.zeros(n_coffee, int), milk_birth],
            spawn_tool=np.r_[np.full(n_coffee, -1), np.zeros(n_milk, int)],
            spawn_offset=np.concatenate([np.zeros((n_coffee, 2)), spawn_offset]),
            spawn_velocity=np.concatenate([np.zeros((n_coffee, 2)),
                                           np.tile([0.0, -config.inject_speed], (n_milk, 1))]))
        materials = [WATER, Material(MaterialKind.LIQUID, E=WATER.E, nu=WATER.nu, density=config.milk_density)]
        tools = [Tool(ToolShape.SPHERE, (1e-3,), softness=0.0)]  # the nozzle: touches nothing
        return particles, materials, tools

    def particle_colors(self):
        palette = np.array([[120, 70, 35], [245, 240, 225]])
        return palette[self.sim.particles.material]

    def tool_start(self):
        return torch.tensor([self.config.nozzle_start], dtype=self.dtype, device=self.device)

    def target_actions(self) -> torch.Tensor:
        """The scripted nozzle velocities ``(T, 2)`` that drew the target."""
        cfg = self.config
        t = torch.arange(cfg.horizon, dtype=self.dtype, device=self.device)
        wave = cfg.wave_amplitude * torch.cos(2 * math.pi * t / cfg.wave_period)
        return torch.stack([torch.full_like(t, cfg.push), wave], dim=1)

    def step_losses_of(self, frames, start=0):
        steps = frames.shape[1]
        present = self._present[start:start + steps].to(self.dtype)
        target = self.target_frames[start:start + steps]
        dist = (frames - target).pow(2).sum(-1)
        return (dist * present).sum(-1) / self._count[start:start + steps] / self.config.spacing ** 2
