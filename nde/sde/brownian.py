"""Brownian sample paths that answer increments over any interval, in any order.

:class:`BrownianPath` stores an exact sample of a Brownian motion ``W`` (and, on request,
its running time integral ``I(t) = int_{t0}^t W_u du``) at every time it has been asked
about. A query at a new time is drawn exactly from the conditional law given the
neighbouring stored points (Brownian bridge; with the time integral, the joint Gaussian
bridge of ``(W, I)``). Because every answer is stored, a backward pass that asks for
the same intervals gets exactly the noise of the forward pass.

Why not torchsde's ``BrownianInterval``: measured on this machine (batch 512 x 16,
1000 sequential steps), it costs ~1 ms per forward query and ~1.7 ms per backward query,
about ten times the cost of drawing the normals themselves (torchsde issues #36, #109,
#141 report the same slowdowns). The solvers here ask :meth:`BrownianPath.increments`
for the whole step grid at once, which draws it with one ``randn`` and one ``cumsum``.

Any object with torchsde's protocol (``bm(ta, tb)`` returns the increment, ``bm.shape``)
is accepted by the solvers too, torchsde's ``BrownianInterval`` included.
"""
from __future__ import annotations

import bisect
import math
import numbers
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

LEVY_AREAS = ("none", "space-time")
_RECENT_POINTS = 8      # points a BrownianTree keeps answered (a step's ends are asked for repeatedly)


class _SeededNoise:
    """What both paths share: the shape, dtype and device of ``W``, the Lévy-area option, the seed
    (``entropy``; ``None`` draws one from torch's global generator) and a generator on the device."""

    def __init__(self, size: Sequence[int], dtype: Optional[torch.dtype], device: Optional[torch.device | str],
                 entropy: Optional[int], levy_area_approximation: str):
        if levy_area_approximation not in LEVY_AREAS:
            raise ValueError(f"levy_area_approximation must be one of {LEVY_AREAS}, got {levy_area_approximation!r}.")
        size = (size,) if isinstance(size, int) and not isinstance(size, bool) else size
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in size):
            raise ValueError(f"size must be a sequence of non-negative ints, got {size!r}.")
        self.shape = torch.Size(size)
        self.dtype = dtype if dtype is not None else torch.get_default_dtype()
        if not self.dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating-point dtype, got {self.dtype}.")
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.levy_area_approximation = levy_area_approximation
        self._have_area = levy_area_approximation == "space-time"
        if entropy is None:
            entropy = int(torch.randint(0, 2 ** 62, (), dtype=torch.int64))
        if not isinstance(entropy, numbers.Integral) or isinstance(entropy, bool) or not 0 <= entropy < 2 ** 63:
            raise ValueError(f"entropy must be an int in [0, 2**63), got {entropy!r}.")
        self.entropy = int(entropy)
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(self.entropy)

    def _randn(self) -> torch.Tensor:
        return torch.randn(self.shape, generator=self._generator, dtype=self.dtype, device=self.device)


class _IntervalNoise(_SeededNoise):
    """A path on ``[t0, t1]`` answering ``bm(ta, tb)``: the interval and the checks of a query."""

    def __init__(self, t0: float, t1: float, size: Sequence[int], dtype: Optional[torch.dtype],
                 device: Optional[torch.device | str], entropy: Optional[int], levy_area_approximation: str):
        t0, t1 = _as_float(t0, "t0"), _as_float(t1, "t1")
        if not t0 < t1:
            raise ValueError(f"{type(self).__name__} needs t0 < t1, got t0={t0}, t1={t1}.")
        super().__init__(size, dtype, device, entropy, levy_area_approximation)
        self._t0, self._t1 = t0, t1

    @property
    def t0(self) -> float:
        return self._t0

    @property
    def t1(self) -> float:
        return self._t1

    def _query(self, ta, tb, return_U: bool, return_A: bool) -> tuple[float, float]:
        """``(ta, tb)`` as floats (``bm(t)`` means ``bm(t0, t)``), after the checks every query needs."""
        if return_A:
            raise ValueError(f"{type(self).__name__} does not provide the full Lévy area (return_A); use "
                             "torchsde.BrownianInterval with levy_area_approximation='davie' or 'foster'.")
        if tb is None:
            ta, tb = self._t0, ta
        ta, tb = _as_float(ta, "ta"), _as_float(tb, "tb")
        if ta > tb:
            raise ValueError(f"Brownian query needs ta <= tb, got ta={ta}, tb={tb}.")
        if return_U and not self._have_area:
            raise ValueError("return_U=True needs levy_area_approximation='space-time'.")
        return ta, tb


class BrownianPath(_IntervalNoise):
    """An exact, reproducible Brownian sample path on ``[t0, t1]``.

    Args:
        t0, t1: the interval (floats, ``t0 < t1``).
        size: shape of ``W(t)``, normally ``(batch, noise_channels)``.
        dtype, device: of the returned tensors.
        entropy: integer seed; the same seed and the same sequence of queries give the
            same path, whether the path is extended a grid at a time (``increments``) or one
            interval at a time. ``None`` draws a seed from torch's global generator.
        levy_area_approximation: ``"none"`` or ``"space-time"``; the latter also answers
            the space-time Lévy area through ``return_U=True`` (torchsde's convention).
        tol: query times closer than ``tol * (t1 - t0)`` to a stored time are snapped to it.

    Calling ``bm(ta, tb)`` returns ``W(tb) - W(ta)`` of shape ``size``; with
    ``return_U=True`` it also returns ``U = int_ta^tb (W_u - W_ta) du`` (same shape).
    """

    def __init__(self, t0: float, t1: float, size: Sequence[int], dtype: Optional[torch.dtype] = None,
                 device: Optional[torch.device | str] = None, entropy: Optional[int] = None,
                 levy_area_approximation: str = "none", tol: float = 1e-12):
        tol = _as_float(tol, "tol")
        if not 0 <= tol <= 1e-6:
            raise ValueError(f"tol (the relative snapping distance of query times) must be in [0, 1e-6], got {tol}.")
        super().__init__(t0, t1, size, dtype, device, entropy, levy_area_approximation)
        t0, t1 = self._t0, self._t1
        self._snap = tol * (t1 - t0)
        zero = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        self._times: list[float] = [t0]
        self._w: list[torch.Tensor] = [zero]        # W(t_k)
        self._i: list[torch.Tensor] = [zero]        # I(t_k) = int_{t0}^{t_k} W du (only with Lévy area)

    # ------------------------------------------------------------------ public
    def __call__(self, ta, tb=None, return_U: bool = False, return_A: bool = False):
        ta, tb = self._query(ta, tb, return_U, return_A)
        ka, kb = self._index(ta), self._index(tb)
        dw = self._w[kb] - self._w[ka]
        if not return_U:
            return dw
        h = self._times[kb] - self._times[ka]
        return dw, self._i[kb] - self._i[ka] - h * self._w[ka]

    def increments(self, grid: Sequence[float], return_U: bool = False):
        """Increments over consecutive intervals of ``grid`` (floats, increasing).

        Returns ``dW`` of shape ``(len(grid) - 1, *size)`` (and ``U`` of the same shape with
        ``return_U``). On a fresh part of the path this is one vectorised random walk, with the same
        numbers as querying the intervals one by one.
        """
        grid = [_as_float(t, "grid[i]") for t in grid]
        if len(grid) < 2 or any(b <= a for a, b in zip(grid[:-1], grid[1:])):
            raise ValueError("BrownianPath.increments needs a grid of at least two strictly increasing times.")
        if return_U and not self._have_area:
            raise ValueError("return_U=True needs levy_area_approximation='space-time'.")
        self._check_range(grid[0])
        self._check_range(grid[-1])
        if abs(grid[0] - self._times[-1]) <= self._snap:
            fresh = self._apart(grid[1:])
            if len(fresh) == len(grid) - 1:
                return self._extend(fresh, return_U)
            if fresh:   # a cell shorter than the snapping distance (torchsde's ~1e-16 last step): its end
                self._extend(fresh, False)   # snaps to its start, as a query of that one interval does
        pieces = [self(a, b, return_U=return_U) for a, b in zip(grid[:-1], grid[1:])]
        if return_U:
            return torch.stack([p[0] for p in pieces]), torch.stack([p[1] for p in pieces])
        return torch.stack(pieces)

    def __repr__(self) -> str:
        return (f"BrownianPath(t0={self._t0}, t1={self._t1}, size={tuple(self.shape)}, "
                f"levy_area_approximation={self.levy_area_approximation!r}, stored_points={len(self._times)})")

    # ----------------------------------------------------------------- private
    def _check_range(self, t: float) -> None:
        if t < self._t0 - self._snap or t > self._t1 + self._snap:
            raise ValueError(f"Brownian query time {t} lies outside the path's interval [{self._t0}, {self._t1}].")

    def _apart(self, times: list[float]) -> list[float]:
        """``times`` (increasing, after the last stored point) without those within the snapping distance of
        the previous kept one: the points that queries in this order would add."""
        kept, last = [], self._times[-1]
        for t in times:
            if t - last > self._snap:
                kept.append(t)
                last = t
        return kept

    def _index(self, t: float) -> int:
        """Index of the stored point at time ``t``, creating it if needed."""
        self._check_range(t)
        k = bisect.bisect_left(self._times, t)
        if k < len(self._times) and self._times[k] - t <= self._snap:
            return k
        if k > 0 and t - self._times[k - 1] <= self._snap:
            return k - 1
        if k == len(self._times):
            self._extend([t], False)
            return k
        self._bridge(k, t)
        return k

    def _extend(self, times: list[float], return_U: bool):
        """Append points after the last stored one by a random walk; return its increments."""
        t_last = self._times[-1]
        h = torch.tensor([b - a for a, b in zip([t_last] + times[:-1], times)], dtype=self.dtype)
        h = h.to(self.device, non_blocking=True)  # no stream synchronisation on a GPU
        h = h.reshape(-1, *([1] * len(self.shape)))
        # Drawn point by point (dW then, with the area, H of each point): one draw of n points would
        # give other numbers than n draws of one (CPU's blocked normal fill, GPU counter offsets), and
        # the path must not depend on how its queries are grouped.
        z = torch.empty(len(times), *self.shape, dtype=self.dtype, device=self.device)
        z_area = torch.empty_like(z) if self._have_area else None
        for k in range(len(times)):
            z[k].normal_(generator=self._generator)
            if z_area is not None:
                z_area[k].normal_(generator=self._generator)
        dw = z * h.sqrt()
        w = _running_sum(self._w[-1], dw)
        u = None
        if self._have_area:
            # U_k = h_k (dW_k / 2 + H_k),  H_k ~ N(0, h_k / 12) independent of dW_k.
            u = h * (0.5 * dw + z_area * (h / 12).sqrt())
            w_prev = torch.stack([self._w[-1]] + w[:-1])
            self._i.extend(_running_sum(self._i[-1], u + h * w_prev))
        self._times.extend(times)
        self._w.extend(w)
        return (dw, u) if return_U else dw

    def _bridge(self, k: int, t: float) -> None:
        """Insert a point at ``t`` between stored points ``k - 1`` and ``k``."""
        ta, tb = self._times[k - 1], self._times[k]
        z = self._randn()
        z_area = self._randn() if self._have_area else None
        ends = (self._w[k - 1], self._i[k - 1] if self._have_area else None,
                self._w[k], self._i[k] if self._have_area else None)
        w, i = _bridge_point(*ends, ta, tb, t, z, z_area)
        self._times.insert(k, t)
        self._w.insert(k, w)
        if self._have_area:
            self._i.insert(k, i)


class BrownianGrid(_SeededNoise):
    """A Brownian sample path on a fixed grid, with nothing stored: memory independent of its length.

    ``W`` is defined at the nodes ``t_0 < t_1 < ... < t_n`` only. The increment over cell ``k`` is

        ``dW_k = sqrt(h_k) Z_k``,  ``h_k = t_{k+1} - t_k``,

    where ``Z_k ~ N(0, I)`` is drawn by a generator re-seeded with a hash of ``(entropy, k)``
    (a counter-based stream, as in diffrax's ``UnsafeBrownianPath`` or JAX's ``fold_in``). With
    ``levy_area_approximation="space-time"`` the same stream's next draw ``Z'_k`` gives
    ``U_k = int_{t_k}^{t_{k+1}} (W_u - W_{t_k}) du = h_k (dW_k / 2 + sqrt(h_k / 12) Z'_k)``, the exact
    joint law. So an increment is recomputed exactly whenever it is asked for, in any order: a
    backward pass replays the forward pass's noise without the path keeping any of it. This is the
    default path of fixed-step solves (``bm=None``), which makes the reversible-Heun and backsolve
    adjoints' memory independent of the number of steps.

    Args:
        times: the grid nodes (increasing floats or a 1-D tensor), normally the solver's step nodes.
        size, dtype, device, entropy, levy_area_approximation: as for :class:`BrownianPath`.

    ``bm(ta, tb)`` answers any interval whose ends are nodes (within ``1e-12`` of the grid's span),
    summing the cells in between; a time off the grid is an error (use :class:`BrownianPath`, which
    bridges). ``bm.increment(k)`` is cell ``k`` directly.
    """

    def __init__(self, times, size: Sequence[int], dtype: Optional[torch.dtype] = None,
                 device: Optional[torch.device | str] = None, entropy: Optional[int] = None,
                 levy_area_approximation: str = "none"):
        times = [_as_float(t, "times[i]") for t in (times.tolist() if torch.is_tensor(times) else times)]
        if len(times) < 2 or any(b <= a for a, b in zip(times[:-1], times[1:])):
            raise ValueError("BrownianGrid needs at least two strictly increasing times.")
        super().__init__(size, dtype, device, entropy, levy_area_approximation)
        self.times = times
        self._snap = 1e-12 * (times[-1] - times[0])

    @property
    def t0(self) -> float:
        return self.times[0]

    @property
    def t1(self) -> float:
        return self.times[-1]

    def increment(self, k: int, return_U: bool = False):
        """``dW_k`` over cell ``k`` (``[t_k, t_{k+1}]``), and ``U_k`` with ``return_U``; shape ``size``."""
        if not 0 <= k < len(self.times) - 1:
            raise IndexError(f"BrownianGrid has cells 0..{len(self.times) - 2}, got {k}.")
        if return_U and not self._have_area:
            raise ValueError("return_U=True needs levy_area_approximation='space-time'.")
        h = self.times[k + 1] - self.times[k]
        self._generator.manual_seed(_stream_seed(self.entropy, k))
        dw = self._randn().mul_(math.sqrt(h))
        if not return_U:
            return dw
        return dw, h * (0.5 * dw + math.sqrt(h / 12) * self._randn())

    def __call__(self, ta, tb=None, return_U: bool = False, return_A: bool = False):
        if return_A:
            raise ValueError("BrownianGrid does not provide the full Lévy area (return_A).")
        if tb is None:
            ta, tb = self.t0, ta
        a, b = self._node(_as_float(ta, "ta")), self._node(_as_float(tb, "tb"))
        if a > b:
            raise ValueError(f"Brownian query needs ta <= tb, got ta={ta}, tb={tb}.")
        if b == a + 1:
            return self.increment(a, return_U)
        dw = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        u = torch.zeros_like(dw) if return_U else None
        for k in range(a, b):   # U over [t_a, t_b] = sum of U_k + h_k (W_{t_k} - W_{t_a})
            piece = self.increment(k, return_U)
            if return_U:
                u = u + piece[1] + (self.times[k + 1] - self.times[k]) * dw
                piece = piece[0]
            dw = dw + piece
        return (dw, u) if return_U else dw

    def __repr__(self) -> str:
        return (f"BrownianGrid(t0={self.t0}, t1={self.t1}, cells={len(self.times) - 1}, size={tuple(self.shape)}, "
                f"levy_area_approximation={self.levy_area_approximation!r})")

    def _node(self, t: float) -> int:
        """Index of the node at ``t``: an exact match, else the nearest node within the snap distance
        (torchsde's grids can end with a cell of ~1e-16, whose two nodes must stay apart)."""
        k = bisect.bisect_left(self.times, t)
        near = [j for j in (k - 1, k) if 0 <= j < len(self.times) and abs(self.times[j] - t) <= self._snap]
        if near:
            return min(near, key=lambda j: abs(self.times[j] - t))
        raise ValueError(f"BrownianGrid answers intervals between its grid times only; {t} is not one of them "
                         f"(grid [{self.t0}, {self.t1}] with {len(self.times) - 1} cells). Pass an "
                         "nde.BrownianPath as bm to query arbitrary times.")


class BrownianTree(_IntervalNoise):
    """A virtual Brownian tree on ``[t0, t1]``: any time, any order, memory independent of the queries.

    ``W`` is defined by dyadic bisection (Lévy's construction; the virtual Brownian tree of Gaines &
    Lyons 1997 and Li et al. 2020, §4). The root draws ``W(t1) = sqrt(T) Z_0``; a node ``[a, b]`` of
    length ``h`` places its midpoint by the Brownian bridge,

        ``W(m) = (W(a) + W(b)) / 2 + sqrt(h / 4) Z_node``,

    with ``Z_node`` drawn by a generator re-seeded with a hash of ``(entropy, node)`` (the counter
    stream of :class:`BrownianGrid`), so every node's value is a fixed function of the seed and the
    tree is never stored. Bisection stops at the first level whose nodes are at most ``tol`` long;
    inside such a leaf ``W(t)`` is the bridge between its ends with the leaf's own normal
    (``W(t) = mean(t) + sd(t) Z_leaf``): exact marginals at every time, exact joint law at the
    dyadic points, a path continuous in ``t``. With ``levy_area_approximation="space-time"`` every
    node also carries ``I(t) = int_{t0}^t W du`` and bisects ``(W, I)`` by their joint Gaussian
    bridge (two normals per node), as :class:`BrownianPath` does.

    Each query walks down ``depth = ceil(log2((t1 - t0) / tol))`` levels, but the path to the last
    query is kept (``depth + 1`` nodes) and so are the last eight points answered, so a solver that
    moves forward or backward in steps of ``h`` draws about ``log2(h / tol)`` new nodes per new time.
    This is the path for adaptive solves whose step times are not known in advance (``BrownianGrid``
    needs the grid) when :class:`BrownianPath`, which stores every point it was asked about, would
    grow too large; it costs about twice the solve time (``benchmarks/brownian.py``).

    Args:
        t0, t1, size, dtype, device, entropy, levy_area_approximation: as for :class:`BrownianPath`.
        tol: the leaf length (absolute time, as torchsde's ``BrownianTree``); below it increments are
            bridge approximations. Keep it well below the smallest step (default 1e-6).
    """

    def __init__(self, t0: float, t1: float, size: Sequence[int], dtype: Optional[torch.dtype] = None,
                 device: Optional[torch.device | str] = None, entropy: Optional[int] = None,
                 levy_area_approximation: str = "none", tol: float = 1e-6):
        tol = _as_float(tol, "tol")
        if not (math.isfinite(tol) and tol > 0):
            raise ValueError(f"BrownianTree needs tol > 0, got tol={tol}.")
        super().__init__(t0, t1, size, dtype, device, entropy, levy_area_approximation)
        t0, t1, self.tol = self._t0, self._t1, tol
        self.depth = max(0, math.ceil(math.log2((t1 - t0) / tol)))
        zero = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
        self._path = [_Node(1, t0, t1, (zero, zero), self._root_end())]
        self._recent: OrderedDict[float, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    def __call__(self, ta, tb=None, return_U: bool = False, return_A: bool = False):
        ta, tb = self._query(ta, tb, return_U, return_A)
        (wa, ia), (wb, ib) = self._point(ta), self._point(tb)
        if not return_U:
            return wb - wa
        return wb - wa, ib - ia - (tb - ta) * wa    # U = int_ta^tb (W_u - W_ta) du

    def _point(self, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W(t), I(t))`` (``I`` is zero without Lévy area); shape ``size`` each, shared with the
        kept path (callers must not modify them in place)."""
        if not self._t0 <= t <= self._t1:
            raise ValueError(f"Brownian query time {t} lies outside the tree's interval [{self._t0}, {self._t1}].")
        if t in self._recent:           # a solver asks for each step's ends several times
            self._recent.move_to_end(t)
            return self._recent[t]
        state = self._descend(t)
        self._recent[t] = state
        if len(self._recent) > _RECENT_POINTS:
            self._recent.popitem(last=False)
        return state

    def _descend(self, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W(t), I(t))`` from the kept path: up to the deepest node that holds ``t``, down to its leaf."""
        while not self._path[-1].a <= t <= self._path[-1].b:   # climb to the last node that holds t
            self._path.pop()
        while len(self._path) <= self.depth:
            self._path.append(self._path[-1].child(t, self))
        leaf = self._path[-1]
        if t == leaf.a:
            return leaf.state_a
        if t == leaf.b:
            return leaf.state_b
        return self._bridge(leaf, t, leaf.id)

    def __repr__(self) -> str:
        return (f"BrownianTree(t0={self._t0}, t1={self._t1}, size={tuple(self.shape)}, tol={self.tol}, "
                f"depth={self.depth}, levy_area_approximation={self.levy_area_approximation!r})")

    # ----------------------------------------------------------------- private
    def _normals(self, node_id: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        self._generator.manual_seed(_stream_seed(self.entropy, node_id))
        z = self._randn()
        return z, (self._randn() if self._have_area else None)

    def _root_end(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W(t1), I(t1))`` from stream 0 (node ids start at 1)."""
        h = self._t1 - self._t0
        z, z_area = self._normals(0)
        w = math.sqrt(h) * z
        if not self._have_area:
            return w, torch.zeros_like(w)
        return w, h * (0.5 * w + math.sqrt(h / 12) * z_area)     # U over [t0, t1] with W(t0) = 0

    def _bridge(self, node: "_Node", t: float, node_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W(t), I(t))`` inside ``node`` from its ends and stream ``node_id``."""
        z, z_area = self._normals(node_id)
        return _bridge_point(*node.state_a, *node.state_b, node.a, node.b, t, z, z_area)


@dataclass
class _Node:
    """A node ``[a, b]`` of a :class:`BrownianTree` with ``(W, I)`` at both ends; ``id`` in heap order."""

    id: int
    a: float
    b: float
    state_a: tuple[torch.Tensor, torch.Tensor]
    state_b: tuple[torch.Tensor, torch.Tensor]
    mid: tuple[torch.Tensor, torch.Tensor] | None = None    # drawn on first use, then kept

    def child(self, t: float, tree: BrownianTree) -> "_Node":
        """The half that holds ``t`` (the left one at the midpoint), its midpoint drawn from this node's stream."""
        m = 0.5 * (self.a + self.b)
        if self.mid is None:
            self.mid = tree._bridge(self, m, self.id)
        if t <= m:
            return _Node(2 * self.id, self.a, m, self.state_a, self.mid)
        return _Node(2 * self.id + 1, m, self.b, self.mid, self.state_b)


def _bridge_point(wa: torch.Tensor, ia: torch.Tensor | None, wb: torch.Tensor, ib: torch.Tensor | None,
                  ta: float, tb: float, t: float, z: torch.Tensor, z_area: torch.Tensor | None):
    """``(W(t), I(t))`` for ``ta < t < tb`` given both ends, from standard normals ``z`` (and ``z_area``).

    Without the time integral (``z_area`` None): the Brownian bridge, mean ``W(ta) + (h1/h)(W(tb) - W(ta))``
    and variance ``h1 h2 / h``; ``I`` is returned as ``ia``. With it: the joint Gaussian bridge of
    ``(dW, U)`` (:func:`_area_bridge_coefficients`), ``I(t) = I(ta) + U1 + h1 W(ta)``."""
    h1, h2 = t - ta, tb - t
    if z_area is None:
        return wa + (h1 / (h1 + h2)) * (wb - wa) + math.sqrt(h1 * h2 / (h1 + h2)) * z, ia
    dw, u = wb - wa, ib - ia - (tb - ta) * wa
    gain, chol = _area_bridge_coefficients(h1, h2)
    dw1 = gain[0][0] * dw + gain[0][1] * u + chol[0][0] * z
    u1 = gain[1][0] * dw + gain[1][1] * u + chol[1][0] * z + chol[1][1] * z_area
    return wa + dw1, ia + u1 + h1 * wa


def _stream_seed(entropy: int, k: int) -> int:
    """Seed of cell ``k``'s stream: SplitMix64 (Steele et al. 2014) of ``entropy + (k + 1)·golden``."""
    mask = (1 << 64) - 1
    x = (entropy + (k + 1) * 0x9E3779B97F4A7C15) & mask
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
    return (x ^ (x >> 31)) >> 1    # 63 bits: a valid seed on every device


def _running_sum(start: torch.Tensor, increments: torch.Tensor) -> list[torch.Tensor]:
    """``[start + increments[:k + 1].sum(0) for k]``, as a list of tensors shaped like ``start``.

    On the CPU one add per point: torch's CPU ``cumsum`` accumulates float32 in float64 and took
    4-5x longer over a (1000, 512, 16) walk. Elsewhere one ``cumsum`` (one kernel instead of n).
    """
    if increments.device.type != "cpu":
        return list((start + increments.cumsum(0)).unbind(0))
    sums = []
    for increment in increments.unbind(0):
        start = start + increment
        sums.append(start)
    return sums


def _area_bridge_coefficients(h1: float, h2: float):
    """Conditional law of ``(dW1, U1)`` on ``[a, a+h1]`` given ``(dW, U)`` on ``[a, a+h1+h2]``.

    With independent ``dW_i ~ N(0, h_i)``, ``H_i ~ N(0, h_i/12)``, ``U_i = h_i (dW_i/2 + H_i)``:
    ``dW = dW1 + dW2`` and ``U = U1 + U2 + h2 dW1``. Standard Gaussian conditioning gives
    ``(dW1, U1) | (dW, U) ~ N(K (dW, U), S)``; returns ``K`` (2x2) and the Cholesky factor of ``S``.
    Computed in float64 Python arithmetic (entries are O(h^3)).
    """
    # Rows: the four independent variables (dW1, H1, dW2, H2) with their variances.
    var = (h1, h1 / 12, h2, h2 / 12)
    z_map = ((1.0, 0.0, 0.0, 0.0), (h1 / 2, h1, 0.0, 0.0))                       # (dW1, U1)
    y_map = ((1.0, 0.0, 1.0, 0.0), (h1 / 2 + h2, h1, h2 / 2, h2))               # (dW, U)

    def cov(a, b):
        return [[sum(a[i][k] * var[k] * b[j][k] for k in range(4)) for j in range(2)] for i in range(2)]

    szy, syy, szz = cov(z_map, y_map), cov(y_map, y_map), cov(z_map, z_map)
    det = syy[0][0] * syy[1][1] - syy[0][1] * syy[1][0]
    syy_inv = [[syy[1][1] / det, -syy[0][1] / det], [-syy[1][0] / det, syy[0][0] / det]]
    gain = [[sum(szy[i][k] * syy_inv[k][j] for k in range(2)) for j in range(2)] for i in range(2)]
    s = [[szz[i][j] - sum(gain[i][k] * szy[j][k] for k in range(2)) for j in range(2)] for i in range(2)]
    l00 = math.sqrt(max(s[0][0], 0.0))
    l10 = s[1][0] / l00 if l00 > 0 else 0.0
    l11 = math.sqrt(max(s[1][1] - l10 * l10, 0.0))
    return gain, ((l00, 0.0), (l10, l11))


def _as_float(t, name: str) -> float:
    """A finite time given as a number or a one-element tensor."""
    if isinstance(t, torch.Tensor):
        if t.numel() != 1:
            raise ValueError(f"{name} must be a scalar time, got a tensor of shape {tuple(t.shape)}.")
        value = float(t.item())
    elif isinstance(t, (int, float)) and not isinstance(t, bool):
        value = float(t)
    else:
        raise TypeError(f"{name} must be a float or a scalar tensor, got {type(t).__name__}.")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}.")
    return value
