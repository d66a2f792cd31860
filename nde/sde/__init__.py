"""nde.sde: stochastic differential equations on the nde stepping infrastructure.

Public API: :func:`sdeint`, :func:`sdeint_adjoint` (drop-in for torchsde 0.2.6),
:func:`solve_sde` (returns the core's :class:`nde.Solution`), and the Brownian paths
:class:`BrownianPath`, :class:`BrownianGrid`, :class:`BrownianTree`, and torchsde's base classes
:class:`BaseSDE`, :class:`SDEIto`, :class:`SDEStratonovich`.
Failures raise the core's :class:`nde.SolverError`.
"""
from .api import sdeint, sdeint_adjoint, solve_sde
from .brownian import BrownianGrid, BrownianPath, BrownianTree
from .methods import METHOD_NAMES
from .protocol import BaseSDE, SDEIto, SDEStratonovich

__all__ = ["sdeint", "sdeint_adjoint", "solve_sde", "BrownianPath", "BrownianGrid", "BrownianTree",
           "BaseSDE", "SDEIto", "SDEStratonovich", "METHOD_NAMES"]
