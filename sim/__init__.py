"""sim: differentiable FluidLab-style physics environments on NVIDIA Warp."""

# --- sim-engine: MPM engine, checkpointing, torch bridge ---
from .bridge import MPMRollout, mpm_continue, mpm_rollout, rotation_2d, tool_path  # noqa: E402
from .checkpoint import SegmentPlan, backward_sweep, suggest_segment_length  # noqa: E402
from .engine import (ELASTIC, MAX_TOOLS, RIGID, SNOW, VISCOUS_LIQUID, WATER, Material,  # noqa: E402
                     MaterialKind, MPMConfig, MPMSimulator, ParticleSet, SimulationError, Tool, ToolShape)
# --- end sim-engine ---

# --- sim-envs: smoke grid, environments, trajectory optimisation ---
from .engine.smoke import SmokeConfig, SmokeGrid  # noqa: E402
from .engine.smoke3d import Smoke3DConfig, SmokeGrid3D  # noqa: E402
from .envs import (TASKS, Env, EnvConfig, Gathering, GatheringConfig, LatteArt, LatteArtConfig,  # noqa: E402
                   Pouring, PouringConfig, SmokeArt, SmokeArtConfig, SmokeCirculation, SmokeCirculationConfig, SmokeMixing,
                   SmokeMixingConfig, SmokeTransport, SmokeTransportConfig)
from .optim import ExpandingWindow, OptimResult, cem, optimize_actions  # noqa: E402
# --- end sim-envs ---
