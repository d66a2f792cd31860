"""A small time-conditioned MLP noise-prediction network and its denoising score-matching trainer.

Used to verify the samplers on a *learned* model without pretrained weights (trained in seconds on
2-D data). The loss is the eps-prediction objective E_{t, x0, eps} ||eps_theta(alpha_t x0 + sigma_t eps, t) - eps||^2
(Ho et al. 2020, Eq. 14) with t ~ U[t_end, t_start].
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .schedules import NoiseSchedule


class TimeMLP(nn.Module):
    """eps_theta(x, t[, cond]) for x (B, D), t (B,), optional cond (B, cond_dim).

    The time enters through sinusoidal features of the half log-SNR lambda_t (scale-free across schedules).
    """

    def __init__(self, dim: int, schedule: NoiseSchedule, hidden: int = 128, depth: int = 3,
                 cond_dim: int = 0, n_freq: int = 8):
        super().__init__()
        if dim < 1 or hidden < 1 or depth < 1:
            raise ValueError(f"dim, hidden and depth must be positive, got {dim}, {hidden}, {depth}")
        self.schedule = schedule
        self.cond_dim = cond_dim
        self.register_buffer("freqs", 2.0 ** torch.arange(n_freq, dtype=torch.float32) / 8.0)
        layers: list[nn.Module] = []
        width = dim + 2 * n_freq + cond_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, dim))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        lam = self.schedule.lambda_(torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0]))
        angles = lam.unsqueeze(-1) * self.freqs.to(x.dtype)
        parts = [x, angles.sin(), angles.cos()]
        if self.cond_dim:
            if cond is None:
                raise ValueError("this TimeMLP was built with cond_dim > 0; pass cond")
            parts.append(cond)
        return self.body(torch.cat(parts, dim=-1))


def train_noise_predictor(net: nn.Module, sample_data: Callable[[int], torch.Tensor], schedule: NoiseSchedule,
                          steps: int = 2000, batch_size: int = 512, lr: float = 2e-3,
                          generator: torch.Generator | None = None) -> list[float]:
    """Fit ``net(x, t)`` to the noise by denoising score matching; returns the loss history.

    Args:
        sample_data: ``n -> (n, D)`` data samples.
    """
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive, got {steps}, {batch_size}")
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    history = []
    for _ in range(steps):
        x0 = sample_data(batch_size)
        u = torch.rand(batch_size, generator=generator, dtype=x0.dtype).to(x0.device)
        t = schedule.t_end + (schedule.t_start - schedule.t_end) * u
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        alpha, sigma = schedule.alpha(t).unsqueeze(-1), schedule.sigma(t).unsqueeze(-1)
        loss = (net(alpha * x0 + sigma * noise, t) - noise).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        history.append(loss.item())
    return history


