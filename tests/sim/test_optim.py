"""Trajectory optimisation: the expanding window's schedule, Adam and CEM on a closed-form
point-mass task, Adam on a tiny smoke task, budget accounting."""
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from sim.envs import Env, EnvConfig, SmokeArt, SmokeArtConfig
from sim.optim import ExpandingWindow, cem, optimize_actions


@dataclass(frozen=True)
class PointConfig(EnvConfig):
    horizon: int = 8
    goal: tuple[float, float] = (0.6, -0.4)


class PointMass(Env):
    """x_{t+1} = x_t + a_t from x_0 = 0, l_t = |x_{t+1} - goal|^2: optimum a_0 = goal, a_t = 0 after,
    minimal loss 0 (|goal| within the action bound)."""

    def _initial_state(self, generator):
        return (torch.zeros(1, 2, dtype=self.dtype),)

    def _advance(self, state, actions):
        xs = state[0][:, None] + actions.cumsum(1)
        return xs, (xs[:, -1],)

    def step_losses_of(self, xs, start=0):
        return (xs - torch.tensor(self.config.goal, dtype=xs.dtype)).pow(2).sum(-1)

    def _render_state(self, state, index):
        return np.zeros((4, 4, 3), np.uint8)


def test_window_expands_on_plateau_and_freezes():
    w = ExpandingWindow(horizon=20, start=5, increment=5, patience=2, threshold=0.01, freeze_lag=2)
    assert w.end == 5 and w.mask().sum() == 5
    assert not w.update(1.0)          # progress
    assert not w.update(0.999)        # stall 1
    assert w.update(0.998)            # stall 2 -> expand
    assert w.end == 10 and w.frozen_until == 3
    assert w.trainable()[:3].sum() == 0 and w.trainable()[3:].sum() == 17
    for _ in range(20):
        w.update(1.0)
    assert w.full and w.end == 20


def test_adam_reaches_closed_form_optimum():
    env = PointMass(PointConfig())
    result = optimize_actions(env, iterations=150, lr=0.05)
    assert result.ratio < 1e-3
    torch.testing.assert_close(result.actions[0], torch.tensor([0.6, -0.4]), atol=0.05, rtol=0)


def test_adam_with_window_counts_budget_and_stops():
    env = PointMass(PointConfig())
    window = ExpandingWindow(env.horizon, start=2, increment=2, patience=2, freeze_lag=1)
    result = optimize_actions(env, iterations=500, lr=0.05, window=window, step_budget=300)
    assert result.sim_steps <= 300
    assert result.ratio < 0.05


def test_a_reused_window_starts_each_run_from_its_initial_state():
    """A window object passed to a second run kept the first run's expanded end and frozen steps."""
    env = PointMass(PointConfig())

    def window():
        return ExpandingWindow(env.horizon, start=2, increment=2, patience=2, freeze_lag=1)

    reused = window()
    runs = [optimize_actions(env, iterations=30, lr=0.05, window=w) for w in (reused, reused, window(), window())]
    assert reused.end > reused.start  # the first run expanded it
    for again, fresh in zip(runs[:2], runs[2:]):
        assert again.losses == fresh.losses and again.sim_steps == fresh.sim_steps
        assert torch.equal(again.actions, fresh.actions)
    # a budget paying for one first window only is valid for a reused window too
    assert optimize_actions(env, iterations=5, window=reused, step_budget=2 * reused.start).sim_steps == 4


def test_frozen_actions_stay_fixed_under_adam_momentum():
    """Masking the gradient of frozen steps is not enough: Adam's momentum kept moving them
    (by about 0.03 per iteration at lr 0.05) after they were frozen."""
    env = PointMass(PointConfig())
    window = ExpandingWindow(env.horizon, start=2, increment=2, patience=2, freeze_lag=0)
    seen = []  # (frozen_until, actions) at every full-horizon evaluation
    rollout_loss = env.rollout_loss

    def recording(actions, mask=None):
        if mask is None:
            seen.append((window.frozen_until, actions[0].detach().clone()))
        return rollout_loss(actions, mask)

    env.rollout_loss = recording
    optimize_actions(env, iterations=40, lr=0.05, window=window)
    assert window.frozen_until >= 2
    for (frozen, before), (_, after) in zip(seen, seen[1:]):
        assert torch.equal(after[:frozen], before[:frozen])


def test_an_initial_sequence_outside_the_action_box_is_returned_clamped():
    """The env applies clamped actions, so a best iterate outside the box (the init, here: the first step of
    Adam moves away from the optimum) must come back as the actions that achieved its loss."""
    env = PointMass(PointConfig())
    bound = env.config.action_bound
    init = torch.zeros(env.horizon, 2, dtype=env.dtype)
    init[0] = torch.tensor([0.6, -0.4]) + 3 * bound * torch.tensor([1.0, -1.0])   # the goal, far outside the box
    result = optimize_actions(env, iterations=1, lr=0.5, init=init)
    assert float(result.actions.abs().max()) <= bound
    assert float(env.rollout_loss(result.actions[None])[0]) == result.best_loss


def test_cem_improves_within_budget_and_is_seeded():
    env = PointMass(PointConfig())
    a = cem(env, step_budget=16 * 8 * 30, population=16, seed=1)
    b = cem(env, step_budget=16 * 8 * 30, population=16, seed=1)
    assert a.sim_steps == 16 * 8 * 30
    assert a.ratio < 0.1
    assert a.best_loss == b.best_loss
    with pytest.raises(ValueError, match="population"):
        cem(env, step_budget=100, population=1)


def test_adam_reduces_tiny_smoke_task():
    env = SmokeArt(SmokeArtConfig(resolution=12, jacobi_iters=6, horizon=8, wave_period=8.0))
    result = optimize_actions(env, iterations=15, lr=0.1)
    assert result.losses[0] == result.initial_loss
    assert result.ratio < 0.5


def test_budgets_and_windows_are_validated():
    env = PointMass(PointConfig())
    with pytest.raises(ValueError, match="step_budget"):
        cem(env, step_budget=float("inf"), population=4)  # used to loop forever
    for budget in (0, -5, 4 * env.horizon - 1):  # used to return after 0 iterations
        with pytest.raises(ValueError, match="step_budget"):
            cem(env, step_budget=budget, population=4)
    with pytest.raises(ValueError, match="population"):
        cem(env, step_budget=1000, population=4.5)
    with pytest.raises(ValueError, match="step_budget"):
        optimize_actions(env, step_budget=1)
    with pytest.raises(ValueError, match="lr"):
        optimize_actions(env, lr=float("inf"))
    with pytest.raises(ValueError, match="iterations"):
        optimize_actions(env, iterations=2.5)
    with pytest.raises(ValueError, match="window"):
        optimize_actions(env, window=ExpandingWindow(env.horizon + 1))
    for field, value in (("freeze_lag", -5), ("start", 0), ("increment", 0), ("increment", -1),
                         ("threshold", float("nan")), ("patience", 0)):
        with pytest.raises(ValueError, match=field):
            ExpandingWindow(10, **{field: value})
    with pytest.raises(ValueError, match="horizon"):
        ExpandingWindow(3.5)


def test_arguments_of_the_wrong_type_name_the_argument():
    """A non-Env env failed with AttributeError ('horizon'), a two-element lr inside float(), a string
    threshold inside a comparison."""
    env = PointMass(PointConfig())
    for call in (lambda: optimize_actions("env", iterations=1), lambda: cem(None, step_budget=100)):
        with pytest.raises(TypeError, match="env must be an Env"):
            call()
    with pytest.raises(ValueError, match="lr must be"):
        optimize_actions(env, iterations=1, lr=torch.tensor([0.1, 0.1]))
    with pytest.raises(ValueError, match="threshold"):
        ExpandingWindow(10, threshold="0.01")


def test_numpy_ints_are_accepted_and_bools_rejected():
    """np.int64 iterations / budgets / populations / window sizes and cem seeds were rejected (the seed
    inside torch); bools counted as ints (iterations=True ran one iteration)."""
    env = PointMass(PointConfig(horizon=4))
    window = ExpandingWindow(np.int64(4), start=np.int64(2), increment=np.int64(1), patience=np.int64(1),
                             freeze_lag=np.int64(0))
    assert all(type(getattr(window, f)) is int for f in ("horizon", "start", "increment", "patience", "freeze_lag"))
    result = optimize_actions(env, iterations=np.int64(2), window=window, step_budget=np.int64(100))
    assert len(result.losses) == 2
    reference = cem(env, step_budget=16, population=4, seed=1)
    result = cem(env, step_budget=np.int64(16), population=np.int64(4), seed=np.int64(1))
    assert result.best_loss == reference.best_loss
    for call, name in ((lambda: optimize_actions(env, iterations=True), "iterations"),
                       (lambda: optimize_actions(env, lr=True), "lr"),
                       (lambda: cem(env, step_budget=16, population=True), "population"),
                       (lambda: cem(env, step_budget=16, population=4, elite_frac="a"), "elite_frac"),
                       (lambda: ExpandingWindow(True), "horizon")):
        with pytest.raises(ValueError, match=name):
            call()
    with pytest.raises(TypeError, match="seed must be an int"):
        cem(env, step_budget=16, population=4, seed=2.5)
