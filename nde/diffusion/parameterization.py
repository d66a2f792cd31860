"""Model parameterisations and exact converters between them.

With x_t = alpha_t x_0 + sigma_t eps, a network may predict
  - ``"eps"``:   the noise eps (Ho et al. 2020),
  - ``"x0"``:    the clean data x_0 (DPM-Solver++ "data prediction"),
  - ``"v"``:     the velocity v = alpha_t eps - sigma_t x_0 (Salimans & Ho 2022, App. D),
  - ``"score"``: the score grad log q_t(x) = -eps / sigma_t.
The converters are exact for any alpha, sigma (not only alpha^2 + sigma^2 = 1): solving the two linear
relations gives eps = (sigma x + alpha v)/(alpha^2 + sigma^2) and x_0 = (alpha x - sigma v)/(alpha^2 + sigma^2).

Shapes: ``x`` and outputs are ``(batch, *state)``; ``alpha`` and ``sigma`` broadcast against them.
"""
from __future__ import annotations

import torch

PREDICTIONS = ("eps", "x0", "v", "score")


def check_prediction(prediction: str) -> str:
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    return prediction


def to_eps(output: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor,
           prediction: str) -> torch.Tensor:
    """Convert a network output of type ``prediction`` to a noise prediction."""
    check_prediction(prediction)
    if prediction == "eps":
        return output
    if prediction == "x0":
        return (x - alpha * output) / sigma
    if prediction == "v":
        return (sigma * x + alpha * output) / (alpha**2 + sigma**2)
    return -sigma * output


def from_eps(eps: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor,
             prediction: str) -> torch.Tensor:
    """Convert a noise prediction to an output of type ``prediction`` (inverse of :func:`to_eps`)."""
    check_prediction(prediction)
    if prediction == "eps":
        return eps
    x0 = (x - sigma * eps) / alpha
    if prediction == "x0":
        return x0
    if prediction == "v":
        return alpha * eps - sigma * x0
    return -eps / sigma


def eps_to_x0(eps: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Data prediction x_0 = (x - sigma eps)/alpha (DPM-Solver++, Lu et al. 2022b, Eq. 6)."""
    return (x - sigma * eps) / alpha
