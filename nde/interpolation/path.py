"""Piecewise-cubic control paths X(t) for neural CDEs.

Every interpolation in :mod:`nde.interpolation` (linear, rectilinear, natural cubic
spline, cubic Hermite with backward differences) is a piecewise cubic polynomial on a
grid of knots ``t_0 < ... < t_{L-1}``; on ``[t_k, t_{k+1}]``

    X(t) = a_k + b_k s + c_k s^2 + d_k s^3,    s = t - t_k,

so one class evaluates all of them. The coefficients are precomputed once; evaluating
X or dX/dt locates the interval with :func:`torch.searchsorted` on the tensor's own
device and gathers with :func:`torch.index_select`, so there is no host synchronisation
and the call can sit inside an ODE solver's step loop.
"""
from __future__ import annotations

import torch

from nde.interpolation.missing import cast_times


class ControlPath:
    """A batch of piecewise-cubic paths.

    Args:
        knots: ``(L,)`` finite, strictly increasing times, ``L >= 2`` (a sequence, or a tensor of
            another dtype or device, is cast to ``coeffs``' dtype and device).
        coeffs: ``(*batch, L - 1, 4, channels)``: ``coeffs[..., k, j, :]`` multiplies ``s**j``
            on interval ``k``.

    Evaluation is right-continuous at the knots (at ``t = t_k`` interval ``k`` is used), which
    is the interval a forward-stepping solver is about to enter. Times outside
    ``[t_0, t_{L-1}]`` extrapolate the first or last polynomial.
    """

    def __init__(self, knots: torch.Tensor, coeffs: torch.Tensor):
        if not isinstance(coeffs, torch.Tensor) or not coeffs.is_floating_point():
            raise TypeError(f"coeffs must be a floating-point tensor, got {type(coeffs)}")
        if not isinstance(knots, torch.Tensor) or knots.dtype != coeffs.dtype or knots.device != coeffs.device:
            knots = cast_times(knots, coeffs, "knots")
        if knots.ndim != 1 or knots.shape[0] < 2:
            raise ValueError(f"knots must be a 1-D tensor with at least 2 entries, got shape {tuple(knots.shape)}")
        if not bool(((knots[1:] > knots[:-1]).all() & knots.isfinite().all())):
            raise ValueError("knots must be finite and strictly increasing")
        if coeffs.ndim < 3 or coeffs.shape[-3] != knots.shape[0] - 1 or coeffs.shape[-2] != 4:
            raise ValueError(f"coeffs must have shape (*batch, {knots.shape[0] - 1}, 4, channels), "
                             f"got {tuple(coeffs.shape)}")
        self.knots = knots
        self.coeffs = coeffs

    @property
    def grid_points(self) -> torch.Tensor:
        """``(L,)`` the knots; useful as solver jump times."""
        return self.knots

    @property
    def interval(self) -> torch.Tensor:
        """``(2,)`` the first and last knot."""
        return self.knots[[0, -1]]

    @property
    def batch_shape(self) -> torch.Size:
        return self.coeffs.shape[:-3]

    @property
    def channels(self) -> int:
        return self.coeffs.shape[-1]

    def to(self, *args, **kwargs) -> "ControlPath":
        """A copy on another device / dtype (same arguments as :meth:`torch.Tensor.to`)."""
        return ControlPath(self.knots.to(*args, **kwargs), self.coeffs.to(*args, **kwargs))

    def _locate(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """Offsets ``s`` (shape of ``t``) and the coefficients of each ``t``'s interval.

        Returns ``s`` and ``coeffs`` of shape ``(*batch, *t.shape, 4, channels)``.
        """
        t = torch.as_tensor(t, dtype=self.coeffs.dtype, device=self.coeffs.device)
        last = self.knots.shape[0] - 2
        index = (torch.searchsorted(self.knots, t.detach().reshape(-1), right=True) - 1).clamp(0, last)
        s = t - self.knots[index].reshape(t.shape)
        coeffs = self.coeffs.index_select(-3, index)
        coeffs = coeffs.reshape(*self.batch_shape, *t.shape, 4, self.channels)
        return s, coeffs

    def evaluate(self, t) -> torch.Tensor:
        """X(t). ``t``: scalar or tensor of times; returns ``(*batch, *t.shape, channels)``."""
        s, c = self._locate(t)
        s = s.unsqueeze(-1)
        return c[..., 0, :] + s * (c[..., 1, :] + s * (c[..., 2, :] + s * c[..., 3, :]))

    def derivative(self, t) -> torch.Tensor:
        """dX/dt(t). ``t``: scalar or tensor of times; returns ``(*batch, *t.shape, channels)``."""
        s, c = self._locate(t)
        s = s.unsqueeze(-1)
        return c[..., 1, :] + s * (2 * c[..., 2, :] + s * 3 * c[..., 3, :])

    def derivative_rows(self, t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """dX/dt for a subset of a 1-D batch, each row at its own time.

        ``t``: ``(n,)`` times; ``rows``: ``(n,)`` integer indices into the batch. Returns ``(n, channels)``.
        Used by per-sample solvers, which integrate only the rows still running.
        """
        if len(self.batch_shape) != 1:
            raise ValueError(f"derivative_rows needs a path with one batch dimension, got {tuple(self.batch_shape)}")
        t = torch.as_tensor(t, dtype=self.coeffs.dtype, device=self.coeffs.device)
        intervals = self.knots.shape[0] - 1
        index = (torch.searchsorted(self.knots, t.detach().contiguous(), right=True) - 1).clamp(0, intervals - 1)
        c = self.coeffs.reshape(-1, 4, self.channels).index_select(0, rows * intervals + index)
        s = (t - self.knots[index]).unsqueeze(-1)
        return c[:, 1] + s * (2 * c[:, 2] + s * 3 * c[:, 3])

    def torchcde_coeffs(self) -> torch.Tensor:
        """The coefficients in torchcde's cubic layout ``(*batch, L - 1, 4 * channels)``:
        ``cat(a, b, 2c, 3d)``, as accepted by ``torchcde.CubicSpline``."""
        c = self.coeffs
        return torch.cat([c[..., 0, :], c[..., 1, :], 2 * c[..., 2, :], 3 * c[..., 3, :]], dim=-1)
