"""Smoke art: reproduce a smoke pattern drawn by a scripted sine-wave jet (latte-art recipe).

    python examples/sim_smoke_art.py [--large] [--iterations 200]
"""
from sim.envs import SmokeArt, SmokeArtConfig

from sim_run import run


def main(argv=None) -> dict:
    return run("smoke_art", SmokeArt, SmokeArtConfig(),
               SmokeArtConfig(resolution=128, jet_radius=12.0, horizon=120, jacobi_iters=100, wave_period=60.0, dt=2.0),
               __doc__, argv)


if __name__ == "__main__":
    main()
