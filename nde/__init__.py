"""nde: neural and differentiable differential equations in PyTorch.

Core ODE API: :func:`solve_ode` (returns a :class:`Solution`), and the torchdiffeq drop-ins
:func:`odeint` / :func:`odeint_adjoint`.
"""

from .api import odeint, odeint_adjoint, odeint_dense, odeint_event, solve_ode
from .controller import IController, PIController
from .errors import SolverError, Status
from .solution import Solution
from .tableaus import TABLEAUS, ButcherTableau
from .sde import BrownianGrid, BrownianPath, BrownianTree, sdeint, sdeint_adjoint, solve_sde

__version__ = "0.1.0"

__all__ = ["odeint", "odeint_adjoint", "odeint_dense", "odeint_event", "solve_ode", "Solution", "SolverError", "Status",
           "PIController", "IController", "ButcherTableau", "TABLEAUS",
           "sdeint", "sdeint_adjoint", "solve_sde", "BrownianPath", "BrownianGrid", "BrownianTree"]

# Subpackages: solver-heuristic regularisers, models, diffusion, transport, training, metrics.
from . import diffusion, distill, interpolants, metrics, models, regularize, training  # noqa: E402
