"""Empirical model statistics (EMS) l, s, b of DPM-Solver-v3 (Zheng et al. 2023, Sec. 3.1-3.2, App. C.1.1).

On a uniform grid of N+1 half log-SNR values lambda_0 < ... < lambda_N (from t_start to t_end), with data
x_0 from K samples and x_lambda = alpha x_0 + sigma z (the *data* marginal, as in the paper):

- l*_lambda = E[diag(sigma grad_x eps(x, lambda))]                                  (Eq. 5)
  estimated by Hutchinson's diagonal estimator with a forward-mode JVP: E_v[(sigma J v) * v],
  v Rademacher (Eq. 58, Bekas et al. 2007);
- f = (sigma eps - l x)/alpha = e^{-lambda} eps - l x/alpha and its total derivative along the ODE
  f^(1) = e^{-lambda}[(l - 1) eps + eps^(1)] - (dl/dlambda) x/alpha                   (Eq. 62)
  with eps^(1) = d eps(x_lambda, lambda)/d lambda computed as ONE JVP with tangent (dx/dlambda, 1),
  dx/dlambda = (d log alpha/d lambda) x - sigma eps                                     (Eq. 63)
  and dl/dlambda by second-order finite differences on the grid;
- (s*, b*) = argmin E||f^(1) - s f - b||^2, elementwise:
  s* = Cov(f, f^(1)) / Var(f),  b* = E f^(1) - s* E f                                 (Eq. 60-61)
  with the division guarded: where Var(f) is negligible (e.g. a single Gaussian, where f is constant)
  s* = 0 and b* = E f^(1).

All statistics have the data shape per grid point: l, s, b are (N+1, *state) float64 tensors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .models import check_model_schedule, check_output
from .schedules import NoiseSchedule
from .timesteps import time_interval

FORMAT_VERSION = 1


@dataclass
class ModelStatistics:
    """EMS on a uniform lambda grid, with the schedule and grid they were computed for.

    Attributes:
        lambdas: (N+1,) increasing half log-SNR grid from lambda(t_start) to lambda(t_end).
        l, s, b: (N+1, *state) statistics.
        (All four are stored as float64 and must be finite: a non-finite entry is a ValueError.)
        schedule: ``schedule.config()`` of the schedule used.
        t_start, t_end: time range of the grid.
        n_data: number of data samples K used (0 for the degenerate/analytic cases).
    """

    lambdas: torch.Tensor
    l: torch.Tensor
    s: torch.Tensor
    b: torch.Tensor
    schedule: dict
    t_start: float
    t_end: float
    n_data: int = 0
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in ("lambdas", "l", "s", "b"):
            setattr(self, name, _finite_float64(getattr(self, name), name))
        n = self.lambdas.shape[0]
        for name in ("l", "s", "b"):
            value = getattr(self, name)
            if value.shape[0] != n or value.shape[1:] != self.l.shape[1:]:
                raise ValueError(f"statistic {name} has shape {tuple(value.shape)}; expected ({n}, *state) "
                                 f"matching l {tuple(self.l.shape)}")
        if n < 2 or not bool((self.lambdas[1:] > self.lambdas[:-1]).all()):
            raise ValueError("lambdas must be an increasing grid with at least 2 points")

    @property
    def n_grid(self) -> int:
        """N, the number of grid intervals."""
        return self.lambdas.shape[0] - 1

    @property
    def state_shape(self) -> tuple[int, ...]:
        return tuple(self.l.shape[1:])

    @classmethod
    def degenerate(cls, schedule: NoiseSchedule, state_shape: tuple[int, ...], n_grid: int,
                   t_start: float | None = None, t_end: float | None = None) -> "ModelStatistics":
        """l = 1, s = 0, b = 0: v3 reduces to DPM-Solver++ (data prediction) (paper App. A.2)."""
        lambdas = lambda_grid(schedule, n_grid, t_start, t_end)
        shape = (n_grid + 1, *state_shape)
        ones = torch.ones(shape, dtype=torch.float64)
        return cls(lambdas, ones, torch.zeros(shape, dtype=torch.float64), torch.zeros(shape, dtype=torch.float64),
                   schedule.config(), _default(t_start, schedule.t_start), _default(t_end, schedule.t_end))

    def check_compatible(self, schedule: NoiseSchedule, state_shape: tuple[int, ...] | None = None, *,
                         t_start: float | None = None, t_end: float | None = None) -> None:
        """Raise ValueError if these statistics were computed for another schedule, time interval or state shape.

        The interval is ``t_start``/``t_end`` where given, else the schedule's (as in every sampler).
        """
        if schedule.config() != self.schedule:
            raise ValueError(f"model statistics were computed for schedule {self.schedule}, "
                             f"but the sampler uses {schedule.config()}; recompute them")
        interval = dict(zip(("t_start", "t_end"), time_interval(schedule, t_start, t_end)))
        for name, given in (("t_start", t_start), ("t_end", t_end)):
            stored, wanted = getattr(self, name), interval[name]
            if not math.isclose(stored, wanted, rel_tol=1e-9):
                source = "was passed" if given is not None else "is the schedule's"
                raise ValueError(f"model statistics were computed for {name}={stored}, but {name}={wanted} {source}; "
                                 f"sample with {name}={stored} (argument or schedule) or recompute the statistics")
        expected = schedule.lambda_(torch.tensor([self.t_start, self.t_end], dtype=torch.float64))
        ends = torch.stack([self.lambdas[0], self.lambdas[-1]])
        if not torch.allclose(expected, ends, rtol=1e-9, atol=1e-9):
            raise ValueError(f"stored lambda grid ends {ends.tolist()} do not match the schedule's "
                             f"lambda(t_start), lambda(t_end) = {expected.tolist()}; the file is stale")
        if state_shape is not None and tuple(state_shape) != self.state_shape:
            raise ValueError(f"model statistics have state shape {self.state_shape}, samples have {tuple(state_shape)}")

    def save(self, path: str | Path) -> None:
        torch.save({"format_version": FORMAT_VERSION, "lambdas": self.lambdas, "l": self.l, "s": self.s,
                    "b": self.b, "schedule": self.schedule, "t_start": self.t_start, "t_end": self.t_end,
                    "n_data": self.n_data, "info": self.info}, Path(path))

    @classmethod
    def load(cls, path: str | Path, schedule: NoiseSchedule | None = None, n_grid: int | None = None,
             t_start: float | None = None, t_end: float | None = None) -> "ModelStatistics":
        """Load statistics; with ``schedule``/``n_grid``/``t_start``/``t_end`` given, a mismatch is a ValueError.

        With ``schedule``, the time interval is compared too: ``t_start``/``t_end`` where given, else the schedule's.
        """
        data = torch.load(Path(path), map_location="cpu", weights_only=True)
        if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path} is not a model-statistics file of format version {FORMAT_VERSION}")
        stats = cls(data["lambdas"], data["l"], data["s"], data["b"], data["schedule"], data["t_start"],
                    data["t_end"], data["n_data"], data["info"])
        if n_grid is not None and stats.n_grid != n_grid:
            raise ValueError(f"{path} has a grid of N={stats.n_grid} intervals, expected N={n_grid}")
        for name, want in (("t_start", t_start), ("t_end", t_end)):
            if want is not None and not math.isclose(getattr(stats, name), want, rel_tol=1e-9):
                raise ValueError(f"{path} was computed for {name}={getattr(stats, name)}, expected {want}")
        if schedule is not None:
            stats.check_compatible(schedule, t_start=t_start, t_end=t_end)
        return stats


def lambda_grid(schedule: NoiseSchedule, n_grid: int, t_start: float | None = None,
                t_end: float | None = None) -> torch.Tensor:
    """(n_grid + 1,) float64 uniform grid in lambda from lambda(t_start) to lambda(t_end)."""
    if isinstance(n_grid, bool) or not isinstance(n_grid, int) or n_grid < 1:
        raise ValueError(f"n_grid must be a positive int, got {n_grid!r}")
    ends = torch.tensor(time_interval(schedule, t_start, t_end), dtype=torch.float64)
    lam_start, lam_end = schedule.lambda_(ends).tolist()
    return torch.linspace(lam_start, lam_end, n_grid + 1, dtype=torch.float64)


def estimate_statistics(model: Callable, data: torch.Tensor, schedule: NoiseSchedule, n_grid: int = 200,
                        t_start: float | None = None, t_end: float | None = None, batch_size: int = 1024,
                        n_probes: int = 1, generator: torch.Generator | None = None, progress: bool = True,
                        variance_floor: float = 1e-12) -> ModelStatistics:
    """Estimate l, s, b of ``model`` (noise prediction ``model(x, t)``) on a uniform lambda grid.

    Args:
        data: (K, *state) data samples; the model is queried at their forward-noised versions.
        n_grid: N, number of grid intervals (N+1 points).
        batch_size: samples per model call (memory knob; the noise and probes are drawn for all K samples at
            once, so results do not depend on it beyond rounding).
        n_probes: Rademacher probes per sample for Hutchinson's estimator of l.
        progress: show a tqdm progress bar if tqdm is installed.
        variance_floor: where Var(f) <= variance_floor * (1 + E[f]^2) the slope s is set to 0.
    Returns:
        :class:`ModelStatistics` with float64 tensors on the CPU. Costs 2 (N+1) K (1 + n_probes) model
        evaluations (forward-mode JVPs count as about two).
    """
    if not isinstance(data, torch.Tensor) or data.dim() < 2 or not data.is_floating_point():
        raise TypeError(f"data must be a floating-point tensor of shape (K, *state) with K >= 2, got "
                        f"{_describe(data)}")
    if not bool(torch.isfinite(data).all()):
        raise ValueError(f"data has {int((~torch.isfinite(data)).sum())} non-finite entries (NaN or inf)")
    if data.shape[0] < 2 or batch_size < 1 or n_probes < 1:
        raise ValueError(f"need K >= 2 samples, batch_size >= 1, n_probes >= 1; got K={data.shape[0]}, "
                         f"batch_size={batch_size}, n_probes={n_probes}")
    with torch.no_grad():  # forward-mode JVPs only: no reverse-mode graph through the model's weights
        return _estimate(model, data, schedule, n_grid, t_start, t_end, batch_size, n_probes, generator,
                         progress, variance_floor)


def _estimate(model, data, schedule, n_grid, t_start, t_end, batch_size, n_probes, generator, progress,
              variance_floor) -> ModelStatistics:
    lambdas = lambda_grid(schedule, n_grid, t_start, t_end)
    check_model_schedule(model, schedule)
    lam = lambdas.to(device=data.device, dtype=data.dtype)
    bar = _progress(2 * (n_grid + 1), progress)
    l = torch.stack([_estimate_l(model, data, schedule, lam[j], batch_size, n_probes, generator, bar)
                     for j in range(n_grid + 1)]).to(torch.float64)
    dl = torch.gradient(l, spacing=(lambdas.to(l.device, torch.float64),), dim=0, edge_order=2)[0]
    s, b = [], []
    for j in range(n_grid + 1):
        s_j, b_j = _estimate_sb(model, data, schedule, lam[j], l[j], dl[j], batch_size, generator, variance_floor, bar)
        s.append(s_j)
        b.append(b_j)
    if bar is not None:
        bar.close()
    return ModelStatistics(lambdas, l.cpu(), torch.stack(s).cpu(), torch.stack(b).cpu(), schedule.config(),
                           _default(t_start, schedule.t_start), _default(t_end, schedule.t_end), data.shape[0],
                           {"n_probes": n_probes})


def _noised(data: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, generator) -> torch.Tensor:
    noise = torch.randn(data.shape, generator=generator, dtype=data.dtype).to(data.device)
    return alpha * data + sigma * noise


def _estimate_l(model, data, schedule, lam, batch_size, n_probes, generator, bar) -> torch.Tensor:
    """l*(lambda) = E[(sigma J v) * v] over data and Rademacher v (Eq. 5, 58)."""
    t = schedule.t_of_lambda(lam)
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    total = torch.zeros(data.shape[1:], dtype=torch.float64, device=data.device)
    noised = _noised(data, alpha, sigma, generator)  # drawn for all K at once: the draws do not depend on batch_size
    for _ in range(n_probes):
        probes = torch.randint(0, 2, data.shape, generator=generator).to(data) * 2 - 1
        for x, v in zip(noised.split(batch_size), probes.split(batch_size)):
            t_batch = t.expand(x.shape[0])
            _, jv = torch.func.jvp(lambda y: model(y, t_batch), (x,), (v,))
            check_output(jv, x)
            total += (sigma * jv * v).sum(0).to(torch.float64)
    if bar is not None:
        bar.update()
    return total / (data.shape[0] * n_probes)


def _estimate_sb(model, data, schedule, lam, l, dl, batch_size, generator, variance_floor, bar):
    """(s*, b*)(lambda) from moments of f and f^(1) over the data (Eq. 60-63)."""
    t = schedule.t_of_lambda(lam)
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    dlog_alpha = schedule.dlog_alpha_dlambda(lam)
    l, dl = l.to(data), dl.to(data)
    moments = _Moments()
    for x in _noised(data, alpha, sigma, generator).split(batch_size):
        lam_batch = lam.expand(x.shape[0]).clone()
        eps = check_output(model(x, t.expand(x.shape[0])), x)
        dx = dlog_alpha * x - sigma * eps
        _, deps = torch.func.jvp(lambda y, u: model(y, schedule.t_of_lambda(u)), (x, lam_batch),
                                 (dx, torch.ones_like(lam_batch)))
        scale = torch.exp(-lam)
        f = scale * eps - l * x / alpha
        f1 = scale * ((l - 1) * eps + deps) - dl * x / alpha
        moments.add(f.to(torch.float64), f1.to(torch.float64))
    if bar is not None:
        bar.update()
    return moments.slope_intercept(variance_floor)


class _Moments:
    """Streaming first and second moments of (f, g) per element, shifted by the first batch mean for stability."""

    def __init__(self):
        self.n = 0

    def add(self, f: torch.Tensor, g: torch.Tensor) -> None:
        if self.n == 0:
            self.shift_f, self.shift_g = f.mean(0), g.mean(0)
            self.sf = torch.zeros_like(self.shift_f)
            self.sg, self.sff, self.sfg = (torch.zeros_like(self.sf) for _ in range(3))
        df, dg = f - self.shift_f, g - self.shift_g
        self.n += f.shape[0]
        self.sf += df.sum(0)
        self.sg += dg.sum(0)
        self.sff += (df * df).sum(0)
        self.sfg += (df * dg).sum(0)

    def slope_intercept(self, variance_floor: float) -> tuple[torch.Tensor, torch.Tensor]:
        mean_df, mean_dg = self.sf / self.n, self.sg / self.n
        var = self.sff / self.n - mean_df**2
        cov = self.sfg / self.n - mean_df * mean_dg
        mean_f, mean_g = self.shift_f + mean_df, self.shift_g + mean_dg
        ok = var > variance_floor * (1.0 + mean_f**2)
        slope = torch.where(ok, cov / torch.where(ok, var, torch.ones_like(var)), torch.zeros_like(var))
        return slope, mean_g - slope * mean_f


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is an optional dependency
        return None
    return tqdm(total=total, desc="model statistics", unit="grid point")


def _finite_float64(value: torch.Tensor, name: str) -> torch.Tensor:
    """A floating-point tensor as float64, checked to be finite."""
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise TypeError(f"statistic {name} must be a floating-point tensor, got {_describe(value)}")
    bad = int((~torch.isfinite(value)).sum())
    if bad:
        raise ValueError(f"statistic {name} has {bad} non-finite entries (NaN or inf)")
    return value.to(torch.float64)


def _describe(value) -> str:
    return f"{value.dtype} tensor of shape {tuple(value.shape)}" if isinstance(value, torch.Tensor) \
        else type(value).__name__


def _default(value: float | None, fallback: float) -> float:
    return float(fallback if value is None else value)
