"""Latte art: move a milk injector (MLS-MPM particle pool) over coffee to redraw a target pattern.

    python examples/sim_latte_art.py [--large] [--iterations 200]
"""
from sim.envs import LatteArt, LatteArtConfig

from sim_run import run


def main(argv=None) -> dict:
    return run("latte_art", LatteArt, LatteArtConfig(),
               LatteArtConfig(n_grid=128, dt=2.5e-4, substeps_per_step=40, horizon=60, flux=16, segment_substeps=400),
               __doc__, argv)


if __name__ == "__main__":
    main()
