"""Smoke transport: push a puff of smoke to a goal point with a fixed jet.

    python examples/sim_transport.py [--large] [--iterations 200]
"""
from sim.envs import SmokeTransport, SmokeTransportConfig

from sim_run import run


def main(argv=None) -> dict:
    return run("transport", SmokeTransport, SmokeTransportConfig(),
               SmokeTransportConfig(resolution=128, jet_radius=16.0, horizon=120, jacobi_iters=100, dt=2.0),
               __doc__, argv)


if __name__ == "__main__":
    main()
