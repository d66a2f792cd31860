"""Gradient-based trajectory optimisation: ``torch.optim.Adam`` over an action sequence
through a differentiable environment, with the expanding loss window and action freezing."""
import math
from dataclasses import dataclass, field

import torch

from sim._checks import is_int, is_real
from sim.envs.base import Env
from sim.optim.window import ExpandingWindow

__all__ = ["OptimResult", "optimize_actions"]


@dataclass
class OptimResult:
    """Outcome of a trajectory optimisation.

    Attributes:
        actions: best action sequence found ``(T, A)`` (by full-horizon task loss).
        losses: full-horizon task loss of the iterate at each iteration (before its update).
        initial_loss: task loss of the starting actions.
        best_loss: task loss of ``actions``.
        sim_steps: simulator steps spent (a backward pass over ``W`` steps counts ``W``).
    """

    actions: torch.Tensor
    losses: list[float] = field(default_factory=list)
    initial_loss: float = float("nan")
    best_loss: float = float("inf")
    sim_steps: int = 0

    @property
    def ratio(self) -> float:
        """Best loss / initial loss."""
        return self.best_loss / self.initial_loss


def optimize_actions(env: Env, iterations: int = 200, lr: float = 0.05, window: ExpandingWindow | None = None,
                     init: torch.Tensor | None = None, betas=(0.9, 0.99), step_budget: int | None = None,
                     progress=None) -> OptimResult:
    """Minimise ``env``'s task loss over an open-loop action sequence with Adam.

    Each iteration simulates only the current loss window (FluidLab's solver does the same),
    masks the gradient of frozen steps, takes an Adam step (FluidLab uses beta2 = 0.99), keeps
    the frozen steps at their values (Adam's momentum would otherwise keep moving them) and
    clamps the actions to the action box. The full-horizon loss of each iterate is evaluated
    without gradient for the loss curve and the best-iterate choice (not counted in the budget).

    Args:
        env: environment; its ``rollout_loss`` must be differentiable.
        iterations: Adam iterations (stops earlier if ``step_budget`` is spent).
        lr: Adam learning rate (in action units).
        window: expanding window; ``None`` optimises the full-horizon loss every iteration. It is reset to its
            initial state at the start (a window reused from an earlier run starts again from ``window.start``)
            and holds the run's schedule state afterwards.
        init: initial actions ``(T, A)``; default ``env.initial_actions()``. Clamped to the action box, as
            every iterate is.
        step_budget: optional cap on simulator steps (forward + backward); an int that pays for
            at least the first iteration (``2 * window.start``, or ``2 * T`` without a window).
        progress: optional callable ``progress(iteration, loss, window_end)``.
    """
    if not isinstance(env, Env):
        raise TypeError(f"env must be an Env, got {type(env).__name__}")
    horizon, bound = env.horizon, env.config.action_bound
    _check_arguments(horizon, iterations, lr, window, init, step_budget)
    if window is not None:
        window.reset()
    actions = (env.initial_actions() if init is None else init.detach().clone()).to(env.device, env.dtype)
    if actions.shape != (horizon, env.action_dim):
        raise ValueError(f"init must have shape ({horizon}, {env.action_dim}), got {tuple(actions.shape)}")
    actions.clamp_(-bound, bound)   # the env clamps what it applies; an unclamped init would be returned as best
    actions.requires_grad_(True)
    opt = torch.optim.Adam([actions], lr=lr, betas=betas)
    result = OptimResult(actions=actions.detach().clone())
    for it in range(iterations):
        with torch.no_grad():
            full = float(env.rollout_loss(actions[None])[0])
        result.losses.append(full)
        if it == 0:
            result.initial_loss = full
        if full < result.best_loss:
            result.best_loss, result.actions = full, actions.detach().clone()
        mask = None if window is None else window.mask(env.dtype, env.device)
        steps = horizon if window is None else window.end
        if step_budget is not None and result.sim_steps + 2 * steps > step_budget:
            break
        opt.zero_grad()
        loss = env.rollout_loss(actions[None], mask)[0]
        loss.backward()
        result.sim_steps += 2 * steps
        frozen = 0 if window is None else window.frozen_until
        if window is not None:
            actions.grad.mul_(window.trainable(env.dtype, env.device))
        kept = actions.detach()[:frozen].clone()
        opt.step()
        with torch.no_grad():
            actions[:frozen] = kept  # a zero gradient alone would let Adam's momentum move them
            actions.clamp_(-bound, bound)
        if window is not None:
            window.update(float(loss.detach()))
        if progress is not None:
            progress(it, full, steps)
    return result


def _check_arguments(horizon: int, iterations, lr, window, init, step_budget) -> None:
    """Raise naming the first argument of :func:`optimize_actions` that is invalid."""
    if not is_int(iterations) or iterations < 1:
        raise ValueError(f"iterations must be an int >= 1, got {iterations!r}")
    if not (is_real(lr) or isinstance(lr, torch.Tensor) and lr.numel() == 1) \
            or not (math.isfinite(float(lr)) and float(lr) > 0):
        raise ValueError(f"lr must be a finite positive number, got {lr!r}")
    if window is not None and (not isinstance(window, ExpandingWindow) or window.horizon != horizon):
        raise ValueError(f"window must be an ExpandingWindow over the env's horizon {horizon}, got {window!r}")
    if init is not None and not isinstance(init, torch.Tensor):
        raise TypeError(f"init must be a torch.Tensor or None, got {type(init).__name__}")
    first = 2 * (horizon if window is None else window.start)
    if step_budget is not None and (not is_int(step_budget) or step_budget < first):
        raise ValueError(f"step_budget must be None or an int >= {first} (one iteration), got {step_budget!r}")
