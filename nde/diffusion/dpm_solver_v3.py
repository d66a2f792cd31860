"""DPM-Solver-v3 (Zheng, Lu, Chen, Zhu; NeurIPS 2023): multistep predictor-corrector with empirical model statistics.

With EMS l, s, b (see :mod:`.statistics`) and f = (sigma eps - l x)/alpha, the PF-ODE has the exact solution
(Eq. 9)  x_t = alpha_t A(s,t) [ x_s/alpha_s - int E_s(lam) B_s(lam) dlam - int E_s(lam) g(lam) dlam ],
A = e^{-int_s^t l}, E_s(lam) = e^{int_s^lam (l + s)}, B_s(lam) = int_s^lam e^{-int_s^r s} b dr, and
g(lam) = e^{-int_s^lam s} f(lam) - B_s(lam) (Eq. 8). The (n+1)-th order update (Eq. 12-14) expands g in a
Taylor series at lam_s; its derivatives come from previous points (Eq. 13, Vandermonde), or with
"pseudo-order" from divided differences over the most recent points only (Eq. 15-16).

In terms of cumulative integrals from the first grid point, L = int l, S = int s, I = int e^{L+S},
B = int e^{-S} b, C = int e^{L+S} B (App. C.1.2, Eq. 64), the zeroth-order part is
    x_t = alpha_t e^{L_s-L_t} x_s/alpha_s - alpha_t e^{-L_t-S_s} (I_t - I_s) g_s
          - alpha_t e^{-L_t} (C_t - C_s - B_s (I_t - I_s)),
and g_i = e^{S_s - S_i} f_i - e^{S_s} (B_i - B_s). Time steps are snapped to the EMS grid.

Quadrature: L and S use the trapezoid rule; the exponentially weighted integrals use the rule that is
exact for a piecewise-linear exponent and a piecewise-linear weight (an improvement on the reference
trapezoid: with degenerate statistics the first-order step is exactly DDIM).

The multistep loop follows Algorithm 2 / the reference code: each step evaluates the model at the new
point (NFE = steps), optionally corrects that point with the fresh output (no extra NFE) while keeping
N = sigma eps - l x unchanged, then predicts the next point.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .dpm_solver import _check_order
from .models import call_model, check_model_schedule, check_x_T
from .schedules import NoiseSchedule
from .statistics import ModelStatistics
from .timesteps import SKIP_TYPES, sampling_times


def cumulative_exp_integral(exponent: torch.Tensor, grid: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """F_j = int_{grid_0}^{grid_j} e^{a(x)} w(x) dx with a and w linear between grid points.

    Exact for piecewise-linear a and w, second-order accurate otherwise. Uses the global maximum of a
    (per element) as a shift so that no intermediate exponential overflows before the final scaling.

    Args:
        exponent, weight: (N+1, *state) values at the grid points; grid: (N+1,) increasing.
    Returns:
        (N+1, *state), with F_0 = 0.
    """
    shape = (-1,) + (1,) * (exponent.dim() - 1)
    width = (grid[1:] - grid[:-1]).reshape(shape)
    shift = exponent.max(dim=0).values
    e_left = torch.exp(exponent[:-1] - shift)
    d = exponent[1:] - exponent[:-1]
    # int_0^1 e^{d u} du = phi1(d), int_0^1 u e^{d u} du = phi2(d): series for small |d|.
    small = d.abs() < 1e-3
    d_safe = torch.where(small, torch.ones_like(d), d)
    phi1 = torch.where(small, 1 + d / 2 + d * d / 6, torch.expm1(d_safe) / d_safe)
    phi2 = torch.where(small, 0.5 + d / 3 + d * d / 8, (torch.exp(d_safe) * (d_safe - 1) + 1) / d_safe**2)
    pieces = width * e_left * (weight[:-1] * phi1 + (weight[1:] - weight[:-1]) * phi2)
    zero = torch.zeros_like(pieces[:1])
    return torch.cat([zero, torch.cumsum(pieces, dim=0)]) * torch.exp(shift)


def _cumulative_trapezoid(values: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    shape = (-1,) + (1,) * (values.dim() - 1)
    pieces = 0.5 * (values[1:] + values[:-1]) * (grid[1:] - grid[:-1]).reshape(shape)
    return torch.cat([torch.zeros_like(pieces[:1]), torch.cumsum(pieces, dim=0)])


def taylor_derivatives(deltas: list[float], values: list[torch.Tensor], pseudo: bool) -> list[torch.Tensor]:
    """Derivatives g^(1..n) at delta = 0 from g(delta_j) - g(0) at n points (Eq. 13; pseudo: Eq. 15-16).

    Args:
        deltas: lambda_j - lambda_s for the n other points, most recent first (nonzero, distinct).
        values: g_j - g_s for those points.
        pseudo: if True, the k-th derivative uses only the k most recent points (k! times a divided difference).
    """
    n = len(deltas)
    if pseudo:
        nodes = [0.0] + list(deltas)
        table = [torch.zeros_like(values[0])] + list(values)
        out = []
        for k in range(1, n + 1):
            table = [(table[j + 1] - table[j]) / (nodes[j + k] - nodes[j]) for j in range(len(table) - 1)]
            out.append(math.factorial(k) * table[0])
        return out
    vander = torch.tensor([[d**k / math.factorial(k) for k in range(1, n + 1)] for d in deltas], dtype=torch.float64)
    inverse = torch.linalg.inv(vander).tolist()
    return [sum(inverse[k][j] * values[j] for j in range(n)) for k in range(n)]


class DPMSolverV3:
    """DPM-Solver-v3 sampler for one set of model statistics and one step count.

    Args:
        statistics: EMS (or ``ModelStatistics.degenerate`` for DPM-Solver++ behaviour).
        schedule: must match the schedule the statistics were computed for (checked).
        steps: number of steps (= NFE); the times are snapped to the EMS grid, so steps <= N.
        skip_type: "logSNR" (low resolution), "time_uniform" (high resolution), "time_quadratic" or "edm".
        t_start, t_end: the sampling interval (default: the schedule's); it must be the statistics' interval
            (checked: a solver cannot sample outside its statistics, and snapping would move the ends).
    """

    def __init__(self, statistics: ModelStatistics, schedule: NoiseSchedule, steps: int,
                 skip_type: str = "logSNR", t_start: float | None = None, t_end: float | None = None):
        if not isinstance(statistics, ModelStatistics):
            raise TypeError(f"statistics must be a ModelStatistics (from estimate_statistics or "
                            f"ModelStatistics.degenerate), got {type(statistics).__name__}")
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"schedule must be an nde.diffusion.NoiseSchedule, got {type(schedule).__name__}")
        statistics.check_compatible(schedule, t_start=t_start, t_end=t_end)
        if skip_type not in SKIP_TYPES:
            raise ValueError(f"skip_type must be one of {SKIP_TYPES}, got {skip_type!r}")
        self.stats, self.schedule, self.steps = statistics, schedule, steps
        grid = statistics.lambdas
        self.L = _cumulative_trapezoid(statistics.l, grid)
        self.S = _cumulative_trapezoid(statistics.s, grid)
        ones = torch.ones_like(statistics.l)
        self.I = cumulative_exp_integral(self.L + self.S, grid, ones)
        self.B = cumulative_exp_integral(-self.S, grid, statistics.b)
        self.C = cumulative_exp_integral(self.L + self.S, grid, self.B)
        self._check_tables()
        self.indexes = self._snap(sampling_times(schedule, steps, skip_type, statistics.t_start, statistics.t_end))
        self.lambdas = grid[self.indexes].tolist()
        lam = grid[self.indexes]
        self.times = schedule.t_of_lambda(lam)
        self.alphas, self.sigmas = schedule.alpha(self.times).tolist(), schedule.sigma(self.times).tolist()
        self._coeff_cache: dict[tuple[int, int, int], torch.Tensor] = {}
        self._device_cache: dict[torch.device, dict[str, torch.Tensor]] = {}

    def _check_tables(self) -> None:
        """Raise ValueError if an integral table overflowed (e^{L+S} or e^{-S} beyond float64): the statistics
        are unusable, typically s estimated from too few data samples (its ratio estimator then reaches |s| ~ 1e3)."""
        bad = [name for name in "LSIBC" if not bool(torch.isfinite(getattr(self, name)).all())]
        if not bad:
            return
        source = f"estimated from K={self.stats.n_data} data samples" if self.stats.n_data else "given directly"
        raise ValueError(f"statistics are unusable: the DPM-Solver-v3 tables {', '.join(bad)} are not finite "
                         f"(max |s| = {float(self.stats.s.abs().max()):.3g}, max |b| = "
                         f"{float(self.stats.b.abs().max()):.3g}; the statistics were {source}); estimate them "
                         f"from more data samples")

    def _snap(self, times: torch.Tensor) -> list[int]:
        """Round each time to the nearest EMS grid index (in lambda); indexes must stay distinct."""
        grid = self.stats.lambdas
        lam = self.schedule.lambda_(times)
        idx = torch.round((lam - grid[0]) / (grid[-1] - grid[0]) * self.stats.n_grid).long().clamp(0, self.stats.n_grid)
        if bool((idx[1:] <= idx[:-1]).any()):
            raise ValueError(f"steps={self.steps} is too many for statistics on a grid of N={self.stats.n_grid}: "
                             "several steps snap to the same grid point; use fewer steps or a finer grid")
        return idx.tolist()

    def sample(self, model: Callable, x_T: torch.Tensor, order: int = 3, predictor_pseudo: bool = False,
               use_corrector: bool = True, corrector_pseudo: bool = False, lower_order_final: bool = True,
               half: bool = False) -> torch.Tensor:
        """Run the multistep predictor-corrector (Algorithm 2).

        Args:
            model: noise prediction ``model(x, t)``.
            x_T: (B, *state) noise at the first grid time (``statistics.t_start``).
            order: predictor order 1-3 (paper: 3 unconditional, 2 guided).
            predictor_pseudo / corrector_pseudo: pseudo-order derivatives (Eq. 15-16) in predictor / corrector.
                The corrector of order c uses c points (s, the new point and c-2 earlier ones);
                c = previous predictor order (+1 with ``corrector_pseudo``), applied only if c > 1.
            half: apply the corrector only to points with time t > 0.5 (the rule of the reference code,
                which produced the paper's numbers; the paper's text describes it as "t <= 0.5").
        Returns:
            (B, *state) sample at ``statistics.t_end``.
        """
        _check_order(order, (1, 2, 3))
        check_x_T(x_T)
        check_model_schedule(model, self.schedule)
        if tuple(x_T.shape[1:]) != self.stats.state_shape:
            raise ValueError(f"x_T has state shape {tuple(x_T.shape[1:])}, statistics have {self.stats.state_shape}")
        ems = self._on(x_T)
        history: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (step index, x, eps), oldest first
        x, prev_order = x_T, 0
        for step in range(self.steps):
            eps = call_model(model, x, self.times[step])
            history = (history + [(step, x, eps)])[-(order + 1):]
            corrector_order = prev_order + int(corrector_pseudo)
            if use_corrector and corrector_order > 1 and self.corrector_allowed(step, half):
                history[-1] = self._correct(history, corrector_order, corrector_pseudo, ems)
            prev_order = min(order, step + 1)
            if lower_order_final:
                prev_order = min(prev_order, self.steps - step)
            points = history[::-1][:prev_order]
            x = self._update(points, step + 1, predictor_pseudo, ems)
        return x

    def corrector_allowed(self, step: int, half: bool) -> bool:
        """Whether the point of sampling step ``step`` may be corrected (``half``: only where t > 0.5)."""
        return not half or float(self.times[step]) > 0.5

    def _correct(self, history, corrector_order, pseudo, ems):
        """Re-step from the previous point to the newest with its fresh output; keep N = sigma eps - l x."""
        step, x_old, eps_old = history[-1]
        points = [history[-2], history[-1]] + history[::-1][2:corrector_order]
        x_new = self._update(points, step, pseudo, ems)
        l_t = ems["l"][self.indexes[step]].to(x_old.dtype)
        eps_new = eps_old + l_t * (x_new - x_old) / self.sigmas[step]
        return (step, x_new, eps_new)

    def _update(self, points, target: int, pseudo: bool, ems: dict[str, torch.Tensor]) -> torch.Tensor:
        """One v3 step from points[0] (the base s) to sampling step ``target`` using the other points' outputs.

        Coefficients are formed in float64 and cast to the dtype of x only when they multiply it.
        """
        s_step, x_s, _ = points[0]
        i_s, i_t = self.indexes[s_step], self.indexes[target]
        L, S, I, B, C = (ems[k] for k in "LSIBC")
        dtype = x_s.dtype
        g = [self._g(step, x, eps, i_s, ems) for step, x, eps in points]
        alpha_t = self.alphas[target]
        decay = alpha_t * torch.exp(L[i_s] - L[i_t])
        x_t = ((decay / self.alphas[s_step]).to(dtype) * x_s
               - (alpha_t * torch.exp(-L[i_t] - S[i_s]) * (I[i_t] - I[i_s])).to(dtype) * g[0]
               - (alpha_t * torch.exp(-L[i_t]) * (C[i_t] - C[i_s] - B[i_s] * (I[i_t] - I[i_s]))).to(dtype))
        if len(points) > 1:
            deltas = [self.lambdas[step] - self.lambdas[s_step] for step, _, _ in points[1:]]
            derivs = taylor_derivatives(deltas, [gj - g[0] for gj in g[1:]], pseudo)
            for k, deriv in enumerate(derivs, start=1):
                coefficient = self._coefficient(i_s, i_t, k).to(device=x_s.device)
                x_t = x_t - (decay * coefficient).to(dtype) * deriv
        return x_t

    def _g(self, step: int, x: torch.Tensor, eps: torch.Tensor, i_s: int, ems) -> torch.Tensor:
        """g_i = e^{S_s - S_i} f_i - e^{S_s}(B_i - B_s), f_i = (sigma_i eps_i - l_i x_i)/alpha_i (Eq. 8)."""
        i, dtype = self.indexes[step], x.dtype
        f = (self.sigmas[step] * eps - ems["l"][i].to(dtype) * x) / self.alphas[step]
        S, B = ems["S"], ems["B"]
        return torch.exp(S[i_s] - S[i]).to(dtype) * f - (torch.exp(S[i_s]) * (B[i] - B[i_s])).to(dtype)

    def _coefficient(self, i_s: int, i_t: int, k: int) -> torch.Tensor:
        """int_{lam_s}^{lam_t} e^{L+S-L_s-S_s} (lam - lam_s)^k / k! dlam over the grid slice (float64, cached)."""
        key = (i_s, i_t, k)
        if key not in self._coeff_cache:
            grid = self.stats.lambdas[i_s:i_t + 1]
            exponent = (self.L + self.S)[i_s:i_t + 1] - (self.L + self.S)[i_s]
            shape = (-1,) + (1,) * (exponent.dim() - 1)
            weight = ((grid - grid[0]) ** k / math.factorial(k)).reshape(shape).expand_as(exponent)
            self._coeff_cache[key] = cumulative_exp_integral(exponent, grid, weight)[-1]
        return self._coeff_cache[key]

    def _on(self, like: torch.Tensor) -> dict[str, torch.Tensor]:
        """The statistics and their integrals, float64, on the device of ``like`` (cached per device)."""
        if like.device not in self._device_cache:
            tensors = {"l": self.stats.l, "L": self.L, "S": self.S, "I": self.I, "B": self.B, "C": self.C}
            self._device_cache = {like.device: {k: v.to(like.device) for k, v in tensors.items()}}
        return self._device_cache[like.device]


def dpm_solver_v3(model: Callable, x_T: torch.Tensor, schedule: NoiseSchedule, statistics: ModelStatistics,
                  steps: int, skip_type: str = "logSNR", t_start: float | None = None, t_end: float | None = None,
                  **options) -> torch.Tensor:
    """Functional form: ``DPMSolverV3(statistics, schedule, steps, skip_type, t_start, t_end).sample(model, x_T,
    **options)``."""
    return DPMSolverV3(statistics, schedule, steps, skip_type, t_start, t_end).sample(model, x_T, **options)
