"""f-distill: distil a diffusion teacher into a one-step generator by f-divergence matching.

Xu, Nie & Vahdat, arXiv 2502.15681; details follow NVlabs/FastGen ``f_distill.py`` and DMD2.
For the student law q_theta of x = G_theta(z) and the teacher law p, both diffused by
x_s = alpha_s x + sigma_s eps, the generator follows (paper's main result)

    grad_theta D_f = -E[ w(s) h(r_s(x_s)) (grad log p_s(x_s) - grad log q_s(x_s)) . d x_s / d theta ],

with r = p_s / q_s from a discriminator and h(r) = f''(r) r^2 (:mod:`.divergences`). With
x0-predictions the score difference is alpha_s / sigma_s^2 (x0_teacher - x0_fake), so the
per-sample update direction on x is g = h (x0_fake - x0_teacher) / mean|x - x0_teacher|
(DMD's normaliser), applied through the loss 1/2 mean |x - sg(x - g)|^2 whose x-gradient is g.

Networks: the one-step generator (MLP z -> x), the fake score (x0-prediction network trained by
denoising score matching on detached generator samples) and the discriminator (logit of
real vs fake at noise level s, optimal value log(p_s / q_s)). Updates alternate on two time
scales: the generator every ``student_update_freq``-th step, the critics on the other steps.
Differences from FastGen, by design for small problems: the discriminator is its own MLP on
(x_s, s) rather than a head on teacher features, and the GAN term is optional
(``gan_weight = 0`` allowed; FastGen requires it, as it trains the discriminator's features).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from ..interpolants.interpolant import check_shape, per_sample
from ..interpolants.losses import sample_times
from ..interpolants.networks import MLP, TimeConditionedMLP
from ..training import StepContext, Task
from .._checks import check_generator, number, positive_int, sample_count
from ..training.hyperparameters import check_samples, decay_factor
from .divergences import divergence_weight, f_function
from .ratio import RatioNormalizer, density_ratio, normalize_by_mean
from .teacher import DiffusionTeacher, diffuse

Sampler = Callable[[int, torch.Generator], torch.Tensor]


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


NORMALIZERS = ("sample", "batch")


def distillation_loss(x: torch.Tensor, x0_teacher: torch.Tensor, x0_fake: torch.Tensor,
                      weight: torch.Tensor, normalizer: str = "sample",
                      all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] = _identity) -> torch.Tensor:
    """1/2 mean |x - sg(x - g)|^2 with g = weight (x0_fake - x0_teacher) / (mean|x - x0_teacher| + 1e-6).

    Its gradient with respect to x is g / x.numel(); ``weight`` is the normalised h(r), ``(B,)``; x, x0_teacher
    and x0_fake are ``(B, *state)``.
    ``normalizer="sample"`` takes the mean |x - x0_teacher| per sample (DMD, over an image's pixels);
    ``"batch"`` over the whole batch (one scale per step). In low dimension the per-sample mean runs over
    d coordinates only: it is near 0 for samples the teacher already denoises to themselves, and divides the
    fake score's error there by that near-zero number. ``all_reduce_sum`` makes the batch scale global.
    """
    if normalizer not in NORMALIZERS:
        raise ValueError(f"normalizer must be one of {NORMALIZERS}, got {normalizer!r}")
    check_shape(x0_teacher, x, "x0_teacher", "x")
    check_shape(x0_fake, x, "x0_fake", "x")
    if not isinstance(weight, torch.Tensor) or weight.shape != x.shape[:1]:
        got = getattr(weight, "shape", type(weight).__name__)
        raise ValueError(f"weight must have shape ({x.shape[0]},), got {got}")
    with torch.no_grad():
        residual = (x - x0_teacher).abs().flatten(1)
        if normalizer == "sample":
            scale = residual.mean(1) + 1e-6
        else:
            total = all_reduce_sum(torch.stack([residual.sum(), torch.tensor(float(residual.numel())).to(residual)]))
            scale = (total[0] / total[1] + 1e-6).expand(x.shape[0])
        grad = per_sample(weight / scale, x) * (x0_fake - x0_teacher)
    return 0.5 * F.mse_loss(x, (x - grad).detach(), reduction="mean")


class FDistill(Task):
    """f-distill as a :class:`~nde.training.Task` (networks: generator, fake_score, discriminator).

    Args:
        teacher: the multi-step model (:class:`DiffusionTeacher`).
        sample_real: ``(n, generator) -> (n, dim)`` teacher/data samples for the discriminator.
        dim: data dimension; ``latent_dim`` defaults to it.
        divergence: a key of :data:`F_DIVERGENCES` (reverse_kl = VSD/DMD; forward_kl; js; ...).
        batch_size: global batch per update.
        s_min, s_max: noise levels s ~ U[s_min, s_max] on the cosine schedule.
        ratio_lower, ratio_upper: clip of r (FastGen 0.1, 20); ``ratio_bins``/``ratio_ema_rate``: stage-1
            normalisation (``ratio_bins = 0`` disables it); stage 2 (h / mean h) is always applied.
        gan_weight: weight of the generator's non-saturating GAN term softplus(-D(x_s)) (FastGen 1e-3).
        student_update_freq: generator updated when (step + 1) % freq == 0, critics otherwise (DMD2: 5).
        device, dtype: of the networks; random draws are made on the CPU generator and moved.
        lr, betas: Adam settings for all three networks (research toy: 1e-3, (0, 0.99)).
        lr_decay_every, lr_decay: optional step decay of all three learning rates (multiply by ``lr_decay``
            at every multiple of ``lr_decay_every`` training steps; None keeps them constant, as FastGen).
        normalizer: scale of the update direction, per "sample" (DMD) or per "batch" (:func:`distillation_loss`).

    Constraints (ValueError naming the argument): positive int ``dim``, ``batch_size``, ``student_update_freq``,
    ``lr_decay_every``; ``lr > 0``; ``0 < lr_decay <= 1``; ``0 <= s_min < s_max < 1``; ``0 < ratio_lower <
    ratio_upper``; finite ``gan_weight >= 0``. ``sample_real`` must return ``(n, dim)`` (checked at every draw).
    """

    ema_networks = ("generator",)

    def __init__(self, teacher: DiffusionTeacher, sample_real: Sampler, dim: int, *, divergence: str = "js",
                 latent_dim: int | None = None, batch_size: int = 256, hidden: int = 128, depth: int = 3,
                 lr: float = 1e-3, betas: tuple[float, float] = (0.0, 0.99), student_update_freq: int = 5,
                 s_min: float = 0.02, s_max: float = 0.98, ratio_lower: float = 0.1, ratio_upper: float = 20.0,
                 ratio_bins: int = 10, ratio_ema_rate: float = 0.0, gan_weight: float = 1e-3,
                 normalizer: str = "sample", lr_decay_every: int | None = None, lr_decay: float = 0.5,
                 device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        f_function(divergence)  # validates the name
        if not callable(getattr(teacher, "denoise", None)):
            raise TypeError(f"teacher must be a DiffusionTeacher, got {type(teacher).__name__}")
        if not callable(sample_real):
            raise TypeError(f"sample_real must be callable as sample_real(n, generator), "
                            f"got {type(sample_real).__name__}")
        positive_int(dim, "dim")
        if latent_dim is not None:
            positive_int(latent_dim, "latent_dim")
        positive_int(batch_size, "batch_size")
        positive_int(student_update_freq, "student_update_freq")
        number(lr, "lr", positive=True)
        decay_factor(lr_decay, "lr_decay")
        if lr_decay_every is not None:
            positive_int(lr_decay_every, "lr_decay_every")
        if not 0 <= gan_weight < math.inf:
            raise ValueError(f"gan_weight must be finite and >= 0, got {gan_weight}")
        if not 0 <= s_min < s_max < 1:
            raise ValueError(f"need 0 <= s_min < s_max < 1, got s_min={s_min}, s_max={s_max}")
        if not 0 < ratio_lower < ratio_upper:
            raise ValueError(f"need 0 < ratio_lower < ratio_upper, got ratio_lower={ratio_lower}, "
                             f"ratio_upper={ratio_upper}")
        if normalizer not in NORMALIZERS:
            raise ValueError(f"normalizer must be one of {NORMALIZERS}, got {normalizer!r}")
        self.normalizer_kind = normalizer
        self.teacher, self.sample_real, self.dim = teacher, sample_real, dim
        self.divergence, self.batch_size, self.freq = divergence, batch_size, student_update_freq
        self.latent_dim = latent_dim or dim
        self.s_min, self.s_max, self.gan_weight = s_min, s_max, gan_weight
        self.ratio_lower, self.ratio_upper = ratio_lower, ratio_upper
        self.normalizer = RatioNormalizer(s_min, s_max, ratio_bins, ratio_ema_rate) if ratio_bins else None
        self.device = torch.device(device)
        self.networks = {
            "generator": MLP(self.latent_dim, dim, hidden, depth).to(self.device),
            "fake_score": TimeConditionedMLP(dim, hidden=hidden, depth=depth).to(self.device),
            "discriminator": TimeConditionedMLP(dim, 1, hidden=hidden, depth=depth).to(self.device),
        }
        for net in self.networks.values():
            net.to(dtype)
        self.optimizers = {n: torch.optim.Adam(m.parameters(), lr=lr, betas=betas) for n, m in self.networks.items()}
        self.lr, self.lr_decay_every, self.lr_decay = lr, lr_decay_every, lr_decay
        self._settings = {"divergence": divergence, "dim": dim, "latent_dim": self.latent_dim,
                          "batch_size": batch_size, "hidden": hidden, "depth": depth, "lr": lr, "betas": tuple(betas),
                          "student_update_freq": student_update_freq, "s_min": s_min, "s_max": s_max,
                          "ratio_lower": ratio_lower, "ratio_upper": ratio_upper, "ratio_bins": ratio_bins,
                          "ratio_ema_rate": ratio_ema_rate, "gan_weight": gan_weight, "normalizer": normalizer,
                          "lr_decay_every": lr_decay_every, "lr_decay": lr_decay, "dtype": str(dtype)}

    def settings(self) -> dict:
        """The constructor's hyper-parameters; a run resumed from a checkpoint must have the same."""
        return dict(self._settings)

    # --- pieces ------------------------------------------------------------------------------------
    def log_ratio(self, x_s: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Discriminator logit ``(B,)`` ~ log(p_s / q_s)(x_s)."""
        return self.networks["discriminator"](s, x_s).squeeze(1)

    def weights(self, x_s: torch.Tensor, s: torch.Tensor,
                all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] = _identity) -> torch.Tensor:
        """Normalised h(r) ``(B,)``: clip r, stage-1 per-bin normalisation, h, stage-2 mean normalisation."""
        with torch.no_grad():
            r = density_ratio(self.log_ratio(x_s, s), self.ratio_lower, self.ratio_upper)
            if self.normalizer is not None:
                r = self.normalizer(r, s, all_reduce_sum)
            return normalize_by_mean(divergence_weight(self.divergence, r), all_reduce_sum)

    def generator_loss(self, z: torch.Tensor, s: torch.Tensor, noise: torch.Tensor,
                       all_reduce_sum: Callable[[torch.Tensor], torch.Tensor] = _identity):
        """Distillation loss (+ GAN term) for latents ``z``, noise levels ``s`` and noises; returns (loss, metrics)."""
        x = self.networks["generator"](z)
        x_s = diffuse(x, s, noise)
        x_s_detached = x_s.detach()
        with torch.no_grad():
            x0_teacher = self.teacher.denoise(x_s_detached, s)
            x0_fake = self.networks["fake_score"](s, x_s_detached)
        h = self.weights(x_s_detached, s, all_reduce_sum)
        loss = distillation_loss(x, x0_teacher, x0_fake, h, self.normalizer_kind, all_reduce_sum)
        metrics = {"loss_distill": float(loss.detach()), "h_max": float(h.max())}
        if self.gan_weight > 0:
            gan = F.softplus(-self.log_ratio(x_s, s)).mean()
            loss = loss + self.gan_weight * gan
            metrics["loss_gan_generator"] = float(gan.detach())
        return loss, metrics

    def fake_score_loss(self, x: torch.Tensor, s: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Denoising score matching in x0-prediction on detached generator samples."""
        x = x.detach()
        return F.mse_loss(self.networks["fake_score"](s, diffuse(x, s, noise)), x)

    def discriminator_loss(self, real: torch.Tensor, fake: torch.Tensor, s_real: torch.Tensor, s_fake: torch.Tensor,
                           noise_real: torch.Tensor, noise_fake: torch.Tensor) -> torch.Tensor:
        """softplus(D(fake)) + softplus(-D(real)) on noised samples; optimum D = log(p_s / q_s)."""
        fake_logit = self.log_ratio(diffuse(fake.detach(), s_fake, noise_fake), s_fake)
        real_logit = self.log_ratio(diffuse(real, s_real, noise_real), s_real)
        return F.softplus(fake_logit).mean() + F.softplus(-real_logit).mean()

    # --- training ---------------------------------------------------------------------------------------
    def _to_model(self, x: torch.Tensor) -> torch.Tensor:
        """On the networks' device and dtype (random draws are made on the CPU generator)."""
        return x.to(self.device, next(self.networks["generator"].parameters()).dtype)

    def _draw(self, gen: torch.Generator, ctx: StepContext, *shapes) -> list[torch.Tensor]:
        return [self._to_model(ctx.shard(torch.randn(shape, generator=gen))) for shape in shapes]

    def _levels(self, gen: torch.Generator, ctx: StepContext) -> torch.Tensor:
        return self._to_model(ctx.shard(sample_times(self.batch_size, self.s_min, self.s_max, gen)))

    def training_step(self, ctx: StepContext) -> dict[str, float]:
        if self.lr_decay_every is not None:  # a function of the step, so resuming needs no scheduler state
            lr = self.lr * self.lr_decay ** (ctx.step // self.lr_decay_every)
            for opt in self.optimizers.values():
                for group in opt.param_groups:
                    group["lr"] = lr
        return self._alternating_step(ctx)

    def _alternating_step(self, ctx: StepContext) -> dict[str, float]:
        gen, n = ctx.generator, self.batch_size
        z, noise = self._draw(gen, ctx, (n, self.latent_dim), (n, self.dim))
        s = self._levels(gen, ctx)
        if (ctx.step + 1) % self.freq == 0:
            loss, metrics = self.generator_loss(z, s, noise, ctx.all_reduce_sum)
            ctx.update("generator", loss)
            return metrics
        with torch.no_grad():
            fake = self.networks["generator"](z)
        dsm = self.fake_score_loss(fake, s, noise)
        ctx.update("fake_score", dsm)
        real = self._to_model(ctx.shard(check_samples(self.sample_real(n, gen), n, self.dim, "sample_real")))
        s_real, s_fake = self._levels(gen, ctx), self._levels(gen, ctx)
        noise_real, noise_fake = self._draw(gen, ctx, (n, self.dim), (n, self.dim))
        disc = self.discriminator_loss(real, fake, s_real, s_fake, noise_real, noise_fake)
        ctx.update("discriminator", disc)
        return {"loss_fake_score": float(dsm.detach()), "loss_discriminator": float(disc.detach())}

    def state_dict(self) -> dict:
        return {} if self.normalizer is None else {"ratio_normalizer": self.normalizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if self.normalizer is not None:
            self.normalizer.load_state_dict(state["ratio_normalizer"])

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, ema: dict | None = None) -> torch.Tensor:
        """``(n, dim)`` one-step samples G(z) (from ``trainer.ema`` when given)."""
        n = sample_count(n)
        check_generator(generator)
        net = self.networks["generator"] if ema is None else ema["generator"].module
        return net(self._to_model(torch.randn(n, self.latent_dim, generator=generator)))
