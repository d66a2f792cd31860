"""Checking raw observations and filling NaN-marked missing values, vectorised.

Data are ``x`` of shape ``(*batch, length, channels)`` observed at shared times ``t`` of
shape ``(length,)``. Irregular sampling across a batch is expressed the torchcde way: put
all samples on the union of their observation times and mark what a sample did not
observe as NaN. Per-sample lengths are trailing NaNs (or the ``lengths`` argument); the
path is then constant after a sample's last observation, so a CDE's state at the final
time equals its state at that sample's last observation.
"""
from __future__ import annotations

import torch


def cast_times(t, like: torch.Tensor, name: str = "t") -> torch.Tensor:
    """``t`` (a sequence or tensor of times, ``(..., T)``) as a tensor in ``like``'s dtype, on its device.

    A cast can round times apart: Unix seconds ``1.7e9 + 1000 k`` in float32 lie 1024 s apart, or
    collapse. The gaps between consecutive times (along the last dimension) are therefore compared
    before and after the cast, and a relative change above ``max(1e-3, sqrt(eps))`` of the target
    dtype raises a ``ValueError`` naming ``name`` instead of integrating over wrong intervals.
    Sequences are read in float64 (Python floats) before the cast.
    """
    source = t if torch.is_tensor(t) else torch.as_tensor(t, dtype=torch.float64)
    cast = source.to(device=like.device, dtype=like.dtype)
    if source.dtype == cast.dtype or cast.ndim == 0:
        return cast
    before = source.detach().to(device=cast.device, dtype=torch.float64).diff(dim=-1)
    after = cast.detach().to(torch.float64).diff(dim=-1)
    change = (after - before).abs() / before.abs().clamp_min(torch.finfo(torch.float64).tiny)
    worst = float(torch.nan_to_num(change, nan=0.0, posinf=0.0).max()) if change.numel() else 0.0
    if worst > max(1e-3, torch.finfo(like.dtype).eps ** 0.5):
        raise ValueError(f"{name} loses precision in {like.dtype}: the cast changes the gaps between its times "
                         f"by up to {worst:.1%}; shift {name} to start near 0, or use float64")
    return cast


def check_finite_or_nan(x: torch.Tensor, name: str = "x") -> None:
    """Raise a ``ValueError`` naming ``name`` if ``x`` holds ``±inf`` (NaN marks a missing value)."""
    infinite = torch.isinf(x)
    if bool(infinite.any()):
        index = tuple(infinite.nonzero()[0].tolist())
        raise ValueError(f"{name} contains ±inf at index {index}; use NaN for missing values")


def check_lengths(lengths, batch_shape: torch.Size, length: int, device) -> torch.Tensor:
    """``lengths`` as an integer tensor of shape ``batch_shape`` with entries in ``[1, length]``."""
    lengths = torch.as_tensor(lengths, device=device)
    if lengths.shape != batch_shape or lengths.is_floating_point() or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must be an integer tensor of shape {tuple(batch_shape)}, "
                         f"got {tuple(lengths.shape)} {lengths.dtype}")
    if bool((lengths < 1).any()) or bool((lengths > length).any()):
        raise ValueError(f"lengths must lie in [1, {length}]")
    return lengths


def prepare(x: torch.Tensor, t: torch.Tensor | None, lengths: torch.Tensor | None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate ``x``, ``t``, ``lengths``; return ``(x, t)`` with ``t`` defaulting to ``0..L-1``
    and entries at or beyond ``lengths[b]`` set to NaN. ``±inf`` in ``x`` (where it is used) raises."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"x must be a floating-point tensor of shape (*batch, length, channels), got {got}")
    if x.ndim < 2 or x.shape[-2] < 2:
        raise ValueError(f"x must have shape (*batch, length >= 2, channels), got {tuple(x.shape)}")
    length = x.shape[-2]
    if t is None:
        t = torch.arange(length, dtype=x.dtype, device=x.device)
    else:
        t = cast_times(t, x)
        if t.shape != (length,):
            raise ValueError(f"t must have shape ({length},) to match x's length dimension, got {tuple(t.shape)}")
        if not bool((t[1:] > t[:-1]).all()) or not bool(torch.isfinite(t).all()):
            raise ValueError("t must be finite and strictly increasing")
    if lengths is not None:
        lengths = check_lengths(lengths, x.shape[:-2], length, x.device)
        beyond = torch.arange(length, device=x.device) >= lengths.unsqueeze(-1)
        x = x.masked_fill(beyond.unsqueeze(-1), float("nan"))
    check_finite_or_nan(x)
    return x, t


def _neighbour_indices(observed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each position along dim -2, the index of the previous / next observed entry
    (inclusive), or -1 / L where there is none. ``observed``: ``(*batch, L, C)`` bool."""
    length = observed.shape[-2]
    index = torch.arange(length, device=observed.device).view(length, 1).expand_as(observed)
    prev = torch.where(observed, index, torch.full_like(index, -1)).cummax(dim=-2).values
    nxt = torch.where(observed, index, torch.full_like(index, length))
    nxt = nxt.flip(-2).cummin(dim=-2).values.flip(-2)
    return prev, nxt


def linear_fill(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Replace NaNs by linear interpolation in time between the neighbouring observations of
    the same channel; leading / trailing NaNs take the first / last observed value; an
    all-NaN channel becomes zeros (as torchcde). ``x``: ``(*batch, L, C)``, ``t``: ``(L,)``."""
    observed = ~torch.isnan(x)
    length = x.shape[-2]
    prev, nxt = _neighbour_indices(observed)
    prev_c = torch.where(prev < 0, nxt, prev).clamp(0, length - 1)
    next_c = torch.where(nxt >= length, prev, nxt).clamp(0, length - 1)
    clean = torch.where(observed, x, torch.zeros_like(x))
    x_prev, x_next = clean.gather(-2, prev_c), clean.gather(-2, next_c)
    t_here = t.view(length, 1)
    t_prev, t_next = t[prev_c], t[next_c]
    same = prev_c == next_c
    ratio = torch.where(same, torch.zeros_like(x), (t_here - t_prev) / torch.where(same, torch.ones_like(x),
                                                                                   t_next - t_prev))
    return torch.where(observed, x, x_prev + ratio * (x_next - x_prev))


def forward_fill(x: torch.Tensor) -> torch.Tensor:
    """Replace NaNs by the last observed value of the same channel (leading NaNs take the first
    observed value; an all-NaN channel becomes zeros). ``x``: ``(*batch, L, C)``."""
    observed = ~torch.isnan(x)
    length = x.shape[-2]
    prev, nxt = _neighbour_indices(observed)
    source = torch.where(prev < 0, nxt, prev).clamp(0, length - 1)
    clean = torch.where(observed, x, torch.zeros_like(x))
    return clean.gather(-2, source)


def fill_ends(x: torch.Tensor) -> torch.Tensor:
    """Fill leading NaNs with the first observed value of their channel and trailing NaNs with
    the last (interior NaNs stay), so the path is constant before the first and after the
    last observation; an all-NaN channel becomes zeros. ``x``: ``(*batch, L, C)``."""
    observed = ~torch.isnan(x)
    length = x.shape[-2]
    prev, nxt = _neighbour_indices(observed)
    clean = torch.where(observed, x, torch.zeros_like(x))
    leading = clean.gather(-2, nxt.clamp(max=length - 1))
    trailing = clean.gather(-2, prev.clamp(min=0))
    all_missing = (nxt >= length) & (prev < 0)
    return torch.where(prev < 0, torch.where(all_missing, clean, leading),
                       torch.where(nxt >= length, trailing, x))
