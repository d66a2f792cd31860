"""One training loop for interpolants and f-distill: checkpoint/resume, EMA, progress bar,
metrics log file and data-parallel training over torch.distributed."""
from __future__ import annotations

import json
import math
import numbers
import time
from pathlib import Path

import torch
import torch.distributed as dist

from . import distributed
from .checkpoint import load_checkpoint, save_checkpoint
from .ema import EMA
from .._checks import number, positive_int, sample_count
from .task import StepContext, Task

_SEED_STRIDE = 1_000_003


class Trainer:
    """Runs ``task.training_step`` for steps 0 .. ``steps - 1``.

    Args:
        task: a :class:`~nde.training.Task`.
        steps: total number of steps.
        seed: run seed; step k draws from ``torch.Generator().manual_seed(seed * 1000003 + k)``
            (CPU generator, same on every rank), so resuming replays the same randomness.
        checkpoint_dir: where ``last.pt`` is saved every ``checkpoint_every`` steps and at the end;
            if it already holds a checkpoint, :meth:`fit` resumes from it. The checkpoint records the
            settings (seed, ema_decay, grad_clip, the task's type and ``task.settings()``): resuming with
            other settings, or from a checkpoint beyond ``steps``, is a ValueError.
        ema_decay: keep an :class:`EMA` of each network in ``task.ema_networks`` (None: no EMA; else in [0, 1)).
        log_path: JSON-lines metrics file (step, time and the task's metrics averaged over ranks),
            written by rank 0 every ``log_every`` steps; :meth:`fit` first drops the lines of steps it will run
            (those after the checkpoint it resumes from; all of them when it starts from step 0).
        progress: show a tqdm progress bar on rank 0.
        grad_clip: max gradient norm (> 0) applied in ``ctx.update`` (None: no clipping).
    """

    def __init__(self, task: Task, steps: int, *, seed: int = 0, checkpoint_dir: str | Path | None = None,
                 checkpoint_every: int = 1000, ema_decay: float | None = None, log_path: str | Path | None = None,
                 log_every: int = 10, progress: bool = False, grad_clip: float | None = None):
        if not isinstance(task, Task):
            raise TypeError(f"task must be an nde.training.Task, got {type(task).__name__}")
        positive_int(steps, "steps")
        positive_int(checkpoint_every, "checkpoint_every")
        positive_int(log_every, "log_every")
        if grad_clip is not None:
            number(grad_clip, "grad_clip", positive=True)
        if ema_decay is not None and not number(ema_decay, "ema_decay") < 1:
            raise ValueError(f"ema_decay must lie in [0, 1), got {ema_decay!r}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise ValueError(f"seed must be an int, got {seed!r}")
        seed = int(seed)  # a numpy int would overflow in the step seeds, which torch refuses anyway
        if not -2 ** 63 <= seed * _SEED_STRIDE <= 2 ** 64 - steps:   # every step's seed in torch's seed range
            raise ValueError(f"seed * {_SEED_STRIDE} + step must be a torch seed (in [-2**63, 2**64)) for every "
                             f"step, got seed={seed}")
        for name in task.ema_networks:
            if name not in task.networks:
                raise ValueError(f"task.ema_networks names {name!r}, which is not in task.networks")
        if checkpoint_dir is not None:
            _check_path(checkpoint_dir, "checkpoint_dir", directory=True)
        if log_path is not None:
            _check_path(log_path, "log_path", directory=False)
        self.task, self.steps, self.seed = task, steps, seed
        self.checkpoint_path = None if checkpoint_dir is None else Path(checkpoint_dir) / "last.pt"
        self.checkpoint_every, self.log_every = checkpoint_every, log_every
        self.log_path = None if log_path is None else Path(log_path)
        self.progress, self.grad_clip, self.ema_decay = progress, grad_clip, ema_decay
        self.ema = {} if ema_decay is None else {n: EMA(task.networks[n], ema_decay) for n in task.ema_networks}
        self.step = 0  # number of completed steps

    # --- state -------------------------------------------------------------------------------
    def settings(self) -> dict:
        """What a resumed run must share with the run that wrote the checkpoint: ``{"trainer": ..., "task": ...}``."""
        return {"trainer": {"seed": self.seed, "ema_decay": self.ema_decay, "grad_clip": self.grad_clip,
                            "task_type": type(self.task).__name__},
                "task": self.task.settings()}

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "seed": self.seed,
            "settings": self.settings(),
            "networks": {n: m.state_dict() for n, m in self.task.networks.items()},
            "optimizers": {n: o.state_dict() for n, o in self.task.optimizers.items()},
            "ema": {n: e.state_dict() for n, e in self.ema.items()},
            "task": self.task.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`; a ValueError names any setting that differs and any missing entry."""
        source = "the state dict" if self.checkpoint_path is None else f"checkpoint {self.checkpoint_path}"
        missing = [key for key in ("step", "seed", "networks", "optimizers", "ema", "task") if key not in state]
        if missing:
            raise ValueError(f"{source} has no {missing} entries; it was not written by nde.training.Trainer")
        self._check_settings(state, source)
        if state["step"] > self.steps:
            raise ValueError(f"{source} is at step {state['step']}, beyond steps={self.steps} of this run")
        for n, m in self.task.networks.items():
            m.load_state_dict(_entry(state, "networks", n, source))
        for n, o in self.task.optimizers.items():
            o.load_state_dict(_entry(state, "optimizers", n, source))
        for n, e in self.ema.items():
            e.load_state_dict(_entry(state, "ema", n, source))
        self.task.load_state_dict(state["task"])
        self.step = state["step"]

    def _check_settings(self, state: dict, source: str) -> None:
        """Refuse a checkpoint written with other settings (older checkpoints record only the seed)."""
        saved = state.get("settings", {"trainer": {"seed": state["seed"]}})
        for group, current in self.settings().items():
            written = saved.get(group, {})
            for key in sorted(set(current) & set(written)):
                if current[key] != written[key]:
                    raise ValueError(f"{source} was written with {key}={written[key]!r}, this run has "
                                     f"{key}={current[key]!r}; use the same {key} or another checkpoint_dir")

    def _synchronise_ranks(self) -> None:
        """Give every rank rank 0's networks and EMA copies, as ``DistributedDataParallel`` does at construction:
        ranks whose networks were initialised from different random states would otherwise train apart."""
        modules = [*self.task.networks.values(), *(e.module for e in self.ema.values())]
        distributed.broadcast_from_rank0([t for m in modules for t in (*m.parameters(), *m.buffers())])

    def save(self) -> None:
        if self.checkpoint_path is not None and distributed.rank() == 0:
            save_checkpoint(self.state_dict(), self.checkpoint_path)
        if distributed.is_distributed():
            dist.barrier()

    def _resume(self) -> None:
        """Load ``last.pt`` if there is one, then drop the log lines of steps this run will (re)do, so a run
        interrupted before its first checkpoint, or rerun from step 0, does not log those steps twice."""
        state = None if self.checkpoint_path is None else load_checkpoint(self.checkpoint_path)
        if state is not None:
            self.load_state_dict(state)
        self._truncate_log()

    # --- logging ----------------------------------------------------------------------------
    def _truncate_log(self) -> None:
        if self.log_path is None or distributed.rank() != 0 or not self.log_path.exists():
            return
        kept = [line for line in self.log_path.read_text().splitlines()
                if (step := _logged_step(line)) is not None and step < self.step]
        self.log_path.write_text("".join(line + "\n" for line in kept))

    @staticmethod
    def _averaged(metrics: dict[str, float]) -> dict[str, float]:
        """The task's metrics averaged over ranks (the same values on every rank)."""
        names = sorted(metrics)
        values = torch.tensor([float(metrics[n]) for n in names], dtype=torch.float64)
        values = distributed.all_reduce_sum(values) / distributed.world_size()
        return {n: float(v) for n, v in zip(names, values)}

    def _log(self, metrics: dict[str, float], started: float) -> dict[str, float]:
        record = {"step": self.step - 1, "time_s": round(time.time() - started, 3), **metrics}
        if self.log_path is not None and distributed.rank() == 0:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        return record

    def _progress_bar(self):
        if not self.progress or distributed.rank() != 0:
            return None
        from tqdm.auto import tqdm
        return tqdm(total=self.steps, initial=self.step, dynamic_ncols=True)

    # --- loop ---------------------------------------------------------------------------------
    def fit(self, stop_after: int | None = None) -> int:
        """Train until ``steps`` (or until ``stop_after`` >= 0 completed steps, to emulate preemption).

        Resumes from ``checkpoint_dir/last.pt`` if present. Returns the number of completed steps.
        """
        if stop_after is not None:
            sample_count(stop_after, "stop_after")
        self._resume()
        self._synchronise_ranks()
        end = self.steps if stop_after is None else min(self.steps, stop_after)
        bar, started = self._progress_bar(), time.time()
        try:
            while self.step < end:
                ctx = StepContext(self.step, torch.Generator().manual_seed(self.seed * _SEED_STRIDE + self.step),
                                  self.grad_clip, self.task.optimizers)
                metrics = self.task.training_step(ctx)
                for n, e in self.ema.items():
                    e.update(self.task.networks[n])
                self.step += 1
                logs = self.step % self.log_every == 0 or self.step == self.steps
                saves = self.step % self.checkpoint_every == 0 or self.step == self.steps
                if logs or saves:  # averaged first, so that a NaN on one rank stops every rank
                    metrics = self._averaged(metrics)
                    _check_finite_metrics(metrics, self.step - 1)
                if logs:
                    record = self._log(metrics, started)
                    if bar is not None:
                        bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k not in ("step", "time_s")})
                if bar is not None:
                    bar.update(1)
                if saves:
                    self.save()
        finally:
            if bar is not None:
                bar.close()
        return self.step


def _check_finite_metrics(metrics: dict, step: int) -> None:
    """Stop a run whose metrics went NaN or inf before they are logged or checkpointed (read where the loop reads
    them anyway): it would otherwise train on to NaN weights and save them."""
    bad = sorted(name for name, value in metrics.items() if not math.isfinite(float(value)))
    if bad:
        raise FloatingPointError(f"training diverged: metric(s) {bad} are not finite at step {step}; nothing was "
                                 "logged or checkpointed for this step")


def _check_path(path: str | Path, name: str, directory: bool) -> None:
    """Refuse up front a path the run could only fail to write at its first log or checkpoint: an existing file
    where a directory is wanted (or the reverse), or a path under a file."""
    path = Path(path)
    if path.exists() and path.is_dir() != directory:
        raise ValueError(f"{name} {path} exists and is {'not ' if directory else ''}a directory")
    ancestor = next(p for p in path.parents if p.exists())
    if not ancestor.is_dir():
        raise ValueError(f"{name} {path} lies under {ancestor}, which is not a directory")


def _logged_step(line: str) -> int | None:
    """The step of a metrics-log line, or None for a line that is not a record (one cut short when the run was
    killed while writing it)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record.get("step") if isinstance(record, dict) else None


def _entry(state: dict, section: str, name: str, source: str):
    """``state[section][name]``, or a ValueError naming what is missing."""
    if name not in state[section]:
        raise ValueError(f"{source} has no {section} entry {name!r} (it holds {sorted(state[section])})")
    return state[section][name]
