"""nde.sde: stochastic differential equations on the nde stepping infrastructure.

Public API: :func:`sdeint`, :func:`sdeint_adjoint` (drop-in for torchsde 0.2.6),
:func:`solve_sde` (returns an :class:`SDESolution`), :class:`BrownianPath`.
"""
from .api import SDESolution, SDESolverError, sdeint, sdeint_adjoint, solve_sde
from .brownian import BrownianPath
from .methods import METHOD_NAMES

__all__ = ["sdeint", "sdeint_adjoint", "solve_sde", "SDESolution", "SDESolverError", "BrownianPath",
           "METHOD_NAMES"]
