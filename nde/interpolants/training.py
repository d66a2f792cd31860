"""Learning an interpolant's fields with :class:`nde.training.Trainer`."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..training import StepContext, Task
from .._checks import number, positive_int
from ..training.hyperparameters import check_samples, decay_factor
from .interpolant import Interpolant
from .losses import denoiser_loss, interpolant_velocity_loss, sample_times, score_loss, velocity_loss
from .networks import TimeConditionedMLP

Sampler = Callable[[int, torch.Generator], torch.Tensor]
LOSSES = {"b": velocity_loss, "v": interpolant_velocity_loss, "s": score_loss, "eta": denoiser_loss}


class InterpolantTask(Task):
    """Fit the fields named in ``fields`` (any of "b", "v", "s", "eta") by their quadratic losses.

    Args:
        interpolant: the path.
        sample_base: ``(n, generator) -> (n, d)`` draws from rho0; ignored (Gaussian) when one-sided.
        sample_target: draws from rho1.
        dim: state dimension; each field is a :class:`TimeConditionedMLP` (``hidden``, ``depth``,
            ``activation``).
        batch_size: global batch (split over ranks).
        t_min, t_max: training times are uniform on [t_min, t_max].
        device, dtype: where the networks and batches live (samplers draw on the CPU generator).
        lr: Adam learning rate (> 0); ``lr_decay_every`` (>= 1 steps) / ``lr_decay`` (in (0, 1]) give a step
            decay (reference notebooks: StepLR(1500, 0.4)).

    The samplers must return ``(n, d)`` floating-point tensors (checked at every draw). :meth:`settings` records
    the hyper-parameters in checkpoints, so a resumed run with other ones is refused.
    """

    def __init__(self, interpolant: Interpolant, sample_target: Sampler, dim: int, *,
                 sample_base: Sampler | None = None, fields: tuple[str, ...] = ("b", "eta"), batch_size: int = 1000,
                 hidden: int = 256, depth: int = 4, activation: str = "silu", lr: float = 2e-3,
                 lr_decay_every: int = 1500, lr_decay: float = 0.4, t_min: float = 1e-4, t_max: float = 1 - 1e-4,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        if not isinstance(interpolant, Interpolant):
            raise TypeError(f"interpolant must be an nde.interpolants.Interpolant, got {type(interpolant).__name__}")
        unknown = [f for f in fields if f not in LOSSES]
        if unknown or not fields:
            raise ValueError(f"fields must be a non-empty subset of {sorted(LOSSES)}, got {fields}")
        if sample_base is None and not interpolant.one_sided and not interpolant.stationary:
            raise ValueError("sample_base is required for a two-sided interpolant")
        for name, sampler in (("sample_target", sample_target), ("sample_base", sample_base)):
            if sampler is not None and not callable(sampler):
                raise TypeError(f"{name} must be callable as {name}(n, generator), got {type(sampler).__name__}")
        for name, value in (("dim", dim), ("batch_size", batch_size), ("lr_decay_every", lr_decay_every)):
            positive_int(value, name)
        number(lr, "lr", positive=True)
        decay_factor(lr_decay, "lr_decay")
        if not 0 <= t_min < t_max <= 1:
            raise ValueError(f"need 0 <= t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
        self.interpolant, self.sample_base, self.sample_target = interpolant, sample_base, sample_target
        self.fields, self.dim, self.batch_size = tuple(fields), dim, batch_size
        self.t_min, self.t_max, self.device, self.dtype = t_min, t_max, torch.device(device), dtype
        self.networks = {f: TimeConditionedMLP(dim, hidden=hidden, depth=depth, activation=activation)
                         .to(self.device, dtype) for f in fields}
        params = [p for net in self.networks.values() for p in net.parameters()]
        self.optimizers = {"fields": torch.optim.Adam(params, lr=lr)}
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizers["fields"], lr_decay_every, lr_decay)
        self.ema_networks = tuple(fields)
        self._settings = {"interpolant": repr(interpolant), "fields": tuple(fields), "dim": dim,
                          "batch_size": batch_size, "hidden": hidden, "depth": depth, "activation": activation,
                          "lr": lr, "lr_decay_every": lr_decay_every, "lr_decay": lr_decay, "t_min": t_min,
                          "t_max": t_max, "dtype": str(dtype)}

    def settings(self) -> dict:
        """The constructor's hyper-parameters; a run resumed from a checkpoint must have the same."""
        return dict(self._settings)

    def _batch(self, gen: torch.Generator):
        n = self.batch_size
        x1 = check_samples(self.sample_target(n, gen), n, self.dim, "sample_target")
        if self.interpolant.one_sided:
            x0 = torch.randn(n, self.dim, generator=gen, dtype=x1.dtype)
        elif self.interpolant.stationary:
            x0 = x1
        else:
            x0 = check_samples(self.sample_base(n, gen), n, self.dim, "sample_base")
        z = torch.randn(n, self.dim, generator=gen, dtype=x1.dtype)
        t = sample_times(n, self.t_min, self.t_max, gen, dtype=x1.dtype)
        return [v.to(self.device, self.dtype) for v in (t, x0, x1, z)]

    def training_step(self, ctx: StepContext) -> dict[str, float]:
        t, x0, x1, z = (ctx.shard(v) for v in self._batch(ctx.generator))
        losses = {f: LOSSES[f](self.networks[f], self.interpolant, t, x0, x1, z) for f in self.fields}
        ctx.update("fields", sum(losses.values()))
        self.scheduler.step()
        return {f"loss_{f}": float(v.detach()) for f, v in losses.items()}

    def state_dict(self) -> dict:
        return {"scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.scheduler.load_state_dict(state["scheduler"])

    def field(self, name: str, ema: "dict[str, object] | None" = None) -> nn.Module:
        """The network of field ``name`` (a ``(t, x)`` callable); pass ``trainer.ema`` for the EMA copy."""
        if name not in self.networks:
            raise ValueError(f"field {name!r} was not trained; trained: {self.fields}")
        return self.networks[name] if ema is None else ema[name].module
