"""The contract between a training problem and :class:`~nde.training.Trainer`.

A :class:`Task` owns its networks and optimisers and implements ``training_step(ctx)``;
the trainer owns the loop, randomness, checkpoints, EMA, logging and data parallelism.
All randomness of a step must come from ``ctx.generator`` (seeded from the run seed and
the step number, identical on every rank), so a resumed run repeats exactly what an
uninterrupted run would have done.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from . import distributed


@dataclass
class StepContext:
    """What a task sees in one step."""

    step: int
    generator: torch.Generator
    grad_clip: float | None = None
    _optimizers: dict[str, torch.optim.Optimizer] = field(default_factory=dict, repr=False)
    updated: list[str] = field(default_factory=list)
    """Names of the optimisers stepped so far in this step, in order."""

    @property
    def rank(self) -> int:
        return distributed.rank()

    @property
    def world_size(self) -> int:
        return distributed.world_size()

    def shard(self, tensor: torch.Tensor) -> torch.Tensor:
        """This rank's part of a global batch drawn with ``generator``."""
        return distributed.shard(tensor)

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return distributed.all_reduce_sum(tensor)

    def update(self, optimizer: str, loss: torch.Tensor) -> None:
        """zero_grad, backward, average gradients over ranks, optional clipping, optimiser step.

        ``loss`` must be this rank's mean over its shard; the averaged gradient is then the
        gradient of the global-batch mean.
        """
        opt = self._optimizers[optimizer]
        params = [p for group in opt.param_groups for p in group["params"]]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients(params)
        if self.grad_clip is not None:
            nn.utils.clip_grad_norm_(params, self.grad_clip)
        opt.step()
        self.updated.append(optimizer)


class Task:
    """Base class: subclasses set ``self.networks`` and ``self.optimizers`` (name -> object)
    and implement :meth:`training_step`. ``ema_networks`` names the networks whose EMA is kept."""

    networks: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    ema_networks: tuple[str, ...] = ()

    def training_step(self, ctx: StepContext) -> dict[str, float]:
        """One iteration; returns scalar metrics to log (this rank's values)."""
        raise NotImplementedError

    def settings(self) -> dict:
        """Hyper-parameters that shape training (batch size, learning rate, ...), saved in checkpoints.

        A run resumed from a checkpoint must have the same settings, else :class:`Trainer` refuses it.
        Values must compare with ``==`` after a ``torch.save`` round trip (numbers, strings, tuples).
        """
        return {}

    def state_dict(self) -> dict:
        """Extra state beyond networks and optimisers (e.g. running statistics)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise ValueError(f"{type(self).__name__} got unexpected extra state {sorted(state)}")
