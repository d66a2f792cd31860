"""Training loop shared by interpolants and f-distill (checkpoints, EMA, logging, data parallelism)."""
from .checkpoint import load_checkpoint, save_checkpoint
from .distributed import all_reduce_sum, average_gradients, free_port, init_process_group, rank, shard, world_size
from .ema import EMA
from .task import StepContext, Task
from .trainer import Trainer

__all__ = ["Trainer", "Task", "StepContext", "EMA", "save_checkpoint", "load_checkpoint", "init_process_group",
           "free_port", "all_reduce_sum", "average_gradients", "shard", "rank", "world_size"]
