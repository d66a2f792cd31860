"""Segment checkpointing for Warp rollouts (Griewank-style one-level checkpointing).

The forward pass keeps only the state at the start of each segment of ``segment_length``
steps. The backward pass walks the segments in reverse: restore the segment's start state
and recompute the segment into per-step buffers (as a fresh ``wp.Tape`` recording would),
seed the adjoint of its end state (carried from the later segment) plus any observation
adjoints inside it, run the segment's adjoint (``tape.backward()`` or replayed adjoint
launches), and carry the adjoint of its start state to the earlier segment. Memory is ``segment_length`` per-step buffers plus ``n_steps /
segment_length`` checkpoints, i.e. O(sqrt(n_steps)) with the suggested length, for one
extra forward pass (less one segment: the forward pass records its last segment, which
the backward pass uses first; with a single segment nothing is recomputed); the arithmetic is the same as storing everything, so gradients are
bitwise identical (on CPU, where atomics are serial).

Parameter and control gradients accumulate across segments, so the sweep never calls
``tape.zero()`` (which would clear them); the simulator zeroes its own segment buffers.
"""
import math
from dataclasses import dataclass
from typing import Protocol

from ._checks import is_int, is_real, plain_ints


@dataclass(frozen=True)
class SegmentPlan:
    """Split ``n_steps`` steps into consecutive segments of at most ``segment_length``."""
    n_steps: int
    segment_length: int

    def __post_init__(self):
        for name in ("n_steps", "segment_length"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        plain_ints(self)

    @property
    def segments(self) -> list:
        """``[(start, stop), ...]`` in forward order."""
        return [(a, min(a + self.segment_length, self.n_steps))
                for a in range(0, self.n_steps, self.segment_length)]


def suggest_segment_length(n_steps: int, checkpoint_bytes: int, step_bytes: int) -> int:
    """Segment length minimising ``2 S step_bytes + (n_steps / S) checkpoint_bytes``:
    ``S* = sqrt(n_steps checkpoint_bytes / (2 step_bytes))``, clipped to [1, n_steps].
    ``n_steps`` is an int >= 1, the byte counts finite numbers > 0."""
    if not is_int(n_steps) or n_steps < 1:
        raise ValueError(f"n_steps must be an int >= 1, got {n_steps!r}")
    for name, value in (("checkpoint_bytes", checkpoint_bytes), ("step_bytes", step_bytes)):
        if not (is_real(value) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    n_steps = int(n_steps)
    s = math.sqrt(n_steps * checkpoint_bytes / (2.0 * step_bytes))
    return max(1, min(n_steps, int(round(s))))


class Replayable(Protocol):
    """What a simulator provides to be differentiated segment by segment."""

    def prepare_segment(self, segment: int, start: int, stop: int) -> None:
        """Make the segment buffers hold the forward values of steps ``start .. stop``
        (restore the checkpoint and recompute, unless the forward pass left them there) and
        zero their adjoints."""

    def seed_segment_adjoint(self, start: int, stop: int) -> None:
        """Add the carried end-state adjoint and the observation adjoints of the segment."""

    def adjoint_segment(self, start: int, stop: int) -> None:
        """Run the adjoint of steps ``stop-1 .. start`` (e.g. ``tape.backward()``)."""

    def carry_start_adjoint(self, start: int) -> None:
        """Save the adjoint of the segment's start state for the earlier segment."""


def backward_sweep(sim: Replayable, plan: SegmentPlan) -> None:
    """Run the reverse segment sweep described in the module docstring. Parameter and
    control adjoints accumulate across segments (never zeroed here, no ``tape.zero()``)."""
    for index, (start, stop) in reversed(list(enumerate(plan.segments))):
        sim.prepare_segment(index, start, stop)
        sim.seed_segment_adjoint(start, stop)
        sim.adjoint_segment(start, stop)
        sim.carry_start_adjoint(start)
