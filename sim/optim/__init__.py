"""Trajectory optimisation through the differentiable environments: Adam with FluidLab's
temporally expanding loss window and action freezing, and a CEM baseline."""
from sim.optim.cem import cem
from sim.optim.trajectory import OptimResult, optimize_actions
from sim.optim.window import ExpandingWindow

__all__ = ["ExpandingWindow", "OptimResult", "optimize_actions", "cem"]
