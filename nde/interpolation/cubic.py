"""Natural cubic spline control path (Kidger et al. 2020, "Neural CDEs", section 3.2).

With missing values each channel of each sample gets the natural cubic spline through its
own observed points (after the first / last time is filled with the first / last observed
value), as torchcde's ``natural_cubic_coeffs``. This is vectorised: the observed points of
every series are packed to the front, each series solves its own tridiagonal system
(padding rows are the identity), and the resulting polynomials are re-centred on the
shared grid. The spline is not causal: X on ``[t_k, t_{k+1}]`` depends on all the data.
"""
from __future__ import annotations

import torch

from nde.interpolation.missing import fill_ends, prepare
from nde.interpolation.path import ControlPath


def _solve_tridiagonal(lower: torch.Tensor, diag: torch.Tensor, upper: torch.Tensor,
                       rhs: torch.Tensor) -> torch.Tensor:
    """Thomas algorithm, batched over leading dims. All inputs ``(N, n)``; ``lower[:, 0]`` and
    ``upper[:, -1]`` are ignored. Differentiable (no in-place writes)."""
    n = diag.shape[-1]
    c_prime, d_prime = [upper[:, 0] / diag[:, 0]], [rhs[:, 0] / diag[:, 0]]
    for i in range(1, n):
        denom = diag[:, i] - lower[:, i] * c_prime[-1]
        c_prime.append(upper[:, i] / denom)
        d_prime.append((rhs[:, i] - lower[:, i] * d_prime[-1]) / denom)
    solution = [d_prime[-1]]
    for i in range(n - 2, -1, -1):
        solution.append(d_prime[i] - c_prime[i] * solution[-1])
    return torch.stack(solution[::-1], dim=-1)


def _spline_second_derivatives(tau: torch.Tensor, y: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Second derivatives M at the knots of natural cubic splines (Burden & Faires, alg. 3.4).

    ``tau``, ``y``: ``(N, L)`` knots and values, the first ``n_i`` entries of row ``i`` valid
    (``valid`` marks them); ``M = 0`` at both ends of each series and at padding.
    Interior rows: ``h_{j-1} M_{j-1} + 2 (h_{j-1} + h_j) M_j + h_j M_{j+1}
    = 6 ((y_{j+1} - y_j) / h_j - (y_j - y_{j-1}) / h_{j-1})``.
    """
    h = tau[:, 1:] - tau[:, :-1]
    slope = (y[:, 1:] - y[:, :-1]) / h
    interior = valid[:, 1:-1] & valid[:, 2:]
    zeros = torch.zeros_like(y[:, :1])
    ones = torch.ones_like(y[:, :1])
    diag = torch.cat([ones, torch.where(interior, 2 * (h[:, :-1] + h[:, 1:]), torch.ones_like(h[:, 1:])), ones], -1)
    lower = torch.cat([zeros, torch.where(interior, h[:, :-1], torch.zeros_like(h[:, 1:])), zeros], -1)
    upper = torch.cat([zeros, torch.where(interior, h[:, 1:], torch.zeros_like(h[:, 1:])), zeros], -1)
    rhs = torch.cat([zeros, torch.where(interior, 6 * (slope[:, 1:] - slope[:, :-1]),
                                        torch.zeros_like(h[:, 1:])), zeros], -1)
    return _solve_tridiagonal(lower, diag, upper, rhs)


def _pack_observed(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Move each row's observed entries to the front. ``x``: ``(N, L)`` with NaNs.

    Returns knots ``tau`` (padding continues past ``t[-1]`` in steps of ``t``'s span, so rows stay
    sorted and every padded interval has a width that ``t``'s dtype resolves, also where ``t[-1]`` is
    large: a unit step vanished in float32 beyond 2^24 and its zero width made the gradients NaN),
    values ``y`` (padding 0) and the validity mask, all ``(N, L)``."""
    observed = ~torch.isnan(x)
    order = torch.argsort((~observed).to(torch.int8), dim=-1, stable=True)
    valid = observed.gather(-1, order)
    count = valid.sum(-1, keepdim=True)
    position = torch.arange(x.shape[-1], device=x.device, dtype=t.dtype).expand_as(x)
    resolvable = 8 * torch.finfo(t.dtype).eps * t[-1].detach().abs()
    gap = torch.maximum(t[-1] - t[0], resolvable).detach()
    padding = t[-1] + gap * (1 + position - count)
    tau = torch.where(valid, t.expand_as(x).gather(-1, order), padding)
    y = torch.where(valid, x.gather(-1, order), torch.zeros_like(x))
    return tau, y, valid


def natural_cubic_spline(x: torch.Tensor, t: torch.Tensor | None = None,
                         lengths: torch.Tensor | None = None) -> ControlPath:
    """Natural cubic spline through the observations (twice continuously differentiable).

    Args:
        x: ``(*batch, length, channels)``; NaN marks a missing value.
        t: ``(length,)`` strictly increasing times; default ``0, 1, ..., length-1``.
        lengths: optional ``(*batch,)`` integers; observations at or beyond them are missing.

    Matches torchcde's ``natural_cubic_coeffs`` (including its handling of missing values).
    """
    x, t = prepare(x, t, lengths)
    batch, length, channels = x.shape[:-2], x.shape[-2], x.shape[-1]
    series = fill_ends(x).movedim(-1, -2).reshape(-1, length)                 # (N, L)
    tau, y, valid = _pack_observed(series, t)
    second = _spline_second_derivatives(tau, y, valid)
    h = tau[:, 1:] - tau[:, :-1]
    a = y[:, :-1]
    b = (y[:, 1:] - y[:, :-1]) / h - h * (2 * second[:, :-1] + second[:, 1:]) / 6
    c = second[:, :-1] / 2
    d = (second[:, 1:] - second[:, :-1]) / (6 * h)
    # Re-centre the packed polynomial containing each grid interval's left end t_k.
    count = valid.sum(-1, keepdim=True)
    left = t[:-1].expand(series.shape[0], -1).contiguous()
    j = torch.minimum(torch.searchsorted(tau.contiguous(), left, right=True) - 1, count - 2).clamp(min=0)
    a, b, c, d = (p.gather(-1, j) for p in (a, b, c, d))
    delta = left - tau.gather(-1, j)
    coeffs = torch.stack([a + delta * (b + delta * (c + delta * d)),
                          b + delta * (2 * c + 3 * delta * d),
                          c + 3 * delta * d, d], dim=-1)                       # (N, L-1, 4)
    coeffs = coeffs.reshape(*batch, channels, length - 1, 4).movedim(-3, -1)
    return ControlPath(t, coeffs)
