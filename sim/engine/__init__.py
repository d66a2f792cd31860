"""Differentiable simulation engine on NVIDIA Warp: MLS-MPM (2-D/3-D) with kinematic tools,
and the 3-D smoke grid (the 2-D one is ``sim.engine.smoke``)."""
from .materials import ELASTIC, RIGID, SNOW, VISCOUS_LIQUID, WATER, Material, MaterialKind
from .mpm import MPMConfig, MPMSimulator, ParticleSet, SimulationError
from .mpm_kernels import MAX_TOOLS
from .smoke3d import Smoke3DConfig, SmokeGrid3D
from .tools import Tool, ToolShape

__all__ = ["Material", "MaterialKind", "WATER", "VISCOUS_LIQUID", "ELASTIC", "SNOW", "RIGID",
           "MPMConfig", "MPMSimulator", "ParticleSet", "SimulationError", "MAX_TOOLS", "Tool", "ToolShape",
           "Smoke3DConfig", "SmokeGrid3D"]
