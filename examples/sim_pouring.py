"""Pouring: tip water out of a rotating cup (three kinematic box walls, MLS-MPM) into a receiving cup.

    python examples/sim_pouring.py [--large] [--iterations 200]
"""
from sim.envs import Pouring, PouringConfig

from sim_run import run


def main(argv=None) -> dict:
    return run("pouring", Pouring, PouringConfig(),
               PouringConfig(n_grid=128, dt=2.5e-4, substeps_per_step=40, horizon=60, segment_substeps=400),
               __doc__, argv)


if __name__ == "__main__":
    main()
