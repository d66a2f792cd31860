"""FluidLab-style tasks with one API: ``reset(seed) / step(action) / loss() / render()`` plus a
differentiable batched ``rollout_loss(actions, mask)`` for trajectory optimisation."""
from sim.envs.base import Env, EnvConfig
from sim.envs.circulation import SmokeCirculation, SmokeCirculationConfig
from sim.envs.mixing import SmokeMixing, SmokeMixingConfig
from sim.envs.render import field_to_rgb
from sim.envs.smoke_art import SmokeArt, SmokeArtConfig
from sim.envs.smoke_env import SmokeEnv, SmokeEnvConfig
from sim.envs.transport import SmokeTransport, SmokeTransportConfig

TASKS = {
    "circulation": SmokeCirculation,
    "smoke_art": SmokeArt,
    "transport": SmokeTransport,
    "mixing": SmokeMixing,
}

__all__ = ["Env", "EnvConfig", "SmokeEnv", "SmokeEnvConfig", "SmokeCirculation", "SmokeCirculationConfig",
           "SmokeArt", "SmokeArtConfig", "SmokeTransport", "SmokeTransportConfig", "SmokeMixing",
           "SmokeMixingConfig", "field_to_rgb", "TASKS"]
