"""Noise schedules of diffusion models: alpha_t, sigma_t, the half log-SNR lambda_t and its inverse.

A schedule defines the forward marginal q(x_t | x_0) = N(alpha_t x_0, sigma_t^2 I) and the half
log-SNR lambda_t = log alpha_t - log sigma_t (DPM-Solver, Lu et al. 2022, Eq. 3.3), which decreases
strictly in t. Every sampler in :mod:`nde.diffusion` works in lambda, so every schedule provides the
inverse map ``t_of_lambda``. All functions accept a tensor ``t`` of any shape and return a tensor of the
same shape and dtype; they are differentiable (forward- and reverse-mode).

Time runs from ``t_end`` (nearly clean data) to ``t_start`` (nearly pure noise); sampling integrates
from ``t_start`` down to ``t_end``.
"""
from __future__ import annotations

import math

import torch


class NoiseSchedule:
    """Base class. Subclasses implement :meth:`log_alpha`, :meth:`log_sigma` and :meth:`t_of_lambda`.

    Attributes:
        t_start: default start time of sampling (largest noise).
        t_end: default end time of sampling (smallest noise).
        min_time, min_time_inclusive, max_time: the time domain, where lambda is finite and decreasing:
            t > min_time (>= with ``min_time_inclusive``) and t <= max_time.
    """

    t_start: float
    t_end: float
    min_time: float = 0.0
    min_time_inclusive: bool = False
    max_time: float = math.inf

    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def log_sigma(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def t_of_lambda(self, lam: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`lambda_`: the time whose half log-SNR is ``lam``."""
        raise NotImplementedError

    def config(self) -> dict:
        """Name and parameters; recorded with saved model statistics to detect mismatches."""
        raise NotImplementedError

    def check_interval(self, t_start: float, t_end: float) -> tuple[float, float]:
        """``(t_start, t_end)`` as floats if ``t_end < t_start`` lie in the time domain with finite lambda.

        Raises ValueError naming the offending argument otherwise.
        """
        t_start, t_end = float(t_start), float(t_end)
        name = type(self).__name__
        if not t_end < t_start:
            raise ValueError(f"need t_end < t_start, got t_start={t_start}, t_end={t_end}")
        low_ok = t_end >= self.min_time if self.min_time_inclusive else t_end > self.min_time
        if not low_ok:
            relation = ">=" if self.min_time_inclusive else ">"
            raise ValueError(f"t_end must be {relation} {self.min_time} for {name}, got t_end={t_end}")
        if not t_start <= self.max_time:
            raise ValueError(f"t_start must be <= {self.max_time} for {name}, got t_start={t_start}")
        lam_start, lam_end = self.lambda_(torch.tensor([t_start, t_end], dtype=torch.float64)).tolist()
        for arg, time, lam in (("t_start", t_start, lam_start), ("t_end", t_end, lam_end)):
            if not math.isfinite(lam):
                raise ValueError(f"{arg}={time} is outside the domain of {name}: lambda({arg}) = {lam}")
        if not lam_start < lam_end:
            raise ValueError(f"lambda must decrease from t_end={t_end} to t_start={t_start} for {name}, "
                             f"got lambda(t_start)={lam_start}, lambda(t_end)={lam_end}")
        return t_start, t_end

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.log_alpha(t))

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.log_sigma(t))

    def lambda_(self, t: torch.Tensor) -> torch.Tensor:
        """Half log-SNR lambda_t = log alpha_t - log sigma_t."""
        return self.log_alpha(t) - self.log_sigma(t)

    def dlog_alpha_dt(self, t: torch.Tensor) -> torch.Tensor:
        """d log alpha / dt, the drift coefficient f(t) of the forward SDE dx = f x dt + g dW."""
        return _derivative(self.log_alpha, t)

    def dlambda_dt(self, t: torch.Tensor) -> torch.Tensor:
        return _derivative(self.lambda_, t)

    def diffusion_squared(self, t: torch.Tensor) -> torch.Tensor:
        """g(t)^2 = d sigma^2/dt - 2 f sigma^2 = -2 sigma^2 dlambda/dt (Song et al. 2021; Lu et al. 2022 Eq. 2.2)."""
        return -2.0 * self.sigma(t) ** 2 * self.dlambda_dt(t)

    def dlog_alpha_dlambda(self, lam: torch.Tensor) -> torch.Tensor:
        """d log alpha / d lambda, the linear coefficient of the lambda-form PF-ODE (DPM-Solver-v3 Eq. 4)."""
        return _derivative(lambda v: self.log_alpha(self.t_of_lambda(v)), lam)

    def _tensor(self, value: float | torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            return value
        if like is not None:
            return torch.tensor(value, dtype=like.dtype, device=like.device)
        return torch.tensor(value, dtype=torch.float64)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NoiseSchedule) and self.config() == other.config()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.config().items())))

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "name")
        return f"{self.config()['name']}({params})"


def _derivative(fn, t: torch.Tensor) -> torch.Tensor:
    """Elementwise derivative of a scalar function applied elementwise, by forward-mode AD."""
    _, tangent = torch.func.jvp(fn, (t,), (torch.ones_like(t),))
    return tangent


def _log_alpha_from_lambda(lam: torch.Tensor) -> torch.Tensor:
    """For VP schedules alpha^2 + sigma^2 = 1, so log alpha = -1/2 log(1 + e^{-2 lambda})."""
    return -0.5 * torch.nn.functional.softplus(-2.0 * lam)


class VPLinear(NoiseSchedule):
    """Variance-preserving schedule with linear beta(t) = beta_0 + t (beta_1 - beta_0) (DDPM / ScoreSDE).

    log alpha_t = -t^2 (beta_1 - beta_0)/4 - t beta_0 / 2, sigma_t = sqrt(1 - alpha_t^2).
    Defaults beta_0 = 0.1, beta_1 = 20, t in [1e-3, 1] (DPM-Solver-v3 README).
    """

    def __init__(self, beta_0: float = 0.1, beta_1: float = 20.0, t_start: float = 1.0, t_end: float = 1e-3):
        if not 0 <= beta_0 < beta_1 < math.inf:
            raise ValueError(f"VPLinear needs 0 <= beta_0 < beta_1 < inf, got beta_0={beta_0}, beta_1={beta_1}")
        self.beta_0, self.beta_1 = float(beta_0), float(beta_1)
        self.t_start, self.t_end = self.check_interval(t_start, t_end)

    def config(self) -> dict:
        return {"name": "VPLinear", "beta_0": self.beta_0, "beta_1": self.beta_1}

    def log_alpha(self, t):
        return -0.25 * t**2 * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0

    def log_sigma(self, t):
        return 0.5 * torch.log(-torch.expm1(2.0 * self.log_alpha(t)))

    def t_of_lambda(self, lam):
        # Solve a t^2 + b t = c with a = (beta_1-beta_0)/4, b = beta_0/2, c = -log alpha(lambda) > 0,
        # in the cancellation-free form t = 2c / (b + sqrt(b^2 + 4ac)).
        c = -_log_alpha_from_lambda(lam)
        b = 0.5 * self.beta_0
        return 2.0 * c / (b + torch.sqrt(b * b + (self.beta_1 - self.beta_0) * c))

    def dlog_alpha_dlambda(self, lam):
        return torch.sigmoid(-2.0 * lam)  # sigma^2 for VP (DPM-Solver-v3 Sec. 1.1)

class VPCosine(NoiseSchedule):
    """Variance-preserving cosine schedule (Nichol & Dhariwal 2021): alpha_t = cos((t+s)/(1+s) pi/2)/cos(s/(1+s) pi/2).

    The default t_start = 0.9946 avoids the singularity at t = 1 (as in DPM-Solver).
    """

    max_time = 1.0

    def __init__(self, s: float = 0.008, t_start: float = 0.9946, t_end: float = 1e-3):
        if not 0 < s < math.inf:
            raise ValueError(f"VPCosine needs 0 < s < inf, got s={s}")
        self.s = float(s)
        self._log_alpha_0 = math.log(math.cos(self.s / (1.0 + self.s) * math.pi / 2.0))
        self.t_start, self.t_end = self.check_interval(t_start, t_end)

    def config(self) -> dict:
        return {"name": "VPCosine", "s": self.s}

    def log_alpha(self, t):
        # cos((t+s)/(1+s) pi/2) = sin((1-t)/(1+s) pi/2): 1 - t is exact near t = 1, so alpha stays accurate there
        # and alpha(1) = 0 (lambda = -inf) instead of the rounding residue cos(pi/2) = 6e-17 (lambda = -37).
        return torch.log(torch.sin((1.0 - t) * (math.pi / (2.0 * (1.0 + self.s))))) - self._log_alpha_0

    def log_sigma(self, t):
        return 0.5 * torch.log(-torch.expm1(2.0 * self.log_alpha(t)))

    def t_of_lambda(self, lam):
        # cos(theta) = alpha cos(theta_s) with theta = (t+s)/(1+s) pi/2. Near t = 1 (cos theta < 1/2) take
        # 1 - t = (1+s) 2/pi arcsin(cos theta): arccos there rounds t to >= 1 (alpha = 0) for finite lambda.
        cos_theta = torch.exp(_log_alpha_from_lambda(lam) + self._log_alpha_0)
        scale = 2.0 * (1.0 + self.s) / math.pi
        return torch.where(cos_theta < 0.5, 1.0 - scale * torch.arcsin(cos_theta),
                           scale * torch.arccos(cos_theta) - self.s)

    def dlog_alpha_dlambda(self, lam):
        return torch.sigmoid(-2.0 * lam)  # sigma^2 for VP (DPM-Solver-v3 Sec. 1.1)

class VE(NoiseSchedule):
    """Variance-exploding schedule (Song et al. 2021): alpha_t = 1, sigma_t = sigma_min (sigma_max/sigma_min)^t."""

    min_time_inclusive = True

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, t_start: float = 1.0, t_end: float = 1e-5):
        if not 0 < sigma_min < sigma_max < math.inf:
            raise ValueError(f"VE needs 0 < sigma_min < sigma_max < inf, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)
        self.t_start, self.t_end = self.check_interval(t_start, t_end)

    def config(self) -> dict:
        return {"name": "VE", "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    def log_alpha(self, t):
        return torch.zeros_like(t)

    def log_sigma(self, t):
        return math.log(self.sigma_min) + t * self._log_ratio

    def t_of_lambda(self, lam):
        return (-lam - math.log(self.sigma_min)) / self._log_ratio

    def dlog_alpha_dlambda(self, lam):
        return torch.zeros_like(lam)

class EDM(NoiseSchedule):
    """EDM schedule (Karras et al. 2022): alpha_t = 1, sigma_t = t; t runs from sigma_max = 80 to sigma_min = 0.002."""

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0):
        if not 0 < sigma_min < sigma_max < math.inf:
            raise ValueError(f"EDM needs 0 < sigma_min < sigma_max < inf, got {sigma_min}, {sigma_max}")
        self.t_start, self.t_end = float(sigma_max), float(sigma_min)

    def config(self) -> dict:
        return {"name": "EDM"}

    def log_alpha(self, t):
        return torch.zeros_like(t)

    def log_sigma(self, t):
        return torch.log(t)

    def t_of_lambda(self, lam):
        return torch.exp(-lam)

    def dlog_alpha_dlambda(self, lam):
        return torch.zeros_like(lam)


class VPDiscrete(NoiseSchedule):
    """Discrete-time VP schedule of DDPM-style models (n = 0..N-1), made continuous as in DPM-Solver.

    Step n sits at t_n = (n+1)/N with log alpha_{t_n} = log(alphas_cumprod[n]) / 2; log alpha is linear
    between (and beyond) these points, so t_of_lambda is exact. Default range t in [1/N, 1].

    Args:
        betas: (N,) DDPM betas, or
        alphas_cumprod: (N,) cumulative products of 1 - beta (give exactly one of the two).
    """

    max_time = 1.0

    def __init__(self, betas: torch.Tensor | None = None, alphas_cumprod: torch.Tensor | None = None):
        if (betas is None) == (alphas_cumprod is None):
            raise ValueError("give exactly one of betas and alphas_cumprod")
        if betas is not None:
            betas = torch.as_tensor(betas, dtype=torch.float64)
            if betas.dim() != 1 or not bool(((betas > 0) & (betas < 1)).all()):
                raise ValueError("betas must be a 1-D tensor with entries in (0, 1) (no NaN)")
            log_alpha = 0.5 * torch.log1p(-betas).cumsum(0)
        else:
            cumprod = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
            inside = bool(((cumprod > 0) & (cumprod < 1)).all())
            if cumprod.dim() != 1 or not inside or not bool((cumprod[1:] < cumprod[:-1]).all()):
                raise ValueError("alphas_cumprod must be a 1-D tensor decreasing strictly inside (0, 1) (no NaN)")
            log_alpha = 0.5 * torch.log(cumprod)
        n = log_alpha.shape[0]
        if n < 2:
            raise ValueError("need at least 2 discrete steps")
        self.t_grid = torch.arange(1, n + 1, dtype=torch.float64) / n
        self.log_alpha_grid = log_alpha
        self.t_start, self.t_end = 1.0, 1.0 / n

    def config(self) -> dict:
        return {"name": "VPDiscrete", "n": int(self.t_grid.shape[0]),
                "log_alpha_sum": round(float(self.log_alpha_grid.sum()), 12),
                "log_alpha_last": round(float(self.log_alpha_grid[-1]), 12)}

    def log_alpha(self, t):
        return _interp(t, self.t_grid, self.log_alpha_grid)

    def log_sigma(self, t):
        return 0.5 * torch.log(-torch.expm1(2.0 * self.log_alpha(t)))

    def t_of_lambda(self, lam):
        return _interp(_log_alpha_from_lambda(lam), self.log_alpha_grid.flip(0), self.t_grid.flip(0))

    def dlog_alpha_dlambda(self, lam):
        return torch.sigmoid(-2.0 * lam)


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation through increasing ``xp``, extended linearly beyond both ends.

    Differentiable in ``x`` (reverse and forward mode); ``x`` of any shape.
    """
    xp, fp = xp.to(device=x.device, dtype=x.dtype), fp.to(device=x.device, dtype=x.dtype)
    idx = torch.searchsorted(xp, x.detach().contiguous()).clamp(1, xp.shape[0] - 1)
    x0, x1, f0, f1 = xp[idx - 1], xp[idx], fp[idx - 1], fp[idx]
    return f0 + (x - x0) * (f1 - f0) / (x1 - x0)
