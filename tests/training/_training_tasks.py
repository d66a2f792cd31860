"""Tiny float64 tasks shared by the trainer tests (importable by spawned processes)."""
import torch

from nde.distill import DiffusionTeacher, FDistill
from nde.interpolants import InterpolantTask, linear, ring_mixture


def interpolant_task(seed: int = 0, **overrides) -> InterpolantTask:
    torch.manual_seed(seed)
    rho1 = ring_mixture(4, 2.0, 0.1, dtype=torch.float64)
    settings = {"fields": ("b", "eta"), "batch_size": 32, "hidden": 16, "depth": 2, "lr": 1e-2, "lr_decay_every": 4,
                "dtype": torch.float64, **overrides}
    return InterpolantTask(linear(), rho1.sample, 2, sample_base=lambda n, g: torch.randn(n, 2, generator=g,
                                                                                             dtype=torch.float64),
                           **settings)


def fdistill_task(seed: int = 0) -> FDistill:
    torch.manual_seed(seed)
    mix = ring_mixture(4, 2.0, 0.1, dtype=torch.float64)
    return FDistill(DiffusionTeacher.from_mixture(mix), mix.sample, 2, divergence="js", batch_size=32, hidden=16,
                    depth=2, student_update_freq=2, normalizer="batch", lr_decay_every=3, dtype=torch.float64)


TASKS = {"interpolant": interpolant_task, "fdistill": fdistill_task}


class GradientRecorder:
    """Wraps a task and records, after every update, the gradients it applied."""

    def __init__(self, task):
        self.task = task
        self.grads = []
        original = task.training_step

        def recording_step(ctx):
            metrics = original(ctx)
            # Only gradients an optimiser applied (averaged over ranks); others are by-products.
            self.grads.append({n: [p.grad.clone() for group in task.optimizers[n].param_groups
                                   for p in group["params"]] for n in ctx.updated})
            for m in task.networks.values():
                m.zero_grad(set_to_none=True)
            return metrics
        task.training_step = recording_step


def run_training(kind: str, steps: int, seed: int = 0):
    """Train ``kind`` for ``steps`` steps; returns (recorded gradients, final state dicts)."""
    from nde.training import Trainer
    task = TASKS[kind]()
    recorder = GradientRecorder(task)
    Trainer(task, steps, seed=seed, ema_decay=0.9).fit()
    weights = {n: {k: v.clone() for k, v in m.state_dict().items()} for n, m in task.networks.items()}
    return recorder.grads, weights


def ddp_worker(rank: int, world: int, port: int, out_path: str, steps: int):
    """Entry point of a spawned rank: gloo process group on localhost, train every task, rank 0 saves results."""
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        results = {kind: run_training(kind, steps) for kind in TASKS}
        if rank == 0:
            torch.save(results, out_path)
    finally:
        dist.destroy_process_group()


def ddp_worker_rank_seeded(rank: int, world: int, port: int, out_path: str, steps: int):
    """Like :func:`ddp_worker` for the interpolant task, but each rank initialises its networks from its own seed
    (a script that forgot to seed); every rank saves its final weights and EMA to ``out_path.<rank>``."""
    import torch.distributed as dist
    from nde.training import Trainer
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        task = interpolant_task(seed=rank)
        trainer = Trainer(task, steps, ema_decay=0.9)
        trainer.fit()
        torch.save({"networks": {n: m.state_dict() for n, m in task.networks.items()},
                    "ema": {n: e.module.state_dict() for n, e in trainer.ema.items()}}, f"{out_path}.{rank}")
    finally:
        dist.destroy_process_group()


def ddp_worker_nan_on_rank_1(rank: int, world: int, port: int, out_path: str, steps: int):
    """Interpolant training whose data turn NaN on rank 1 only from the third draw on; every rank saves the
    error it stopped with to ``out_path.<rank>``."""
    from datetime import timedelta
    import torch.distributed as dist
    from nde.training import Trainer
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    task, calls = interpolant_task(), []

    def poisoned(n, g):
        calls.append(n)
        x = torch.randn(n, 2, generator=g, dtype=torch.float64)
        return x.index_fill(0, torch.arange(n // 2, n), float("nan")) if len(calls) > 2 else x
    task.sample_target = poisoned  # the second half of the global batch is rank 1's shard
    try:
        Trainer(task, steps, log_every=1).fit()
        error = None
    except Exception as e:  # noqa: BLE001 - the test compares what each rank raised
        error = f"{type(e).__name__}: {e}"
    torch.save(error, f"{out_path}.{rank}")
    dist.destroy_process_group()
