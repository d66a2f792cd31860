"""Sample-quality metrics for generative transport.

All functions take samples as ``(n, d)`` tensors and return Python floats or tensors
on the samples' device. They are O(n^2) where noted; n <= 5000 is cheap on a CPU.
"""
from __future__ import annotations

from typing import Callable

import torch


def _check_samples(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must be a (n, d) tensor with n >= 2, got {getattr(x, 'shape', type(x))}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")


def _check_finite(name: str, x: torch.Tensor) -> None:
    """Counting metrics would put a NaN row into some bin (argmin of NaN distances is 0): refuse them."""
    bad = int((~torch.isfinite(x)).any(dim=-1).sum()) if x.dim() > 1 else int((~torch.isfinite(x)).sum())
    if bad:
        raise ValueError(f"{name} contains {bad} non-finite row(s)")


def _check_modes(samples: torch.Tensor, means: torch.Tensor, weights: torch.Tensor | None = None) -> None:
    """``means`` (K, d) finite, matching the samples' d; ``weights`` (K,) non-negative, summing to 1."""
    _check_samples("samples", samples)
    _check_finite("samples", samples)
    if not isinstance(means, torch.Tensor) or means.dim() != 2 or means.shape[1] != samples.shape[1] \
            or means.shape[0] < 1:
        raise ValueError(f"means must be a (K, d={samples.shape[1]}) tensor, got {getattr(means, 'shape', type(means))}")
    _check_finite("means", means)
    if weights is not None:
        if not isinstance(weights, torch.Tensor) or weights.shape != means.shape[:1]:
            raise ValueError(f"weights must be a ({means.shape[0]},) tensor, got {getattr(weights, 'shape', type(weights))}")
        if bool((weights < 0).any()) or abs(float(weights.sum()) - 1) > 1e-4:
            raise ValueError(f"weights must be non-negative and sum to 1, got sum {float(weights.sum()):.6g}")


def _mean_distance(x: torch.Tensor, y: torch.Tensor, exclude_diagonal: bool, block: int) -> torch.Tensor:
    """Mean of |x_i - y_j| over all pairs (over i != j when ``exclude_diagonal``), in row blocks of ``block``."""
    total = x.new_zeros((), dtype=torch.float64)
    for start in range(0, x.shape[0], block):
        total = total + torch.cdist(x[start:start + block], y).double().sum()
    pairs = x.shape[0] * (y.shape[0] - 1) if exclude_diagonal else x.shape[0] * y.shape[0]
    return total / pairs


def energy_mmd(x: torch.Tensor, y: torch.Tensor, block: int = 4096) -> float:
    """Energy distance ``2 E|X-Y| - E|X-X'| - E|Y-Y'|`` (an MMD with the distance kernel).

    Székely & Rizzo (2004); zero iff the laws agree. The self terms exclude the
    diagonal (unbiased U-statistics). Cost O(n m) time, O(block * max(n, m)) memory.
    """
    _check_samples("x", x)
    _check_samples("y", y)
    if not isinstance(block, int) or block < 1:
        raise ValueError(f"block must be a positive int, got {block!r}")
    xy = _mean_distance(x, y, False, block)
    xx = _mean_distance(x, x, True, block)
    yy = _mean_distance(y, y, True, block)
    return float(2 * xy - xx - yy)


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_projections: int = 256,
                       generator: torch.Generator | None = None) -> float:
    """Sliced 2-Wasserstein distance: ``sqrt(E_theta W_2^2(theta.X, theta.Y))`` over random unit directions.

    The 1-D W_2 is computed by sorting; ``x`` and ``y`` must have the same number of samples.
    """
    _check_samples("x", x)
    _check_samples("y", y)
    if x.shape != y.shape or x.dtype != y.dtype:
        raise ValueError(f"x and y must have equal shapes and dtypes, got {tuple(x.shape)} {x.dtype} and "
                         f"{tuple(y.shape)} {y.dtype}")
    if isinstance(n_projections, bool) or not isinstance(n_projections, int) or n_projections < 1:
        raise ValueError(f"n_projections must be a positive int, got {n_projections!r}")
    theta = torch.randn(x.shape[1], n_projections, generator=generator, dtype=x.dtype).to(x.device)
    theta = theta / theta.norm(dim=0, keepdim=True)
    px = torch.sort(x @ theta, dim=0).values
    py = torch.sort(y @ theta, dim=0).values
    return float((px - py).square().mean().sqrt())


def mode_masses(samples: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """``(K,)`` fraction of samples whose nearest mode mean is ``means[k]``."""
    _check_modes(samples, means)
    nearest = torch.cdist(samples, means.to(samples)).argmin(dim=1)
    return torch.bincount(nearest, minlength=means.shape[0]).to(samples.dtype) / samples.shape[0]


def mode_mass_tv(samples: torch.Tensor, means: torch.Tensor, weights: torch.Tensor) -> float:
    """Total variation ``0.5 * sum_k |mass_k - weight_k|`` between per-mode masses and the true weights."""
    _check_modes(samples, means, weights)
    return float(0.5 * (mode_masses(samples, means) - weights.to(samples)).abs().sum())


def dropped_modes(samples: torch.Tensor, means: torch.Tensor, weights: torch.Tensor,
                  threshold: float = 0.2) -> int:
    """Number of modes whose sample mass is below ``threshold`` times their true weight."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
    _check_modes(samples, means, weights)
    return int((mode_masses(samples, means) < threshold * weights.to(samples)).sum())


def near_mode_fraction(samples: torch.Tensor, means: torch.Tensor, std: float, n_std: float = 3.0) -> float:
    """Fraction of samples within ``n_std * std`` of some mode mean (a precision measure)."""
    _check_modes(samples, means)
    if not (0 < std < float("inf")) or not (0 < n_std < float("inf")):
        raise ValueError(f"std and n_std must be finite and positive, got std={std}, n_std={n_std}")
    return float((torch.cdist(samples, means.to(samples)).min(dim=1).values < n_std * std).float().mean())


def negative_log_likelihood(samples: torch.Tensor, log_prob: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """``E_model[-log p(x)]`` under a known target log-density (a cross-entropy; compare with the entropy)."""
    _check_samples("samples", samples)
    return float(-_log_prob_per_sample(log_prob, samples).mean())


def _log_prob_per_sample(log_prob: Callable[[torch.Tensor], torch.Tensor], samples: torch.Tensor) -> torch.Tensor:
    """``log_prob(samples)``, checked to be ``(n,)`` (a per-dimension ``(n, d)`` output, a missing sum over
    the last dimension, would otherwise give a silently wrong average)."""
    values = log_prob(samples)
    if not isinstance(values, torch.Tensor) or values.shape != samples.shape[:1]:
        raise ValueError(f"log_prob(samples) must return shape ({samples.shape[0]},), "
                         f"got {tuple(getattr(values, 'shape', ())) or type(values).__name__}")
    return values


def support_fraction(samples: torch.Tensor, log_prob: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """Fraction of samples where a known target density is positive (``log_prob > -inf``): a precision
    measure for targets with bounded support, with binomial noise sqrt(p (1 - p) / n) only."""
    _check_samples("samples", samples)
    return float(torch.isfinite(_log_prob_per_sample(log_prob, samples)).float().mean())


def grid_mass_tv(samples: torch.Tensor, cell_masses: torch.Tensor, low: float, high: float) -> float:
    """Total variation between the samples' histogram and known cell masses on a regular grid.

    ``cell_masses`` has shape ``(bins,) * d`` for the cube ``[low, high)^d`` split into ``bins^d``
    equal cells; ``1 - cell_masses.sum()`` is the true mass outside the cube, compared with the
    fraction of samples outside it. Returns 0.5 * (sum over cells and the outside of |mass - true|).
    """
    _check_samples("samples", samples)
    _check_finite("samples", samples)
    d = samples.shape[1]
    if not isinstance(cell_masses, torch.Tensor) or cell_masses.dim() != d or cell_masses.numel() == 0 \
            or any(n != cell_masses.shape[0] for n in cell_masses.shape):
        raise ValueError(f"cell_masses must have shape (bins,) * {d}, got {tuple(getattr(cell_masses, 'shape', ()))}")
    bins = cell_masses.shape[0]
    if not cell_masses.is_floating_point() or bool((cell_masses < 0).any()) or float(cell_masses.sum()) > 1 + 1e-6:
        raise ValueError("cell_masses must be floating-point, non-negative and sum to at most 1")
    if not (-float("inf") < low < high < float("inf")):
        raise ValueError(f"need finite low < high, got low={low}, high={high}")
    cells = ((samples - low) / (high - low) * bins).floor().long()
    inside = ((cells >= 0) & (cells < bins)).all(dim=1)
    flat = torch.zeros((), dtype=torch.long, device=samples.device)
    for k in range(d):
        flat = flat * bins + cells[inside, k]
    counts = torch.bincount(flat, minlength=bins ** d).to(torch.float64) / samples.shape[0]
    truth = cell_masses.reshape(-1).to(counts)
    outside_error = (1 - inside.double().mean()) - (1 - truth.sum())
    return float(0.5 * ((counts - truth).abs().sum() + outside_error.abs()))
