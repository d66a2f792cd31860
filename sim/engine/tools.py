"""Kinematic tools (effectors) that push the material through FluidLab's soft contact."""
import math
from dataclasses import dataclass
from enum import IntEnum

from .._checks import is_real


class ToolShape(IntEnum):
    """Signed-distance shape of a tool, in the tool's own frame."""
    SPHERE = 0   # size = (radius,)                       (a circle in 2-D)
    BOX = 1      # size = half extents per axis (dim entries)
    CAPSULE = 2  # size = (radius, half length): segment along the local x axis


@dataclass(frozen=True)
class Tool:
    """A kinematic tool. Its pose per substep (position, rotation matrix) is an input of the
    rollout; the tool velocity at a grid node is the displacement of that material point of
    the tool between two substeps divided by ``dt`` (as FluidLab's ``collider_v``).

    ``softness`` > 0 enables the soft contact ``influence = min(exp(-sdf * softness), 1)``
    (FluidLab uses 100); 0 means hard contact (only inside the tool). ``friction`` is the
    Coulomb coefficient of the tangential velocity.
    """
    shape: ToolShape
    size: tuple
    softness: float = 100.0
    friction: float = 0.0

    def __post_init__(self):
        if not isinstance(self.shape, ToolShape):
            raise TypeError(f"shape must be a ToolShape, got {self.shape!r}")
        if not isinstance(self.size, (tuple, list)) or not self.size \
                or not all(is_real(v) and math.isfinite(v) and v >= 0 for v in self.size):
            raise ValueError(f"size must be a tuple of finite non-negative numbers, got {self.size!r}")
        for name in ("softness", "friction"):
            value = getattr(self, name)
            if not (is_real(value) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")

    def size_length(self, dim: int) -> int:
        """Number of ``size`` entries the shape takes in ``dim`` dimensions."""
        return {ToolShape.SPHERE: 1, ToolShape.BOX: dim, ToolShape.CAPSULE: 2}[self.shape]
