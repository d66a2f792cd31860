"""Failure reporting: status codes inside the loop, `SolverError` at the API edge."""
from __future__ import annotations

import enum


class Status(enum.IntEnum):
    """Per-sample outcome of a solve (``Solution.status``)."""

    SUCCESS = 0
    MAX_STEPS = 1        #: `max_steps` accepted+rejected steps were taken before the end time
    DT_UNDERFLOW = 2     #: the step size became too small to advance t (stiffness or blow-up)
    NONFINITE = 3        #: the state became NaN/inf and shrinking the step could not recover it
    NO_EVENT = 4         #: an event solve's time overflowed before the event function crossed zero

    def describe(self) -> str:
        return {
            Status.SUCCESS: "success",
            Status.MAX_STEPS: "maximum number of steps exceeded",
            Status.DT_UNDERFLOW: "step size underflow (the problem may be stiff or blowing up)",
            Status.NONFINITE: "non-finite state (NaN or inf) that step-size reduction could not remove",
            Status.NO_EVENT: "the event function did not cross zero before time overflowed",
        }[self]


class SolverError(RuntimeError):
    """Raised when a solve fails; says what happened, at which t, with which step size."""

    def __init__(self, status: Status, t: float, dt: float, detail: str = "", *, throw_hint: bool = True):
        """``throw_hint``: end the message with how to get status codes instead (solvers with ``throw``)."""
        self.status, self.t, self.dt = Status(status), float(t), float(dt)
        message = f"{self.status.describe()} at t={self.t:.6g} with step size dt={self.dt:.3g}"
        if detail:
            message += f" ({detail})"
        message += "."
        if throw_hint:
            message += " Pass throw=False to get per-sample status codes instead of this error."
        super().__init__(message)
