"""Exponential moving average of a module's parameters and buffers."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Shadow copy ``theta_ema <- decay * theta_ema + (1 - decay) * theta`` after each update.

    ``module`` holds the averaged weights (a deep copy, in eval mode, no gradients); use it for
    sampling. Buffers are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0 <= decay < 1:
            raise ValueError(f"decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for avg, cur in zip(self.module.parameters(), model.parameters()):
            avg.lerp_(cur.detach(), 1 - self.decay)
        for avg, cur in zip(self.module.buffers(), model.buffers()):
            avg.copy_(cur)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.module.load_state_dict(state["module"])
