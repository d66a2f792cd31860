"""Small argument checks shared across ``sim``: which values count as ints and real numbers.

A numpy integer (``np.int64(3)``) is an int wherever a Python int is; a bool is not (``True``
is not a step count). The callers keep their own messages, which name the argument.
"""
import dataclasses
import numbers


def is_int(value) -> bool:
    """True for a Python or numpy integer; False for a bool, a float or anything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value) -> bool:
    """True for a Python or numpy int or float; False for a bool, a string, a tensor or anything else."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def plain_ints(config) -> None:
    """Replace the numpy-integer fields of the frozen dataclass ``config`` by Python ints (Warp
    packs kernel arguments and torch builds shapes from them), after the caller checked them."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if is_int(value) and not isinstance(value, int):  # numpy ints; IntEnums stay
            object.__setattr__(config, field.name, int(value))
