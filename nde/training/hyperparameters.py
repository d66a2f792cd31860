"""Checks of training hyper-parameters and of user data samplers, shared by the training tasks.

Each check returns the value it accepted and raises a ``ValueError`` (``TypeError`` for a wrong type)
whose message names the argument, so a task validates its constructor arguments in one line each.
"""
from __future__ import annotations


import torch


def decay_factor(value: float, name: str) -> float:
    """``value`` as a float if 0 < value <= 1 (a multiplicative decay of a learning rate)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"{name} must lie in (0, 1], got {value!r}")
    return float(value)


def check_samples(samples: torch.Tensor, n: int, dim: int, name: str) -> torch.Tensor:
    """``samples`` if it is a floating-point tensor of shape ``(n, dim)``, the output of the sampler ``name``."""
    if not isinstance(samples, torch.Tensor) or not samples.is_floating_point():
        raise TypeError(f"{name}(n, generator) must return a floating-point tensor, got "
                        f"{getattr(samples, 'dtype', type(samples).__name__)}")
    if samples.shape != (n, dim):
        raise ValueError(f"{name}(n, generator) returned shape {tuple(samples.shape)}, expected ({n}, {dim})")
    return samples
