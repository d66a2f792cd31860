"""FluidLab-style tasks with one API: ``reset(seed) / step(action) / loss() / render()`` plus a
differentiable batched ``rollout_loss(actions, mask)`` for trajectory optimisation."""
from sim.envs.base import Env, EnvConfig
from sim.envs.circulation import SmokeCirculation, SmokeCirculationConfig
from sim.envs.gathering import Gathering, GatheringConfig
from sim.envs.latte_art import LatteArt, LatteArtConfig
from sim.envs.mixing import SmokeMixing, SmokeMixingConfig
from sim.envs.mpm_env import MPMEnv, MPMEnvConfig
from sim.envs.pouring import Pouring, PouringConfig
from sim.envs.render import field_to_rgb
from sim.envs.smoke_art import SmokeArt, SmokeArtConfig
from sim.envs.smoke_env import SmokeEnv, SmokeEnvConfig
from sim.envs.transport import SmokeTransport, SmokeTransportConfig

TASKS = {
    "circulation": SmokeCirculation,
    "smoke_art": SmokeArt,
    "transport": SmokeTransport,
    "mixing": SmokeMixing,
    "gathering": Gathering,
    "latte_art": LatteArt,
    "pouring": Pouring,
}

__all__ = ["Env", "EnvConfig", "SmokeEnv", "SmokeEnvConfig", "SmokeCirculation", "SmokeCirculationConfig",
           "SmokeArt", "SmokeArtConfig", "SmokeTransport", "SmokeTransportConfig", "SmokeMixing",
           "SmokeMixingConfig", "MPMEnv", "MPMEnvConfig", "Gathering", "GatheringConfig", "LatteArt",
           "LatteArtConfig", "Pouring", "PouringConfig", "field_to_rgb", "TASKS"]
