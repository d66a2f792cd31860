"""The environment API shared by every task: reset / step / loss / render plus a
differentiable batched rollout loss for trajectory optimisation.

A task is a differentiable simulator with a per-step loss ``l_t`` and per-step weights
``w_t``; its trajectory loss is FluidLab's temporally summed loss
``L(a_{0:T}) = sum_t w_t l_t(s_{t+1})`` (Xian et al. 2023, the ``temporal_range`` sum of
``fluidengine/losses``). Optimisers pass an extra mask (the temporally expanding window);
the rollout is truncated after the last step with a non-zero weight.

Action convention (all tasks): an action is a vector of ``action_dim`` floats, valid in
``[-action_bound, action_bound]``. Out-of-range values are **clamped** to that box
(documented clamping, as FluidLab's ``action_range`` clip); NaN or infinite values raise
``ValueError``.
"""
import abc
import dataclasses
import math
import typing
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from sim._checks import is_int, is_real, plain_ints

__all__ = ["Env", "EnvConfig"]


def _all_finite(value) -> bool:
    """False if ``value`` is, or is a tuple holding, a NaN or infinite float."""
    values = value if isinstance(value, tuple) else (value,)
    return not any(isinstance(v, float) and not math.isfinite(v) for v in values)


def _check_field_type(name: str, kind, value) -> None:
    """``ValueError`` naming the config field ``name`` unless ``value`` fits its annotation ``kind``:
    ``float`` a finite number, ``tuple[float, ...]`` that many finite numbers (a tuple, list or
    array), ``bool`` a bool, ``X | None`` also None. Int fields have their own checks."""
    args = typing.get_args(kind)
    if type(None) in args:
        if value is None:
            return
        kind = next(a for a in args if a is not type(None))
    if kind is float:
        ok, expected = is_real(value) and math.isfinite(value), "a finite number"
    elif typing.get_origin(kind) is tuple:
        n = len(typing.get_args(kind))
        values = list(value) if isinstance(value, (tuple, list, np.ndarray)) else []
        ok = len(values) == n and all(is_real(v) and math.isfinite(v) for v in values)
        expected = f"{n} finite numbers"
    elif kind is bool:
        ok, expected = isinstance(value, (bool, np.bool_)), "a bool"
    else:
        return
    if not ok:
        raise ValueError(f"{name} must be {expected}, got {value!r}")


def _real_tensor(value, name: str) -> torch.Tensor:
    """``value`` (a tensor, array or numbers) as a real tensor, else ``TypeError`` naming ``name`` (a complex
    tensor would lose its imaginary part in the cast to the env's dtype with only a warning)."""
    try:
        tensor = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"{name} must be a tensor or array of numbers, got {type(value).__name__}") from error
    if tensor.is_complex() or tensor.dtype == torch.bool:
        raise TypeError(f"{name} must be real-valued, got dtype {tensor.dtype}")
    return tensor


def check_positive(config, *names: str) -> None:
    """Raise ``ValueError`` naming the first field of ``config`` in ``names`` that is not ``> 0``."""
    for name in names:
        value = getattr(config, name)
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value!r}")


def check_box(name: str, lo: tuple, hi: tuple) -> None:
    """Raise ``ValueError`` naming the box field ``name`` unless it is non-empty (``lo < hi`` per axis)."""
    if not all(a < b for a, b in zip(lo, hi)):
        raise ValueError(f"{name} must be a non-empty box (lower corner {tuple(lo)} below upper corner {tuple(hi)})")


@dataclass(frozen=True)
class EnvConfig:
    """Settings every task has. Every float field (and float in a tuple field) of a task config
    must be a finite number (not a bool, a string or None), tuple fields hold exactly their
    annotated number of entries; otherwise ``ValueError`` naming the field.

    Integer fields take Python or numpy ints (stored as Python ints), not bools.

    Attributes:
        horizon: number of action steps ``T`` of an episode.
        action_bound: actions are clamped to ``[-action_bound, action_bound]``.
        seed: default seed of :meth:`Env.reset` (initial-state perturbation).
    """

    horizon: int = 40
    action_bound: float = 1.0
    seed: int = 0

    def __post_init__(self):
        for field in dataclasses.fields(self):
            _check_field_type(field.name, field.type, getattr(self, field.name))
        if not is_int(self.horizon) or self.horizon < 1:
            raise ValueError(f"horizon must be an int >= 1, got {self.horizon!r}")
        if not self.action_bound > 0:
            raise ValueError(f"action_bound must be positive, got {self.action_bound!r}")
        check_seed(self.seed)
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not _all_finite(value):
                raise ValueError(f"{field.name} must be finite, got {value!r}")
        plain_ints(self)


def check_seed(seed) -> int:
    """``seed`` as a Python int: ``TypeError`` unless it is an int (Python or numpy, not a bool),
    ``ValueError`` unless it lies in ``[0, 2**63)`` (what ``torch.Generator.manual_seed`` takes)."""
    if not is_int(seed):
        raise TypeError(f"seed must be an int in [0, 2**63), got {seed!r}")
    if not 0 <= seed < 2 ** 63:
        raise ValueError(f"seed must be an int in [0, 2**63), got {seed!r}")
    return int(seed)


class Env(abc.ABC):
    """Base class of the tasks.

    Args:
        config: the task's config dataclass (a subclass of :class:`EnvConfig`).
        batch_size: number ``B`` of worlds that :meth:`step` advances in parallel.
        device: torch device of states and actions.
        dtype: ``torch.float32`` (default) or ``torch.float64`` (gradient tests).

    Subclasses implement :meth:`_initial_state`, :meth:`_advance` (one or more steps from a
    given state, differentiable), :meth:`step_losses_of` and :meth:`_render_state`.
    """

    action_dim: int = 2
    #: Adam learning rate that works for the task's default config (examples, benchmarks).
    default_lr: float = 0.1
    #: The config dataclass the task takes.
    config_class: type = EnvConfig

    def __init__(self, config: EnvConfig, batch_size: int = 1, device="cpu", dtype=torch.float32):
        device = self._check_setup(config, device)
        if not is_int(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        self.config = config
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.dtype = dtype
        self.reset()

    # ------------------------------------------------------------------ task interface
    @abc.abstractmethod
    def _initial_state(self, generator: torch.Generator) -> tuple:
        """The initial state as a tuple of tensors with a leading batch dim of 1."""

    @abc.abstractmethod
    def _advance(self, state: tuple, actions: torch.Tensor):
        """Simulate ``actions`` ``(B, T, A)`` from ``state``; returns ``(observations, final_state)``.

        ``observations`` is whatever :meth:`step_losses_of` needs, with time on dim 1.
        Must be differentiable w.r.t. ``actions`` and the state.
        """

    @abc.abstractmethod
    def step_losses_of(self, observations, start: int = 0) -> torch.Tensor:
        """Per-step task losses ``l_t`` of a batch of trajectories, shape ``(B, T)``; the first
        observation is the state after step ``start``."""

    @abc.abstractmethod
    def _render_state(self, state: tuple, index: int) -> np.ndarray:
        """RGB image ``(H, W, 3)`` uint8 of world ``index`` of ``state``."""

    def _continue(self, state: tuple, actions: torch.Tensor):
        """Advance the episode state by ``actions`` ``(B, 1, A)`` for :meth:`step` (no gradient);
        defaults to :meth:`_advance`. Tasks whose ``_advance`` only starts from the initial state
        override it."""
        return self._advance(state, actions)

    def step_weights(self) -> torch.Tensor:
        """Per-step weights ``w_t`` of the task loss, shape ``(T,)``; uniform by default."""
        return torch.ones(self.config.horizon, dtype=self.dtype, device=self.device)

    # ------------------------------------------------------------------ public API
    @property
    def horizon(self) -> int:
        return self.config.horizon

    def reset(self, seed: int | None = None) -> tuple:
        """Reset all ``B`` worlds to the initial state drawn with ``seed`` (default ``config.seed``)."""
        seed = check_seed(self.config.seed if seed is None else seed)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        self._init = tuple(t.to(self.device) for t in self._initial_state(generator))
        self._state = self._expand(self._init, self.batch_size)
        self._t = 0
        self._losses: list[torch.Tensor] = []
        return self._state

    def step(self, action: torch.Tensor) -> tuple:
        """Advance every world one step with ``action`` ``(A,)`` or ``(B, A)`` (no gradient: an
        ``action`` that requires grad gets a warning; :meth:`rollout_loss` is differentiable)."""
        if self._t >= self.horizon:
            raise RuntimeError(f"episode is over (horizon {self.horizon}); call reset()")
        if isinstance(action, torch.Tensor) and action.requires_grad and torch.is_grad_enabled():
            warnings.warn("Env.step does not propagate gradients: `action` requires grad but is detached, "
                          "so loss() has no gradient; use rollout_loss(actions) or step_losses(actions) "
                          "for a differentiable loss", stacklevel=2)
        action = _real_tensor(action, "action").to(dtype=self.dtype, device=self.device)
        if action.shape not in ((self.action_dim,), (self.batch_size, self.action_dim)):
            raise ValueError(f"action must have shape ({self.action_dim},) or ({self.batch_size}, "
                             f"{self.action_dim}), got {tuple(action.shape)}")
        action = action.expand(self.batch_size, -1)
        with torch.no_grad():
            obs, self._state = self._continue(self._state, self.clamp_actions(action[:, None]))
            self._losses.append(self.step_losses_of(obs, start=self._t)[:, 0])
        self._t += 1
        return self._state

    def loss(self) -> torch.Tensor:
        """Task loss ``sum_t w_t l_t`` over the steps taken since :meth:`reset`, shape ``(B,)``."""
        if not self._losses:
            return torch.zeros(self.batch_size, dtype=self.dtype, device=self.device)
        weights = self.step_weights()[: self._t]
        return (torch.stack(self._losses, dim=1) * weights).sum(dim=1)

    def render(self, index: int = 0) -> np.ndarray:
        """RGB image ``(H, W, 3)`` uint8 of world ``index`` in the current state."""
        if not is_int(index) or not 0 <= index < self.batch_size:
            raise ValueError(f"index must be an int in [0, {self.batch_size}), got {index!r}")
        return self._render_state(self._state, index)

    def clamp_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Check actions are finite and clamp them to the action box (documented clamping)."""
        if not torch.isfinite(actions).all():
            raise ValueError("actions contain NaN or infinite values")
        bound = self.config.action_bound
        return actions.clamp(-bound, bound)

    def initial_actions(self) -> torch.Tensor:
        """The actions optimisation starts from: zeros of shape ``(T, A)``."""
        return torch.zeros(self.horizon, self.action_dim, dtype=self.dtype, device=self.device)

    def step_losses(self, actions: torch.Tensor) -> torch.Tensor:
        """Per-step losses ``(B, T')`` of action sequences ``(B, T', A)`` (``T' <= T``) from the
        initial state; differentiable w.r.t. ``actions``."""
        actions = self._check_sequence(actions)
        obs, _ = self._advance(self._expand(self._init, actions.shape[0]), self.clamp_actions(actions))
        return self.step_losses_of(obs)

    def rollout_loss(self, actions: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Trajectory loss ``sum_t m_t w_t l_t`` of action sequences ``(B, T, A)``, shape ``(B,)``.

        ``mask`` ``(T,)`` multiplies the task weights (an optimiser's loss window); the rollout
        stops after the last step with a non-zero weight, so a short window is cheap.
        """
        actions = self._check_sequence(actions)
        if actions.shape[1] != self.horizon:
            raise ValueError(f"actions must cover the horizon {self.horizon}, got {actions.shape[1]} steps")
        weights = self.step_weights()
        if mask is not None:
            if not isinstance(mask, torch.Tensor) or mask.shape != (self.horizon,):
                raise ValueError(f"mask must be a tensor of shape ({self.horizon},), "
                                 f"got {tuple(getattr(mask, 'shape', ())) or type(mask).__name__}")
            if not bool((torch.isfinite(mask) & (mask >= 0)).all()):
                raise ValueError("mask must be finite and non-negative")
            weights = weights * mask.to(weights)
        nonzero = torch.nonzero(weights).flatten()
        if nonzero.numel() == 0:
            raise ValueError("all loss weights are zero")
        steps = int(nonzero[-1]) + 1
        return (self.step_losses(actions[:, :steps]) * weights[:steps]).sum(dim=1)

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _check_scale(scale, fields: str):
        """A loss normaliser ``scale`` (a float or 0-dim tensor), checked to be finite and positive
        (else the loss is NaN or inf); ``fields`` names the config fields that set it."""
        value = float(scale)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"the task's loss normaliser is {value}: the task is empty; check {fields}")
        return scale

    @classmethod
    def _check_setup(cls, config, device) -> torch.device:
        """Check the config class and the device (before a subclass builds its engine); returns
        the device as a ``torch.device``."""
        if not isinstance(config, cls.config_class):
            raise TypeError(f"config must be a {cls.config_class.__name__}, got {type(config).__name__}")
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as error:
            raise ValueError(f"device must be 'cpu' or 'cuda[:i]', got {device!r}") from error
        available = (dev.type == "cpu" and dev.index in (None, 0)) or (
            dev.type == "cuda" and torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count())
        if not available:
            raise ValueError(f"device must be 'cpu' or an available 'cuda[:i]', got {device!r}")
        return dev

    def _check_sequence(self, actions) -> torch.Tensor:
        if not isinstance(actions, torch.Tensor):
            raise TypeError(f"actions must be a torch.Tensor, got {type(actions).__name__}")
        _real_tensor(actions, "actions")
        if actions.dim() == 2:
            actions = actions[None]
        if actions.dim() != 3 or actions.shape[2] != self.action_dim or not 1 <= actions.shape[1] <= self.horizon \
                or actions.shape[0] < 1:
            raise ValueError(f"actions must have shape (B>=1, T<={self.horizon}, {self.action_dim}), "
                             f"got {tuple(actions.shape)}")
        return actions.to(device=self.device, dtype=self.dtype)

    @staticmethod
    def _expand(state: tuple, batch: int) -> tuple:
        return tuple(t.expand(batch, *t.shape[1:]).contiguous() for t in state)
