"""SmokeMixing: stir two gases (smoke on the left, clean air on the right) until mixed;
FluidLab's Mixing task with its O(N^2) pairwise-distance loss replaced by an O(N) measure,
the variance of coarse-bin concentrations (research note, section 4.1)."""
from dataclasses import dataclass

import torch

from sim._checks import is_int
from sim.envs.base import check_positive
from sim.envs.smoke_env import SmokeEnv, SmokeEnvConfig

__all__ = ["SmokeMixing", "SmokeMixingConfig"]


@dataclass(frozen=True)
class SmokeMixingConfig(SmokeEnvConfig):
    """Attributes:
        bin_size: side of the coarse bins in cells (must divide ``resolution``).
        interface_width: width of the initial smooth interface (fraction of the box).
    """

    jet_position: tuple[float, float] = (0.5, 0.5)
    jet_radius: float = 6.0
    jet_source: float = 0.0
    bin_size: int = 4
    interface_width: float = 0.05

    def __post_init__(self):
        super().__post_init__()
        if not is_int(self.bin_size) or not 1 <= self.bin_size < self.resolution \
                or self.resolution % self.bin_size:
            raise ValueError(f"bin_size must be an int in [1, resolution) that divides resolution "
                             f"{self.resolution}, got {self.bin_size!r}")
        check_positive(self, "interface_width")


class SmokeMixing(SmokeEnv):
    """Per-step loss ``l_t = Var_bins(q_t) / Var_bins(q_0)`` (coarse-bin means), weighted by
    ``w_t = (t + 1) / T`` so the end state counts most, as in FluidLab's mixing metric."""

    default_lr = 0.3
    config_class = SmokeMixingConfig

    def _initial_scalar(self):
        x, _ = self.cell_coordinates()
        return torch.sigmoid((0.5 - x) / self.config.interface_width)

    def __init__(self, config: SmokeMixingConfig | None = None, **kwargs):
        super().__init__(config or SmokeMixingConfig(), **kwargs)
        self._scale = self._check_scale(self._bin_variance(self._initial_scalar()[None]),
                                        "bin_size and interface_width (the initial bins are uniform)")

    def _bin_variance(self, q):
        k = self.config.bin_size
        n = self.resolution
        bins = q.reshape(*q.shape[:-2], n // k, k, n // k, k).mean((-3, -1))
        return bins.flatten(-2).var(-1, unbiased=False)

    def step_losses_of(self, frames, start=0):
        return self._bin_variance(frames) / self._scale

    def step_weights(self):
        t = torch.arange(1, self.horizon + 1, dtype=self.dtype, device=self.device)
        return t / self.horizon
