"""Linear and rectilinear control paths (Kidger et al. 2020, "Neural CDEs", and
Morrill et al. 2021, "Neural CDEs for online prediction tasks", section 3)."""
from __future__ import annotations

import torch

from nde.interpolation.missing import forward_fill, linear_fill, prepare
from nde.interpolation.path import ControlPath


def _linear_coeffs(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``(*batch, L-1, 4, C)`` coefficients of the piecewise-linear path through NaN-free ``x``."""
    slope = (x[..., 1:, :] - x[..., :-1, :]) / (t[1:] - t[:-1]).unsqueeze(-1)
    zero = torch.zeros_like(slope)
    return torch.stack([x[..., :-1, :], slope, zero, zero], dim=-2)


def linear_interpolation(x: torch.Tensor, t: torch.Tensor | None = None,
                         lengths: torch.Tensor | None = None) -> ControlPath:
    """Piecewise-linear path through the observations.

    Args:
        x: ``(*batch, length, channels)`` observations; NaN marks a missing value, which is
            filled by linear interpolation in time within its channel.
        t: ``(length,)`` strictly increasing observation times; default ``0, 1, ..., length-1``.
        lengths: optional ``(*batch,)`` integers; observations at or beyond ``lengths[b]`` are
            treated as missing, so the path is constant after them.

    The path is causal on the grid: on ``[t_k, t_{k+1}]`` it uses only ``x_k`` and ``x_{k+1}``.
    """
    x, t = prepare(x, t, lengths)
    return ControlPath(t, _linear_coeffs(linear_fill(x, t), t))


def rectilinear_interpolation(x: torch.Tensor, time_channel: int,
                              lengths: torch.Tensor | None = None) -> ControlPath:
    """Rectilinear (lead-lag) path: between observations, first the time channel moves, then
    the other channels jump. Causal, so suited to online prediction.

    Args:
        x: ``(*batch, length, channels)`` with observation time stored in channel ``time_channel``
            (non-decreasing and not NaN; forward-fill it for padded samples, or pass ``lengths``).
            Other NaNs are forward-filled.
        time_channel: index of the time channel.
        lengths: optional ``(*batch,)`` integers, as in :func:`linear_interpolation`.

    Returns a path of ``2 * length - 1`` knots at parameter values ``0, 1, ..., 2L - 2`` (the
    physical time is the time channel), identical to torchcde's
    ``linear_interpolation_coeffs(x, rectilinear=time_channel)``.
    """
    if not isinstance(time_channel, int) or isinstance(time_channel, bool):
        raise TypeError(f"time_channel must be an int, got {type(time_channel)}")
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ValueError("x must be a tensor of shape (*batch, length, channels)")
    if not 0 <= time_channel < x.shape[-1]:
        raise ValueError(f"time_channel must lie in [0, {x.shape[-1] - 1}], got {time_channel}")
    time_missing = torch.isnan(x[..., time_channel])
    x, _ = prepare(x, None, lengths)
    if lengths is not None:                       # NaN at or beyond a sample's length is padding
        lengths = torch.as_tensor(lengths, device=x.device)
        time_missing &= torch.arange(x.shape[-2], device=x.device) < lengths.unsqueeze(-1)
    if bool(time_missing.any()):
        raise ValueError("the time channel of x contains NaN; forward-fill it or pass lengths")
    filled = forward_fill(x)
    time = filled[..., time_channel]
    if not bool((time[..., 1:] >= time[..., :-1]).all()):
        raise ValueError(f"the time channel of x (channel {time_channel}) must be non-decreasing")
    doubled = filled.repeat_interleave(2, dim=-2)
    is_time = torch.arange(x.shape[-1], device=x.device) == time_channel
    lead = torch.where(is_time, doubled[..., 1:, :], doubled[..., :-1, :])
    knots = torch.arange(lead.shape[-2], dtype=x.dtype, device=x.device)
    return ControlPath(knots, _linear_coeffs(lead, knots))
