"""Gathering: stir water with a paddle (MLS-MPM + soft contact) to push a floating rigid box to a goal.

    python examples/sim_gathering.py [--large] [--iterations 200]
"""
from sim.envs import Gathering, GatheringConfig

from sim_run import run


def main(argv=None) -> dict:
    return run("gathering", Gathering, GatheringConfig(),
               GatheringConfig(n_grid=128, dt=2.5e-4, substeps_per_step=40, horizon=60, segment_substeps=400),
               __doc__, argv)


if __name__ == "__main__":
    main()
