"""sim: differentiable FluidLab-style physics environments on NVIDIA Warp."""

# --- sim-engine: MPM engine, checkpointing, torch bridge ---
from .bridge import MPMRollout, mpm_rollout, rotation_2d, tool_path  # noqa: E402
from .checkpoint import SegmentPlan, backward_sweep, suggest_segment_length  # noqa: E402
from .engine import (ELASTIC, MAX_TOOLS, RIGID, SNOW, VISCOUS_LIQUID, WATER, Material,  # noqa: E402
                     MaterialKind, MPMConfig, MPMSimulator, ParticleSet, SimulationError, Tool, ToolShape)
# --- end sim-engine ---
