"""Smoke mixing: stir two gases with a central jet until the coarse-bin concentration is uniform.

    python examples/sim_mixing.py [--large] [--iterations 200]
"""
from sim.envs import SmokeMixing, SmokeMixingConfig

from sim_run import run


def main(argv=None) -> dict:
    return run("mixing", SmokeMixing, SmokeMixingConfig(),
               SmokeMixingConfig(resolution=128, jet_radius=24.0, horizon=120, jacobi_iters=100, bin_size=16, dt=2.0),
               __doc__, argv)


if __name__ == "__main__":
    main()
