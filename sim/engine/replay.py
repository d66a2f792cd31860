"""Recorded forward and adjoint launches of one simulation step, replayed with a new step index.

``wp.launch`` and ``wp.Tape.backward`` pack every kernel argument in Python on each call
(50–200 µs for the 20-argument MPM kernels on CPU, about half of the backward time at small
sizes). The per-step buffers of a segment are fixed, so each substep slot records its
launches once (``wp.launch(..., record_cmd=True)``, also for the adjoint kernels with the
same ``.grad`` arrays a ``wp.Tape`` would pass) and replays them, changing only the step
index. Replaying the adjoint launches in reverse order is exactly what ``Tape.backward``
does for the same launches, so gradients are bitwise identical to a tape.
"""
import warp as wp

_ADJOINT_MAP = wp.Tape()  # only its get_adjoint() is used: the Tape's own argument mapping


class RecordedStep:
    """Launches of one step slot; ``forward(s)`` runs them, ``adjoint(s)`` runs their
    adjoints in reverse. Kernels with an ``int`` argument named ``s`` get the step index."""

    def __init__(self, device):
        self.device = device
        self._items = []

    def add(self, kernel, dim: int, args: list) -> None:
        """Record ``kernel`` over ``dim`` threads with ``args`` (accumulation targets such as
        grid mass must be zeroed by the caller before the forward replay)."""
        fwd = wp.launch(kernel, dim=dim, inputs=args, device=self.device, record_cmd=True)
        adj_args = [_ADJOINT_MAP.get_adjoint(a) for a in args]
        adj = wp.launch(kernel, dim=dim, inputs=args, adj_inputs=adj_args, adjoint=True,
                        device=self.device, record_cmd=True)
        has_step = any(arg.label == "s" for arg in kernel.adj.args)
        self._items.append((fwd, adj, has_step))
        _ADJOINT_MAP.gradients.clear()

    def forward(self, s: int) -> None:
        for fwd, _, has_step in self._items:
            if has_step:
                fwd.set_param_by_name("s", s)
            fwd.launch()

    def adjoint(self, s: int) -> None:
        for _, adj, has_step in reversed(self._items):
            if has_step:
                adj.set_param_by_name("s", s)
            adj.launch()
