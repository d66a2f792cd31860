"""Material models of the MPM engine (FluidLab's material classes, Xian et al. 2023)."""
import math
from dataclasses import dataclass
from enum import IntEnum

from .._checks import is_real


class MaterialKind(IntEnum):
    """How a particle's deformation gradient and stress are treated (see ``mpm_kernels``)."""
    LIQUID = 0   # F reset to diag(J, 1, 1); pressure lam J (J-1) + Newtonian viscosity
    ELASTIC = 1  # fixed-corotated hyperelastic
    PLASTIC = 2  # fixed-corotated with singular values clamped to [1-theta_c, 1+theta_s]
    RIGID = 3    # no stress; each body rigidified by shape matching every substep


@dataclass(frozen=True)
class Material:
    """Parameters of one material.

    ``E`` (Young's modulus) and ``nu`` (Poisson ratio) give the Lame parameters
    ``mu = E / (2 (1 + nu))``, ``lam = E nu / ((1 + nu)(1 - 2 nu))``; for liquids only ``lam``
    (the bulk stiffness) is used. ``viscosity`` is the dynamic viscosity of liquids
    (``tau += viscosity * J * (C + C^T)``, with the APIC matrix ``C`` as velocity gradient).
    ``theta_c`` / ``theta_s`` are the critical compression / stretch of plastic materials.
    ``E``, ``nu`` and ``viscosity`` are differentiable (Warp arrays, one entry per material).
    """
    kind: MaterialKind
    E: float = 400.0
    nu: float = 0.2
    viscosity: float = 0.0
    density: float = 1.0
    theta_c: float = 2e-3
    theta_s: float = 3e-3

    def __post_init__(self):
        if not isinstance(self.kind, MaterialKind):
            raise TypeError(f"kind must be a MaterialKind, got {self.kind!r}")
        for name in ("E", "nu", "viscosity", "density", "theta_c", "theta_s"):
            if not is_real(getattr(self, name)):
                raise TypeError(f"{name} must be a real number, got {getattr(self, name)!r}")
        for name in ("E", "density"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite positive number, got {value!r}")
        if not -1.0 < self.nu < 0.5:
            raise ValueError(f"nu must lie in (-1, 0.5), got {self.nu!r}")
        if not (math.isfinite(self.viscosity) and self.viscosity >= 0):
            raise ValueError(f"viscosity must be a finite number >= 0, got {self.viscosity!r}")
        if not (0 <= self.theta_c < 1 and math.isfinite(self.theta_s) and self.theta_s >= 0):
            raise ValueError(f"theta_c must lie in [0, 1) and theta_s be a finite number >= 0, "
                             f"got {self.theta_c!r}, {self.theta_s!r}")


# Presets in the spirit of FluidLab's macros (units: domain [0, 1], density ~ 1).
WATER = Material(MaterialKind.LIQUID, E=400.0, nu=0.2)
VISCOUS_LIQUID = Material(MaterialKind.LIQUID, E=400.0, nu=0.2, viscosity=0.5)
ELASTIC = Material(MaterialKind.ELASTIC, E=1000.0, nu=0.2)
SNOW = Material(MaterialKind.PLASTIC, E=1000.0, nu=0.2, theta_c=2.5e-2, theta_s=7.5e-3)
RIGID = Material(MaterialKind.RIGID, density=2.0)
