"""FluidLab's temporally expanding loss window with action freezing (Xian et al. 2023;
``fluidengine/losses/*.expand_temporal_range`` and ``optimizer/policies.py``)."""
from dataclasses import dataclass, field

import torch

from sim._checks import is_int, is_real, plain_ints

__all__ = ["ExpandingWindow"]


@dataclass
class ExpandingWindow:
    """The loss is summed over steps ``[0, end)``; ``end`` starts at ``start`` and grows by
    ``increment`` whenever the windowed loss improved by less than ``threshold`` (relative)
    for ``patience`` consecutive iterations. On each expansion the actions before
    ``end - freeze_lag`` (old window end minus the lag) are frozen when ``freeze_lag`` is not
    None (FluidLab's ``trainable[:freeze_till] = False``).

    Attributes:
        horizon: episode length ``T``.
        start, increment: initial window length and growth in steps (None: ``max(1, T // 5)``).
        patience: plateau iterations before expanding.
        threshold: relative improvement that counts as progress.
        freeze_lag: steps before the old window end that stay trainable, or None (no freezing).
    """

    horizon: int
    start: int | None = None
    increment: int | None = None
    patience: int = 3
    threshold: float = 0.01
    freeze_lag: int | None = None
    end: int = field(init=False)
    frozen_until: int = field(init=False, default=0)
    _best: float = field(init=False, default=float("inf"))
    _stall: int = field(init=False, default=0)

    def __post_init__(self):
        if not is_int(self.horizon) or self.horizon < 1:
            raise ValueError(f"horizon must be an int >= 1, got {self.horizon!r}")
        default = max(1, self.horizon // 5)
        self.start = default if self.start is None else self.start
        self.increment = default if self.increment is None else self.increment
        if not is_int(self.start) or not 1 <= self.start <= self.horizon:
            raise ValueError(f"start must be an int in [1, horizon={self.horizon}] or None, got {self.start!r}")
        if not is_int(self.increment) or self.increment < 1:
            raise ValueError(f"increment must be an int >= 1 or None, got {self.increment!r}")
        if not is_int(self.patience) or self.patience < 1:
            raise ValueError(f"patience must be an int >= 1, got {self.patience!r}")
        if not (is_real(self.threshold) and 0 <= self.threshold < 1):
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold!r}")
        if self.freeze_lag is not None and (not is_int(self.freeze_lag) or self.freeze_lag < 0):
            raise ValueError(f"freeze_lag must be an int >= 0 or None, got {self.freeze_lag!r}")
        self.reset()
        plain_ints(self)

    def reset(self) -> None:
        """Back to the initial schedule: window ``[0, start)``, nothing frozen, no plateau history.
        :func:`~sim.optim.optimize_actions` calls it at the start of each run, so a window can be reused."""
        self.end, self.frozen_until = self.start, 0
        self._best, self._stall = float("inf"), 0

    @property
    def full(self) -> bool:
        return self.end >= self.horizon

    def mask(self, dtype=torch.float32, device="cpu") -> torch.Tensor:
        """Loss mask ``(T,)``: 1 on ``[0, end)``, else 0."""
        m = torch.zeros(self.horizon, dtype=dtype, device=device)
        m[: self.end] = 1
        return m

    def trainable(self, dtype=torch.float32, device="cpu") -> torch.Tensor:
        """Gradient mask ``(T, 1)``: 0 on frozen steps ``[0, frozen_until)``, else 1."""
        m = torch.ones(self.horizon, 1, dtype=dtype, device=device)
        m[: self.frozen_until] = 0
        return m

    def update(self, window_loss: float) -> bool:
        """Record this iteration's windowed loss; expand on a plateau. Returns True if expanded."""
        if window_loss < self._best * (1 - self.threshold):
            self._best = window_loss
            self._stall = 0
            return False
        self._stall += 1
        if self._stall < self.patience or self.full:
            return False
        if self.freeze_lag is not None:
            self.frozen_until = max(self.frozen_until, self.end - self.freeze_lag)
        self.end = min(self.horizon, self.end + self.increment)
        self._best = float("inf")
        self._stall = 0
        return True
