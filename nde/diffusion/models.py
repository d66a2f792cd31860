"""Wrappers that turn any denoising network into the noise-prediction model the samplers call.

Every sampler in :mod:`nde.diffusion` calls ``model(x, t)`` with x (B, *state) and t a (B,) tensor of
continuous schedule times, and expects the noise prediction eps (B, *state). :class:`NoisePredictor`
adapts networks with another parameterisation, another time input, conditioning and classifier-free
guidance (Ho & Salimans 2022: eps = eps_u + w (eps_c - eps_u)); :class:`DiffusersUNet` adapts
diffusers-style UNets (``unet(x, timestep, encoder_hidden_states=...).sample``) without importing diffusers.
"""
from __future__ import annotations

from typing import Callable

import torch

from .parameterization import check_prediction, to_eps
from .schedules import NoiseSchedule


def call_model(model: Callable, x: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    """Evaluate ``model`` at a shared time ``t`` (float or 0-d tensor) for the whole batch ``x``.

    Returns the model output, checked to be a tensor of x's shape (B, *state).
    """
    t_batch = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
    return check_output(model(x, t_batch), x)


def check_output(out: torch.Tensor, x: torch.Tensor, call: str = "model(x, t)") -> torch.Tensor:
    """``out``, the output of ``call`` (``model(x, t)``, ``net(x, t)``, ...), if it is a tensor of x's shape; else
    an error."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{call} must return a tensor, got {type(out).__name__}")
    if out.shape != x.shape:
        raise ValueError(f"{call} returned shape {tuple(out.shape)}, expected x's shape {tuple(x.shape)}")
    return out


def check_model_schedule(model: Callable, schedule: NoiseSchedule) -> None:
    """Raise a ValueError naming ``schedule`` if ``model`` carries a noise schedule (``model.schedule``, as the
    wrappers of this package do) with another law: its noise predictions belong to that schedule's marginals.

    Schedules compare by :meth:`NoiseSchedule.config` (class and parameters; not the sampling interval).
    """
    own = getattr(model, "schedule", None)
    if isinstance(own, NoiseSchedule) and own != schedule:
        raise ValueError(f"schedule {schedule!r} is not the schedule the model was built with, model.schedule = "
                         f"{own!r}; sample with the model's schedule")


def check_x_T(x_T: torch.Tensor) -> torch.Tensor:
    """``x_T`` if it is a finite, non-empty floating-point tensor of shape (batch, *state) with at least one state
    dimension (NaN noise gave NaN samples from the closed-form samplers, an empty batch torch errors)."""
    if not isinstance(x_T, torch.Tensor):
        raise TypeError(f"x_T must be a torch.Tensor of shape (batch, *state), got {type(x_T).__name__}")
    if not x_T.is_floating_point():
        raise TypeError(f"x_T must be a floating-point tensor, got {x_T.dtype}")
    if x_T.dim() < 2 or x_T.numel() == 0:
        raise ValueError(f"x_T must have shape (batch, *state) with no empty dimension, got {tuple(x_T.shape)}")
    if not bool(torch.isfinite(x_T).all()):
        raise ValueError("x_T contains non-finite values (NaN or inf)")
    return x_T


class NoisePredictor(torch.nn.Module):
    """Noise prediction eps(x, t) from a network ``net(x, t_input[, cond])``.

    Args:
        net: module or callable. Called as ``net(x, time_input(t))`` without conditioning, or
            ``net(x, time_input(t), cond)`` with conditioning.
        schedule: the noise schedule the network was trained with.
        prediction: what the network predicts: "eps", "x0", "v" or "score".
        time_input: maps continuous time t (B,) to the network's time input (default: identity). For a
            1000-step discrete model trained on VPLinear use e.g. ``lambda t: 1000 * t - 1``.
        cond: conditioning batch (B, ...), a batch of one (1, ...), or a single item without batch dimension
            (its leading size neither B nor 1: an item whose leading size is B or 1 must be given with its
            batch dimension), each broadcast over the batch; None for unconditional.
        uncond: the "null" conditioning for classifier-free guidance (same layout as cond).
        guidance_scale: w in eps_u + w (eps_c - eps_u); 1 means plain conditional sampling.

    The network's raw output must have the shape of its input x whatever ``prediction`` is (checked at every
    call: the conversion to eps would otherwise broadcast a wrong shape into plausible samples).
    """

    def __init__(self, net: Callable, schedule: NoiseSchedule, prediction: str = "eps",
                 time_input: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 cond: torch.Tensor | None = None, uncond: torch.Tensor | None = None,
                 guidance_scale: float = 1.0):
        super().__init__()
        if not callable(net):
            raise TypeError(f"net must be callable, got {type(net).__name__}")
        if uncond is not None and cond is None:
            raise ValueError("uncond was given without cond; classifier-free guidance needs both")
        if guidance_scale != 1.0 and uncond is None:
            raise ValueError(f"guidance_scale={guidance_scale} needs an uncond conditioning")
        self.net = net
        self.schedule = schedule
        self.prediction = check_prediction(prediction)
        self.time_input = time_input
        self.cond = cond
        self.uncond = uncond
        self.guidance_scale = float(guidance_scale)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        t_in = self.time_input(t) if self.time_input is not None else t
        if self.cond is None:
            out = check_output(self.net(x, t_in), x, "net(x, t)")
        elif self.uncond is None or self.guidance_scale == 1.0:
            out = check_output(self.net(x, t_in, _batch(self.cond, x.shape[0])), x, "net(x, t, cond)")
        else:
            out = self._guided(x, t_in)
        shape = (-1,) + (1,) * (x.dim() - 1)
        alpha, sigma = self.schedule.alpha(t).reshape(shape), self.schedule.sigma(t).reshape(shape)
        return to_eps(out, x, alpha, sigma, self.prediction)

    def _guided(self, x: torch.Tensor, t_in: torch.Tensor) -> torch.Tensor:
        """Classifier-free guidance with one batched network call on [x; x]."""
        batch = x.shape[0]
        cond = torch.cat([_batch(self.uncond, batch), _batch(self.cond, batch)])
        doubled = torch.cat([x, x])
        out = check_output(self.net(doubled, torch.cat([t_in, t_in]), cond), doubled, "net(x, t, cond)")
        out_u, out_c = out.chunk(2)
        # Guidance is linear, so combining the raw outputs equals combining their eps conversions.
        return out_u + self.guidance_scale * (out_c - out_u)


class DiffusersUNet(torch.nn.Module):
    """Adapter for diffusers-style UNets: ``unet(x, timestep, encoder_hidden_states=cond).sample``.

    Works with any callable of that signature (diffusers itself is not imported). Discrete-time models
    trained on n = 0..N-1 take ``timestep = N t - 1`` for the continuous time t in [1/N, 1], which
    is the default ``time_input`` here (DPM-Solver's convention).
    """

    def __init__(self, unet: Callable, schedule: NoiseSchedule, prediction: str = "eps",
                 num_train_timesteps: int = 1000, cond: torch.Tensor | None = None,
                 uncond: torch.Tensor | None = None, guidance_scale: float = 1.0):
        super().__init__()
        if not callable(unet):
            raise TypeError(f"unet must be callable, got {type(unet).__name__}")
        if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, int) \
                or num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be a positive int, got {num_train_timesteps!r}")
        self.unet = unet
        steps = float(num_train_timesteps)
        self.inner = NoisePredictor(self._net, schedule, prediction, time_input=lambda t: steps * t - 1.0,
                                    cond=cond, uncond=uncond, guidance_scale=guidance_scale)

    @property
    def schedule(self) -> NoiseSchedule:
        """The noise schedule the UNet was trained with."""
        return self.inner.schedule

    def _net(self, x: torch.Tensor, t_in: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        out = self.unet(x, t_in, encoder_hidden_states=cond)
        return check_output(out.sample if hasattr(out, "sample") else out, x, "unet(x, t, encoder_hidden_states)")

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.inner(x, t)


def _batch(cond: torch.Tensor, batch: int) -> torch.Tensor:
    """A conditioning batch ``(B, ...)`` as is; a batch of one ``(1, ...)`` expanded over the batch (as torch
    broadcasts, and as it is used when B = 1); any other tensor is one item without a batch dimension,
    broadcast over the batch."""
    if cond.dim() > 0 and cond.shape[0] in (batch, 1):
        return cond.expand(batch, *cond.shape[1:])
    return cond.unsqueeze(0).expand(batch, *cond.shape)
