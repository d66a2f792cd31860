"""f-divergences and their distillation weights h(r) = f''(r) r^2.

Xu, Nie & Vahdat, "One-step Diffusion Models with f-Divergence Distribution Matching"
(arXiv 2502.15681): the gradient of D_f(p || q_theta) for a one-step generator is the
teacher-minus-student score difference weighted by h(r) of the density ratio r = p / q,
h(r) = f''(r) r^2. Reverse KL (f = -log r) gives h = 1, i.e. VSD / DMD.

Weights here are the exact f''(r) r^2 of each f below (FastGen drops constant factors, e.g.
JS r/(1+r) instead of r/(2(1+r))); constants cancel after the batch-mean normalisation.
"""
from __future__ import annotations

from typing import Callable

import torch

Scalar = Callable[[torch.Tensor], torch.Tensor]


def _kl(r):  # forward KL(p || q) = E_q[r log r]
    return r * torch.log(r)


def _reverse_kl(r):  # KL(q || p) = E_q[-log r]
    return -torch.log(r)


def _js(r):  # Jensen-Shannon: 1/2 [r log r - (1 + r) log((1 + r) / 2)]
    return 0.5 * (r * torch.log(r) - (1 + r) * torch.log((1 + r) / 2))


def _squared_hellinger(r):
    return (torch.sqrt(r) - 1) ** 2


def _jeffreys(r):  # KL(p||q) + KL(q||p)
    return (r - 1) * torch.log(r)


def _pearson(r):  # chi^2(p || q)
    return (r - 1) ** 2


def _neyman(r):  # chi^2(q || p)
    return (1 - r) ** 2 / r


F_DIVERGENCES: dict[str, tuple[Scalar, Scalar]] = {
    # name: (f, h = f'' r^2)
    "reverse_kl": (_reverse_kl, lambda r: torch.ones_like(r)),
    "forward_kl": (_kl, lambda r: r),
    "js": (_js, lambda r: 0.5 * r / (1 + r)),
    "squared_hellinger": (_squared_hellinger, lambda r: 0.5 * torch.sqrt(r)),
    "jeffreys": (_jeffreys, lambda r: r + 1),
    "pearson": (_pearson, lambda r: 2 * r ** 2),
    "neyman": (_neyman, lambda r: 2 / r),
}


def _check(name: str) -> None:
    if name not in F_DIVERGENCES:
        raise ValueError(f"divergence must be one of {sorted(F_DIVERGENCES)}, got {name!r}")


def f_function(name: str) -> Scalar:
    """The convex generator f with f(1) = 0 of divergence ``name``."""
    _check(name)
    return F_DIVERGENCES[name][0]


def divergence_weight(name: str, ratio: torch.Tensor) -> torch.Tensor:
    """h(r) = f''(r) r^2 elementwise for density ratios ``ratio = p / q > 0``."""
    _check(name)
    return F_DIVERGENCES[name][1](ratio)


def f_divergence_from_ratio(name: str, ratio: torch.Tensor) -> torch.Tensor:
    """Monte-Carlo D_f(p || q) = E_q[f(r)] from ratios evaluated at samples of q."""
    return f_function(name)(ratio).mean()


__all__ = ["F_DIVERGENCES", "f_function", "divergence_weight", "f_divergence_from_ratio"]
