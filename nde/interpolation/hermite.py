"""Cubic Hermite control path with backward differences (Morrill et al. 2021, "Neural
CDEs for online prediction tasks", section 3.3).

On ``[t_k, t_{k+1}]`` the path is the cubic Hermite polynomial matching ``x_k``, ``x_{k+1}``,
with slope ``m_k = (x_k - x_{k-1}) / (t_k - t_{k-1})`` at ``t_k`` (the previous interval's
slope; ``m_0`` is the first interval's slope) and ``m_{k+1} = (x_{k+1} - x_k) / h_k`` at
``t_{k+1}``. It is continuously differentiable and causal: the path on ``[t_0, t_{k+1}]``
depends only on ``x_0 .. x_{k+1}``, so it can be built online as data arrive.
"""
from __future__ import annotations

import torch

from nde.interpolation.missing import linear_fill, prepare
from nde.interpolation.path import ControlPath


def hermite_cubic_backward(x: torch.Tensor, t: torch.Tensor | None = None,
                           lengths: torch.Tensor | None = None) -> ControlPath:
    """Cubic Hermite path with backward-difference slopes.

    Args:
        x: ``(*batch, length, channels)``; NaN marks a missing value (linearly filled first, as
            torchcde's ``hermite_cubic_coefficients_with_backward_differences``).
        t: ``(length,)`` strictly increasing times; default ``0, 1, ..., length-1``.
        lengths: optional ``(*batch,)`` integers; observations at or beyond them are missing.

    Coefficients with ``h = t_{k+1} - t_k``, ``s = (x_{k+1} - x_k) / h``:
    ``a = x_k``, ``b = m_k``, ``c = 2 (s - m_k) / h``, ``d = (m_k - s) / h^2``.
    """
    x, t = prepare(x, t, lengths)
    x = linear_fill(x, t)
    h = (t[1:] - t[:-1]).unsqueeze(-1)
    slope = (x[..., 1:, :] - x[..., :-1, :]) / h
    m = torch.cat([slope[..., :1, :], slope[..., :-1, :]], dim=-2)
    coeffs = torch.stack([x[..., :-1, :], m, 2 * (slope - m) / h, (m - slope) / h ** 2], dim=-2)
    return ControlPath(t, coeffs)
