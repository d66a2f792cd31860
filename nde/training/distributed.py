"""Data parallelism over ``torch.distributed``: rank/world queries, gradient averaging, sharding.

The trainer starts every rank from rank 0's weights (:func:`broadcast_from_rank0`). Every rank draws
the same global batch from a generator seeded by (seed, step), keeps its contiguous shard, and
gradients are averaged with ``all_reduce`` before each optimiser step.
With equal shard sizes this gives exactly the gradient of the global-batch mean loss, i.e.
what ``DistributedDataParallel`` computes, while also covering tasks with several networks and
optimisers updated on different steps (f-distill), which a single DDP wrapper does not.
Launch with ``torchrun --nproc_per_node=N script.py`` (env:// initialisation) or spawn
processes and call :func:`init_process_group`.
"""
from __future__ import annotations

import os
import socket
from typing import Iterable

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def init_process_group(backend: str | None = None) -> bool:
    """Initialise from torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR/PORT) if present.

    Returns True when a process group is active afterwards. ``backend`` defaults to nccl on
    CUDA machines and gloo otherwise.
    """
    if is_distributed():
        return True
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) <= 1:
        return False
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend=backend)
    return True


def free_port() -> int:
    """A TCP port on localhost that was free a moment ago (for single-machine test launches)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (returns a new tensor; identity when not distributed)."""
    if not is_distributed():
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Replace each ``.grad`` by its mean over ranks (one flat all-reduce)."""
    if not is_distributed():
        return
    params = [p for p in parameters if p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world_size()
    offset = 0
    for p in params:
        n = p.grad.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


def broadcast_from_rank0(tensors: Iterable[torch.Tensor]) -> None:
    """Overwrite each tensor in place with rank 0's values (nothing when not distributed)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for tensor in tensors:
            dist.broadcast(tensor, src=0)


def shard(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous slice of a global batch (dim 0 must divide by the world size)."""
    n, w = tensor.shape[0], world_size()
    if n % w:
        raise ValueError(f"global batch of {n} does not divide by the world size {w}")
    size = n // w
    return tensor[rank() * size:(rank() + 1) * size]
