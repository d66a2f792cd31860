"""Pouring: tip liquid out of a rotating container into a target area; FluidLab's Pouring
(a glass of liquid rotated about its rim, rotation-only action, loss pulling the liquid into
a receiving region) in 2-D on the MPM engine: water in a cup whose three walls are kinematic
box tools, rotated (and optionally translated) about a pivot fixed to the cup (by default its
bottom-left inner corner), above a static receiving cup."""
from dataclasses import dataclass

import numpy as np
import torch

from sim.bridge import rotation_2d
from sim.engine import WATER, ParticleSet, Tool, ToolShape
from sim.envs.mpm_env import MPMEnv, MPMEnvConfig, block

__all__ = ["Pouring", "PouringConfig"]


@dataclass(frozen=True)
class PouringConfig(MPMEnvConfig):
    """Attributes:
        cup: inner box of the cup ``(x0, y0, x1, y1)`` at angle 0 (open at the top).
        fill: height of the liquid above the cup's floor; the cup's width and ``fill`` must each exceed half a
            particle spacing (``0.25 / n_grid``), and the cup tilted by ``tilt`` must hold at least one particle.
        wall: half thickness of the cup's walls (keep ``2 wall >= dx`` so no grid node is skipped).
        target: the inside of the receiving cup ``(x0, y0, x1, y1)``; its side walls are static box
            tools of half thickness ``wall`` up to ``y1`` (its floor is the domain's floor).
        translation: if True the action is ``(omega, vx, vy)`` (rotation rate and pivot velocity),
            else ``(omega,)`` (FluidLab's Pouring trains the rotation only).
        softness: soft-contact softness of the walls (FluidLab uses 100 for its effectors).
        pivot: rotation centre as a fraction of the cup's inner box (default (0, 0): its bottom-left
            inner corner, so a clockwise turn moves all the liquid right and down, towards the target,
            and the loss gradient at zero actions already points the right way).
        tilt: initial angle of the cup (radians, counter-clockwise); the liquid is seeded level in
            the tilted cup.
        weight_power: exponent ``p`` of the per-step weights ``((t + 1) / T)^p``.
        gravity: FluidLab's ``(0, -20)``.
    """

    horizon: int = 50
    action_bound: float = 10.0
    gravity: tuple[float, float] | None = (0.0, -20.0)
    cup: tuple[float, float, float, float] = (0.2, 0.5, 0.36, 0.7)
    fill: float = 0.12
    wall: float = 0.03
    target: tuple[float, float, float, float] = (0.34, 0.09, 0.66, 0.26)
    weight_power: float = 4.0
    translation: bool = False
    softness: float = 100.0
    pivot: tuple[float, float] = (0.0, 0.0)
    tilt: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        x0, y0, x1, y1 = self.cup
        if not (x1 > x0 and y1 > y0 and 0 < self.fill <= y1 - y0):
            raise ValueError(f"cup must be (x0, y0, x1, y1) with x1 > x0, y1 > y0 and 0 < fill <= y1 - y0, "
                             f"got cup={self.cup}, fill={self.fill}")
        if not len(block((x0, y0), (x1, y0 + self.fill), self.spacing)):
            raise ValueError(f"cup={self.cup} with fill={self.fill} holds no liquid particle: the cup's width and "
                             f"fill must each exceed half a particle spacing (0.25 / n_grid = "
                             f"{self.spacing / 2:g} at n_grid={self.n_grid})")
        if not 2 * self.wall >= 1.0 / self.n_grid:
            raise ValueError(f"wall must be at least half a grid cell (dx/2 = {0.5 / self.n_grid:g}), got {self.wall}")
        tx0, ty0, tx1, ty1 = self.target
        if not (tx1 > tx0 and ty1 > ty0):
            raise ValueError(f"target must be (x0, y0, x1, y1) with x1 > x0 and y1 > y0, got {self.target}")


class Pouring(MPMEnv):
    """Per-step loss ``l_t = mean_p dist(x_p(t), target)^2 / mean_p dist(x_p(0), target)^2``:
    the squared distance of every liquid particle to the target box (zero inside it), so the
    loss is the soft "mass not yet delivered" and every particle carries a gradient (what
    FluidLab's pouring loss gets from its attraction term). Weights ``w_t = ((t + 1) / T)^p``
    (``p = weight_power``; the liquid needs time to tip and fall, so late steps count most).

    State coordinates ``(P,) = (pivot_x, pivot_y, angle)``; the walls are rigidly attached to
    the pivot, so a wall's velocity at a grid node is the rigid motion ``v + omega x r``.
    """

    default_lr = 1.0
    config_class = PouringConfig

    def __init__(self, config: PouringConfig | None = None, **kwargs):
        config = config or PouringConfig()
        self._check_setup(config, kwargs.get("device", "cpu"))
        self.action_dim = 3 if config.translation else 1
        super().__init__(config, **kwargs)
        self._target_lo = torch.tensor(config.target[:2], dtype=self.dtype, device=self.device)
        self._target_hi = torch.tensor(config.target[2:], dtype=self.dtype, device=self.device)
        self._scale = float(self._distance2(self._x0).mean())
        if self._scale == 0:
            raise ValueError("the liquid starts inside the target: move config.target or config.cup")

    # ------------------------------------------------------------------ scene
    def _walls(self, config) -> tuple[np.ndarray, np.ndarray]:
        """Centres ``(3, 2)`` relative to the pivot and half extents ``(3, 2)`` of the floor, left and right walls."""
        x0, y0, x1, y1 = config.cup
        w = config.wall
        pivot = np.array(self._pivot(config))
        # the side walls reach down over the floor's ends: an end face inside the union would let
        # liquid through a corner (the contact keeps velocities off the nearest face only)
        side = (y0 - 2 * w + y1) / 2
        centres = np.array([[(x0 + x1) / 2, y0 - w], [x0 - w, side], [x1 + w, side]])
        half = np.array([[(x1 - x0) / 2 + 2 * w, w], [w, (y1 - y0) / 2 + w], [w, (y1 - y0) / 2 + w]])
        return centres - pivot, half

    @staticmethod
    def _receiver(config) -> tuple[np.ndarray, np.ndarray]:
        """Centres ``(2, 2)`` and half extents ``(2, 2)`` of the receiving cup's two static side walls."""
        x0, _, x1, y1 = config.target
        w, floor = config.wall, 0.0
        centres = np.array([[x0 - w, (floor + y1) / 2], [x1 + w, (floor + y1) / 2]])
        return centres, np.array([[w, (y1 - floor) / 2]] * 2)

    def _scene(self, config):
        water = self._level_liquid(config)
        _, half = self._walls(config)
        _, static_half = self._receiver(config)
        tools = [Tool(ToolShape.BOX, tuple(h), softness=config.softness) for h in np.r_[half, static_half]]
        return ParticleSet(x=water, material=np.zeros(len(water), int)), [WATER], tools

    @staticmethod
    def _pivot(config) -> tuple[float, float]:
        x0, y0, x1, y1 = config.cup
        return x0 + config.pivot[0] * (x1 - x0), y0 + config.pivot[1] * (y1 - y0)

    def _level_liquid(self, config) -> np.ndarray:
        """Liquid particles ``(M, 2)`` with a level surface in the cup tilted by ``tilt``: the lattice
        points inside the tilted cup, lowest first, as many as fill the upright cup to height ``fill``."""
        x0, y0, x1, _ = config.cup
        h = config.spacing
        count = len(block((x0, y0), (x1, y0 + config.fill), h))
        pivot = np.array(self._pivot(config))
        grid = block((0.0, 0.0), (1.0, 1.0), h)
        c, s = np.cos(config.tilt), np.sin(config.tilt)
        local = pivot + (grid - pivot) @ np.array([[c, -s], [s, c]])  # R(tilt)^T (x - pivot) + pivot
        inside = (local[:, 0] > x0 + h / 4) & (local[:, 0] < x1 - h / 4) & (local[:, 1] > y0 + h / 4)
        inside &= local[:, 1] < config.cup[3]
        candidates = grid[inside]
        if not len(candidates):
            raise ValueError(f"cup={config.cup} at tilt={config.tilt} holds no liquid particle (spacing "
                             f"{h:g} at n_grid={config.n_grid}): widen the cup, change tilt or raise n_grid")
        return candidates[np.argsort(candidates[:, 1], kind="stable")[:count]]

    def control_start(self):
        return torch.tensor([*self._pivot(self.config), self.config.tilt], dtype=torch.float64, device=self.device)

    def tool_start(self):
        pos, _, _ = self.tool_poses(torch.zeros(0, self.action_dim, device=self.device), self.control_start())
        return pos[0].to(self.dtype)

    def tool_poses(self, actions, control):
        """Walls rotate with ``omega = a_t[0]`` about the pivot, which moves with ``a_t[1:]`` (if
        ``translation``); each action is spread evenly over the substeps of its step."""
        cfg = self.config
        per_substep = torch.repeat_interleave(actions.to(torch.float64), cfg.substeps_per_step, dim=0) * cfg.dt
        if not cfg.translation:
            per_substep = torch.cat([per_substep, torch.zeros_like(per_substep).expand(-1, 2)], dim=1)
        delta = torch.cat([per_substep[:, 1:], per_substep[:, :1]], dim=1)  # (S, 3) as (dx, dy, dangle)
        path = torch.cat([control[None], control[None] + torch.cumsum(delta, dim=0)], dim=0)  # (S+1, 3)
        rot = rotation_2d(path[:, 2])  # (S+1, 2, 2)
        offsets, _ = self._walls(cfg)
        offsets = torch.as_tensor(offsets, dtype=torch.float64, device=path.device)
        moving = path[:, None, :2] + torch.einsum("sij,kj->ski", rot, offsets)
        fixed = torch.as_tensor(self._receiver(cfg)[0], dtype=torch.float64, device=path.device)
        pos = torch.cat([moving, fixed.expand(len(path), -1, -1)], dim=1)
        eye = torch.eye(2, dtype=torch.float64, device=path.device).expand(len(path), len(fixed), 2, 2)
        return pos, torch.cat([rot[:, None].expand(-1, len(offsets), 2, 2), eye], dim=1), path[-1]

    # ------------------------------------------------------------------ loss
    def _distance2(self, x: torch.Tensor) -> torch.Tensor:
        """Squared distance ``(...)`` of points ``x`` ``(..., 2)`` to the target box (0 inside)."""
        outside = torch.relu(self._target_lo - x) + torch.relu(x - self._target_hi)
        return outside.pow(2).sum(-1)

    def step_weights(self):
        t = torch.arange(1, self.horizon + 1, dtype=self.dtype, device=self.device)
        return (t / self.horizon) ** self.config.weight_power

    def step_losses_of(self, frames, start=0):
        return self._distance2(frames).mean(-1) / self._scale

    def delivered(self, x: torch.Tensor) -> torch.Tensor:
        """Fraction of the liquid inside the target area, ``(...)`` for positions ``(..., N, 2)``."""
        inside = ((x >= self._target_lo) & (x <= self._target_hi)).all(-1)
        return inside.to(self.dtype).mean(-1)

    # ------------------------------------------------------------------ rendering
    def overlay(self, image):
        size = image.shape[0]
        x0, y0, x1, y1 = (int(round(v * size)) for v in self.config.target)
        image[size - y1:size - y0, x0:x1] = (30, 70, 60)
