"""Cross-entropy method (Rubinstein 1999; the sampling baseline of trajectory optimisation):
a gradient-free optimiser of open-loop action sequences, evaluated in batched rollouts."""
import math

import torch

from sim._checks import is_int, is_real
from sim.envs.base import Env, check_seed
from sim.optim.trajectory import OptimResult

__all__ = ["cem"]


def cem(env: Env, step_budget: int, population: int = 16, elite_frac: float = 0.25, init_std: float | None = None,
        min_std: float | None = None, smoothing: float = 0.1, seed: int = 0, progress=None) -> OptimResult:
    """Minimise ``env``'s full-horizon task loss with the cross-entropy method.

    Each iteration samples ``population - 1`` sequences ``a ~ N(mu, sigma^2)`` plus the mean
    itself (clamped to the action box), evaluates them in one batched rollout, and refits
    ``mu, sigma`` to the ``elite_frac`` best (``mu <- s mu + (1 - s) mean(elites)``, same for
    sigma, with ``sigma >= min_std``, default ``0.05 * action_bound``, against premature
    collapse). Runs until ``step_budget`` simulator steps (population x horizon per
    iteration) are spent.

    Returns an :class:`OptimResult`; ``losses`` holds the best loss so far after each
    iteration, ``initial_loss`` the loss of ``env.initial_actions()``. ``step_budget`` must be
    an int that pays for at least one iteration (``population * horizon``).
    """
    if not isinstance(env, Env):
        raise TypeError(f"env must be an Env, got {type(env).__name__}")
    horizon = env.horizon
    _check_arguments(horizon, step_budget, population, elite_frac, init_std, min_std, smoothing, seed)
    population = int(population)
    n_elite = max(1, int(round(elite_frac * population)))
    bound = env.config.action_bound
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    mean = env.initial_actions()
    std = torch.full_like(mean, 0.5 * bound if init_std is None else init_std)
    min_std = 0.05 * bound if min_std is None else min_std
    with torch.no_grad():
        initial = float(env.rollout_loss(mean[None])[0])
    result = OptimResult(actions=mean.clone(), initial_loss=initial, best_loss=initial)
    while result.sim_steps + population * horizon <= step_budget:
        noise = torch.randn(population, *mean.shape, generator=generator, dtype=torch.float64)
        noise[0] = 0
        samples = (mean + std * noise.to(mean)).clamp(-bound, bound)
        with torch.no_grad():
            losses = env.rollout_loss(samples)
        result.sim_steps += population * horizon
        order = torch.argsort(losses)
        elites = samples[order[:n_elite]]
        if float(losses[order[0]]) < result.best_loss:
            result.best_loss, result.actions = float(losses[order[0]]), samples[order[0]].clone()
        mean = smoothing * mean + (1 - smoothing) * elites.mean(0)
        if n_elite > 1:
            std = (smoothing * std + (1 - smoothing) * elites.std(0, unbiased=False)).clamp_min(min_std)
        result.losses.append(result.best_loss)
        if progress is not None:
            progress(len(result.losses) - 1, result.best_loss, horizon)
    return result


def _check_arguments(horizon, step_budget, population, elite_frac, init_std, min_std, smoothing, seed) -> None:
    """Raise ``ValueError`` naming the first argument of :func:`cem` that is out of range (ints may
    be numpy ints, not bools); a ``seed`` that is not an int is a ``TypeError``."""
    if not is_int(population) or population < 2:
        raise ValueError(f"population must be an int >= 2, got {population!r}")
    if not is_int(step_budget) or step_budget < population * horizon:
        raise ValueError(f"step_budget must be an int >= population * horizon = {population * horizon} "
                         f"(one iteration), got {step_budget!r}")
    if not (is_real(elite_frac) and 0 < elite_frac <= 1):
        raise ValueError(f"elite_frac must be in (0, 1], got {elite_frac!r}")
    for name, value in (("init_std", init_std), ("min_std", min_std)):
        if value is not None and not (is_real(value) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0 or None, got {value!r}")
    if not (is_real(smoothing) and 0 <= smoothing < 1):
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing!r}")
    check_seed(seed)
