"""Smoke circulation: steer an air-conditioner jet's smoke into a target zone, keep another clean.

    python examples/sim_circulation.py [--large] [--iterations 200]
"""
from sim.envs import SmokeCirculation, SmokeCirculationConfig

from sim_run import run


def main(argv=None) -> dict:
    return run("circulation", SmokeCirculation, SmokeCirculationConfig(),
               SmokeCirculationConfig(resolution=128, jet_radius=12.0, horizon=120, jacobi_iters=100, dt=2.0),
               __doc__, argv)


if __name__ == "__main__":
    main()
