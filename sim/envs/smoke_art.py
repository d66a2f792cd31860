"""SmokeArt: draw a target smoke pattern with the jet; FluidLab's LatteArt recipe
(record the target by replaying a scripted sine-wave policy, then match it frame by frame
with ``ShapeMatchingLoss``) on the 2-D smoke grid."""
import math
from dataclasses import dataclass

import torch

from sim.envs.base import check_positive
from sim.envs.smoke_env import SmokeEnv, SmokeEnvConfig

__all__ = ["SmokeArt", "SmokeArtConfig"]


@dataclass(frozen=True)
class SmokeArtConfig(SmokeEnvConfig):
    """Attributes:
        push: constant x force of the scripted target policy.
        wave_amplitude: amplitude of its sine-wave y force.
        wave_period: period of the sine wave in steps.
    """

    push: float = 0.3
    wave_amplitude: float = 0.4
    wave_period: float = 20.0

    def __post_init__(self):
        super().__post_init__()
        check_positive(self, "wave_period")


class SmokeArt(SmokeEnv):
    """Per-step loss ``l_t = mean (q_t - q*_t)^2 / mean_t,x (q*_t)^2`` against frames ``q*`` of
    the scripted policy ``a*_t = (push, A sin(2 pi t / P))`` from the noise-free initial state."""

    config_class = SmokeArtConfig

    def __init__(self, config: SmokeArtConfig | None = None, **kwargs):
        super().__init__(config or SmokeArtConfig(), **kwargs)
        self.target_frames = self._record_target()
        self._scale = self._check_scale(self.target_frames.pow(2).mean(),
                                        "push, wave_amplitude and jet_source (the target pattern is empty)")

    def target_actions(self) -> torch.Tensor:
        """The scripted target policy ``(T, 2)``."""
        cfg = self.config
        t = torch.arange(cfg.horizon, dtype=self.dtype, device=self.device)
        wave = cfg.wave_amplitude * torch.sin(2 * math.pi * t / cfg.wave_period)
        return torch.stack([torch.full_like(t, cfg.push), wave], dim=1)

    def _record_target(self) -> torch.Tensor:
        n = self.resolution
        v0 = torch.zeros(1, n, n, 2, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            frames, _ = self.grid.simulate(v0, self._initial_scalar()[None], self.target_actions()[None])
        return frames[0]

    def step_losses_of(self, frames, start=0):
        target = self.target_frames[start:start + frames.shape[1]]
        return (frames - target).pow(2).mean((-2, -1)) / self._scale

    def overlay(self):
        final = self.target_frames[-1]
        return (final > 0.25 * final.max()).to(self.dtype)
