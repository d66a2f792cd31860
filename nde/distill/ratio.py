"""Density ratio r = p_teacher / q_student from a discriminator, with clipping and the two-stage
normalisation of f-distill (Xu, Nie & Vahdat 2025; reference: NVlabs/FastGen f_distill.py).

A discriminator trained with ``softplus(D(fake)) + softplus(-D(real))`` has optimal logit
log(p_t / q_t), so r = exp(logit). Stage 1 divides r by a per-noise-level running mean of r
(``RatioNormalizer``, time bins); stage 2 divides h(r) by its batch mean (``normalize_by_mean``).
"""
from __future__ import annotations

from typing import Callable

import torch

from .._checks import number

AllReduceSum = Callable[[torch.Tensor], torch.Tensor]


def density_ratio(logit: torch.Tensor, lower: float = 0.1, upper: float = 20.0,
                  logit_clip: float = 10.0) -> torch.Tensor:
    """r = clamp(exp(clamp(logit, +-logit_clip)), lower, upper); ``logit`` of shape ``(B,)``.

    ``logit_clip`` must be > 0 (``inf``: no logit clip), else a ``ValueError``.
    """
    if not 0 < lower < upper:
        raise ValueError(f"need 0 < lower < upper, got lower={lower}, upper={upper}")
    number(logit_clip, "logit_clip", positive=True, allow_inf=True)
    return logit.clamp(-logit_clip, logit_clip).exp().clamp(lower, upper)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


class RatioNormalizer:
    """Stage 1: r <- r / m_k, with m_k an EMA of the mean ratio in time bin k of [t_min, t_max].

    ``ema_rate = 0`` uses the current batch's bin means (the reference default). Bins not seen in a
    batch keep their value (initially 1). ``all_reduce_sum`` sums bin statistics across ranks so
    data-parallel training normalises exactly like a single process on the global batch.
    """

    def __init__(self, t_min: float, t_max: float, bins: int = 10, ema_rate: float = 0.0):
        if not t_min < t_max:
            raise ValueError(f"need t_min < t_max, got t_min={t_min}, t_max={t_max}")
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise ValueError(f"bins (ratio_bins) must be a positive int, got {bins!r}")
        if not 0 <= ema_rate < 1:
            raise ValueError(f"ema_rate (ratio_ema_rate) must lie in [0, 1), got {ema_rate}")
        self.t_min, self.t_max, self.ema_rate = t_min, t_max, ema_rate
        self.means = torch.ones(bins, dtype=torch.float64)

    def bin_index(self, t: torch.Tensor) -> torch.Tensor:
        k = ((t - self.t_min) / (self.t_max - self.t_min) * self.means.numel()).floor().long()
        return k.clamp(0, self.means.numel() - 1)

    @torch.no_grad()
    def __call__(self, ratio: torch.Tensor, t: torch.Tensor, all_reduce_sum: AllReduceSum = _identity) -> torch.Tensor:
        idx = self.bin_index(t)
        stats = torch.zeros(2, self.means.numel(), dtype=torch.float64, device=ratio.device)
        stats[0].index_add_(0, idx, ratio.double())
        stats[1].index_add_(0, idx, torch.ones_like(ratio, dtype=torch.float64))
        stats = all_reduce_sum(stats).cpu()
        seen = stats[1] > 0
        batch_mean = stats[0][seen] / stats[1][seen]
        self.means[seen] = self.ema_rate * self.means[seen] + (1 - self.ema_rate) * batch_mean
        return ratio / self.means.to(ratio)[idx]

    def state_dict(self) -> dict:
        return {"means": self.means.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.means = state["means"].clone()


def normalize_by_mean(h: torch.Tensor, all_reduce_sum: AllReduceSum = _identity) -> torch.Tensor:
    """Stage 2: h / mean(h) over the (global) batch, so that mean(h) = 1."""
    stats = all_reduce_sum(torch.stack([h.sum(), torch.tensor(float(h.numel()), dtype=h.dtype, device=h.device)]))
    return h / (stats[0] / stats[1])
