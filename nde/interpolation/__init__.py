"""Control-path interpolations for neural CDEs: each returns a :class:`ControlPath`
(piecewise cubic, evaluated on device without host syncs)."""
from nde.interpolation.cubic import natural_cubic_spline
from nde.interpolation.hermite import hermite_cubic_backward
from nde.interpolation.linear import linear_interpolation, rectilinear_interpolation
from nde.interpolation.path import ControlPath

__all__ = ["ControlPath", "linear_interpolation", "rectilinear_interpolation", "natural_cubic_spline",
           "hermite_cubic_backward"]
