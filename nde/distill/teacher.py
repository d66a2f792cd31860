"""Teachers for f-distill: noise-prediction diffusion models on a cosine schedule.

The forward process is x_s = alpha_s x + sigma_s eps with alpha_s = cos(pi s / 2),
sigma_s = sin(pi s / 2), s in (0, 1): the one-sided trigonometric interpolant run backwards
(interpolant time t = 1 - s), so an interpolant's denoiser is the teacher's eps-prediction
(see :func:`nde.interpolants.vp_noise_prediction`). The analytic-mixture teacher uses the
closed-form denoiser of a Gaussian mixture; a trained teacher uses a learned eta.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .._checks import check_generator, sample_count
from ..interpolants import (GaussianMixture, InterpolantTask, MixtureInterpolantFields, denoiser_from_velocity,
                            one_sided_trigonometric, standard_normal, vp_noise_prediction)
from ..interpolants.interpolant import check_shape, expand_time, per_sample
from ..training import Trainer

NoiseModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cosine_alpha(s: torch.Tensor) -> torch.Tensor:
    return torch.cos(0.5 * math.pi * s)


def cosine_sigma(s: torch.Tensor) -> torch.Tensor:
    return torch.sin(0.5 * math.pi * s)


def diffuse(x: torch.Tensor, s: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_s = alpha_s x + sigma_s noise for ``s`` of shape ``(B,)`` (or a scalar); x and noise ``(B, *state)``."""
    check_shape(noise, x, "noise", "x")
    s = expand_time(s, x)
    return per_sample(cosine_alpha(s), x) * x + per_sample(cosine_sigma(s), x) * noise


class DiffusionTeacher:
    """A noise-prediction model ``eps_model(x, s)`` on the cosine schedule.

    ``denoise`` gives Tweedie's x0-prediction (x - sigma eps) / alpha; ``sample`` runs DDIM.
    """

    def __init__(self, eps_model: NoiseModel):
        if not callable(eps_model):
            raise TypeError(f"eps_model must be callable as eps_model(x, s), got {type(eps_model).__name__}")
        self.eps_model = eps_model

    @classmethod
    def from_denoiser(cls, eta: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> "DiffusionTeacher":
        """From the denoiser eta(t, x) of a one-sided trigonometric interpolant (trained or exact)."""
        return cls(vp_noise_prediction(eta, cosine_alpha, cosine_sigma))

    @classmethod
    def from_velocity(cls, b: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> "DiffusionTeacher":
        """From the velocity b(t, x) of a one-sided trigonometric interpolant (trained or exact).

        For that interpolant Eq. 4.19 inverts to eta = cos(pi t / 2) x - (2 / pi) sin(pi t / 2) b, so an
        error e in b costs the x0-prediction only about (2 / pi) e at every noise level. A learned eta
        is ill-conditioned at high noise instead: x0 = (x - sigma eps) / alpha multiplies its error by
        sigma / alpha -> inf, which misplaces mode masses (docs/transport.md, part B3). Prefer this
        constructor for a trained teacher.
        """
        return cls.from_denoiser(denoiser_from_velocity(one_sided_trigonometric(), b))

    @classmethod
    def from_mixture(cls, mixture: GaussianMixture) -> "DiffusionTeacher":
        """The exact teacher of a Gaussian-mixture data distribution (no learning)."""
        fields = MixtureInterpolantFields(one_sided_trigonometric(), standard_normal(mixture.dim, mixture.means.dtype),
                                          mixture)
        return cls.from_denoiser(fields.denoiser)

    def denoise(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """x0-prediction ``(B, d)`` at noise levels ``s`` of shape ``(B,)``."""
        s = expand_time(s, x)
        eps = self._eps(x, s)
        return (x - per_sample(cosine_sigma(s), x) * eps) / per_sample(cosine_alpha(s), x)

    @torch.no_grad()
    def sample(self, n: int, dim: int, steps: int = 50, s_max: float = 0.999, s_min: float = 1e-3,
               generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``(n, dim)`` samples by deterministic DDIM with ``steps`` model calls from s_max to s_min.

        Needs 0 <= s_min < s_max < 1 (at s = 1 the signal scale cos(pi s / 2) vanishes).
        """
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        if not 0 <= s_min < s_max < 1:
            raise ValueError(f"need 0 <= s_min < s_max < 1, got s_min={s_min}, s_max={s_max}")
        n = sample_count(n)
        check_generator(generator)
        grid = torch.linspace(s_max, s_min, steps + 1, dtype=dtype)
        x = torch.randn(n, dim, generator=generator, dtype=dtype)
        for s, s_next in zip(grid[:-1], grid[1:]):
            s_vec = s.expand(n)
            eps = self._eps(x, s_vec)
            x0 = (x - cosine_sigma(s) * eps) / cosine_alpha(s)
            x = cosine_alpha(s_next) * x0 + cosine_sigma(s_next) * eps
        return (x - cosine_sigma(grid[-1]) * self._eps(x, grid[-1].expand(n))) / cosine_alpha(grid[-1])

    def _eps(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The model's noise prediction, checked to have x's shape."""
        return check_shape(self.eps_model(x, s), x, "eps_model(x, s)", "x")


def train_velocity_teacher(sample_data: Callable[[int, torch.Generator], torch.Tensor], dim: int, steps: int = 3000, *,
                           hidden: int = 128, depth: int = 3, batch_size: int = 1000, lr: float = 2e-3,
                           seed: int = 0, device: str | torch.device = "cpu", **trainer_kwargs) -> DiffusionTeacher:
    """A teacher learned from data: the velocity b of the one-sided trigonometric interpolant N(0, I) -> data.

    ``sample_data(n, generator)`` draws ``(n, dim)`` data samples. b is a :class:`TimeConditionedMLP`
    (``hidden``, ``depth``) fitted by the velocity loss with Adam (``lr``, decayed x0.4 every ``steps // 3``);
    the teacher uses its EMA (0.999) weights through :meth:`DiffusionTeacher.from_velocity`.
    ``trainer_kwargs`` go to :class:`nde.training.Trainer` (checkpoints, logging, progress bar).
    """
    with torch.random.fork_rng(devices=[]):  # network initialisation from ``seed``, global RNG untouched
        torch.manual_seed(seed)
        task = InterpolantTask(one_sided_trigonometric(), sample_data, dim, fields=("b",), batch_size=batch_size,
                               hidden=hidden, depth=depth, lr=lr, lr_decay_every=max(1, steps // 3), lr_decay=0.4,
                               device=device)
    trainer = Trainer(task, steps, seed=seed, ema_decay=0.999, **trainer_kwargs)
    trainer.fit()
    return DiffusionTeacher.from_velocity(task.field("b", trainer.ema))
