"""The result of :func:`nde.solve_ode`."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ._integrate import output_value, step_index
from ._rk import Coefficients
from .errors import Status


@dataclass
class Solution:
    """Solution of an ODE solve.

    Attributes:
        ts: output times, ``(T,)`` or per-sample ``(batch, T)``.
        ys: states at ``ts``, ``(T, *y0.shape)`` (a tuple of such tensors for tuple states).
        stats: ``nfe`` (function evaluations; per sample in per-sample mode, where one evaluation
            of one row counts once), ``n_accepted``, ``n_rejected``; tensors.
        status: :class:`nde.Status` codes, ``()`` or ``(batch,)``; 0 is success.
        heuristics: per accepted step, ``t``, ``dt``, ``error_ratio`` (the scaled local error estimate
            EEst, accept iff ≤ 1) and ``stiffness`` (dominant-eigenvalue estimate ρ); shape
            ``(steps,)``, or ``(steps, batch)`` with NaN where a sample did not accept a step.
        regularization: the differentiable regulariser requested with ``regularize=`` (else None).
        event_t: with ``event_fn``, the event time, ``()`` or per sample ``(batch,)``, NaN where the
            solve reached ``t[-1]`` first; differentiable (implicit function theorem). Else None.
    """

    ts: torch.Tensor
    ys: torch.Tensor | tuple
    stats: dict[str, torch.Tensor]
    status: torch.Tensor
    heuristics: dict[str, torch.Tensor] = field(default_factory=dict)
    regularization: torch.Tensor | None = None
    event_t: torch.Tensor | None = None
    _dense: list = field(default_factory=list, repr=False)
    _coeffs: Coefficients | None = field(default=None, repr=False)
    _unflatten: object = field(default=None, repr=False)
    _time_sign: float = field(default=1.0, repr=False)

    @property
    def success(self) -> bool:
        return bool((self.status == int(Status.SUCCESS)).all())

    def evaluate(self, t) -> torch.Tensor:
        """Dense output: the state at time(s) ``t`` anywhere in the solved interval.

        ``t``: float, 0-d or 1-d tensor. Returns ``(*y0.shape)`` or ``(len(t), *y0.shape)``.
        Available for shared-step solves with ``dense=True`` (the default of ``solve_ode``).
        """
        if not self._dense:
            raise ValueError("no dense output stored: solve with dense=True and shared steps "
                             "(per_sample=False) to use Solution.evaluate")
        scalar = not torch.is_tensor(t) or t.dim() == 0
        times = [float(t)] if scalar else [float(v) for v in t.reshape(-1)]
        starts = [d[0] for d in self._dense]
        lo, hi = starts[0], self._dense[-1][0] + self._dense[-1][1]
        values = []
        for tq in times:
            s = self._time_sign * tq
            if not (lo - 1e-12 * max(1.0, abs(lo)) <= s <= hi + 1e-12 * max(1.0, abs(hi))):
                raise ValueError(f"`t`={tq} is outside the solved interval")
            i = step_index(starts, s)
            t0, dt, y0, step = self._dense[i]
            theta = min(max((s - t0) / dt, 0.0), 1.0)
            kind = "dense" if self._coeffs.dense is not None or self._coeffs.tableau.fsal else "linear"
            values.append(output_value(step, y0, dt, theta, kind, self._coeffs))
        out = torch.stack(values)
        if self._unflatten is not None:
            out = self._unflatten(out)
        return out[0] if scalar and not isinstance(out, tuple) else out
