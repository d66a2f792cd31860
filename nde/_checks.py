"""Argument checks shared by nde's public APIs: each returns the value it accepted, or raises an error
whose message names the argument (pass the name as it should read, e.g. ``"`max_steps`"``)."""
from __future__ import annotations

import math
import numbers

import torch


def number(value, name: str, *, positive: bool = False, allow_inf: bool = False) -> float:
    """A real number (a Python or numpy number, or a one-element tensor; not a string or bool), checked:
    finite unless ``allow_inf``, ``> 0`` with ``positive``, else ``>= 0``; otherwise a ``ValueError``."""
    if torch.is_tensor(value) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if value != value or (value == math.inf and not allow_inf) or value == -math.inf:
        raise ValueError(f"{name} must be finite, got {value}")
    if (positive and not value > 0) or value < 0:
        raise ValueError(f"{name} must be {'> 0' if positive else '>= 0'}, got {value}")
    return value


def positive_int(value, name: str) -> int:
    """A positive integer (a Python or numpy int, not a bool); anything else is a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def sample_count(value, name: str = "n") -> int:
    """A number of samples: a non-negative integer (a Python or numpy int, not a bool; 0 asks for an empty sample);
    anything else is a ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return int(value)


def flag(value, name: str) -> bool:
    """A bool (``"no"`` is not False); anything else is a ``TypeError``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


def floating_dtype(primary, *others) -> torch.dtype:
    """The floating-point dtype for tensors built from ``primary`` and ``others`` (tensors, numbers or nested
    lists): ``primary``'s dtype if it is floating-point, else the promoted dtype of the floating-point ones among
    ``others``, else torch's default dtype. Integer input never truncates the other arguments."""
    primary = torch.as_tensor(primary)
    if primary.is_floating_point():
        return primary.dtype
    floating = [v.dtype for v in map(torch.as_tensor, others) if v.is_floating_point()]
    if not floating:
        return torch.get_default_dtype()
    dtype = floating[0]
    for other in floating[1:]:
        dtype = torch.promote_types(dtype, other)
    return dtype


def finite_tensor(value: torch.Tensor, name: str) -> torch.Tensor:
    """``value`` if every entry is finite, else a ``ValueError`` naming ``name`` and counting the bad entries."""
    bad = int((~torch.isfinite(value)).sum())
    if bad:
        raise ValueError(f"{name} must be finite, got {bad} NaN or infinite entries")
    return value


def check_generator(value, name: str = "generator"):
    """``value`` if it is a ``torch.Generator`` or None; anything else (a seed, say) a ``TypeError`` naming ``name``."""
    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"`{name}` must be a torch.Generator or None, got {type(value).__name__}")
    return value


def check_resolvable_tolerances(rtol, atol, dtype: torch.dtype) -> None:
    """Adaptive steps need a tolerance the state's dtype can resolve: with ``rtol`` and ``atol`` (floats, or tensors
    by their smallest entry) both below the dtype's eps, the error estimate is round-off noise and the tolerance is
    met only by chance, after up to ``max_steps`` steps. A ``ValueError`` naming both, else nothing."""
    eps = torch.finfo(dtype).eps
    rtol, atol = (float(tol.min()) if torch.is_tensor(tol) else tol for tol in (rtol, atol))
    if rtol < eps and atol < eps:
        raise ValueError(f"`rtol`={rtol:g} and `atol`={atol:g} are both below the resolution of {dtype} "
                         f"(eps {eps:.2g}): adaptive steps could never meet them; pass tolerances of at least "
                         f"{eps:.2g}, or a wider dtype")


def first_order_only(what: str, remedy: str = "use the 'direct' gradient mode (autograd through the solver) for them") -> None:
    """Raise in a backward that runs with ``create_graph=True`` but computes a gradient that records nothing of how it
    depends on the inputs (an adjoint's own solve, the implicit-function correction of an event time): a second
    derivative through it would come out silently wrong (it was 0). ``what`` names it, ``remedy`` ends the message."""
    if torch.is_grad_enabled():
        raise RuntimeError(f"second derivatives (create_graph=True) through {what} are not supported; {remedy}")
