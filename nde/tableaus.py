"""Explicit Runge–Kutta methods as data (Butcher tableaus).

A method is its tableau plus a few declared facts; one generic engine
(:mod:`nde._rk`) steps every method. Adding a method is adding an entry to
:data:`TABLEAUS`.

Conventions (Hairer, Nørsett & Wanner, *Solving ODEs I*, §II.1, eq. 1.8):
stage ``i`` is evaluated at ``t + c[i]·dt`` on ``y + dt·Σ_j a[i][j]·k_j``; the
solution is ``y1 = y + dt·Σ_i b[i]·k_i`` and the embedded error estimate is
``dt·Σ_i b_error[i]·k_i`` (``b_error = b − b̂``). FSAL methods have a last stage
that evaluates ``f(t + dt, y1)``, which is reused as the next step's first stage.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit Runge–Kutta method.

    Attributes:
        name: method name as accepted by ``method=``.
        c: stage times, ``(s,)``.
        a: strictly lower-triangular coupling, row ``i`` has ``i`` entries.
        b: solution weights, ``(s,)``.
        b_error: ``b − b̂`` for the embedded estimate, ``(s,)``; ``None`` for fixed-step methods.
        order: order of the propagated solution.
        error_order: order of the embedded solution (the controller uses ``1/(error_order+1)``).
        fsal: the last stage is ``f(t+dt, y1)`` (first-same-as-last).
        dense: ``(s, m)`` coefficients of the method's own continuous extension,
            ``y(t+θdt) = y + dt·Σ_i k_i·Σ_m dense[i][m]·θ^(m+1)``; ``None`` means cubic Hermite.
        dense_order: order of ``dense`` (cubic Hermite: 3).
        stiffness_stages: two stage indices evaluated at the same time, used for the
            dominant-eigenvalue estimate ``‖k_i − k_j‖/‖g_i − g_j‖`` (Shampine 1977;
            Hairer & Wanner, *Solving ODEs II*, §IV.2). ``None``: the last two stages
            are used instead (a cruder estimate).
        reuses_last_stage: the next step starts from this step's last stage although it is not
            ``f(t+dt, y1)`` (torchdiffeq's convention for ``adaptive_heun`` and ``fehlberg2``): one
            evaluation per step fewer than an FSAL extension, but the step maps ``(y, k1)``, not ``y``
            alone, so the discrete adjoint carries ``k1`` between steps.
        stability_size: extent of the stability region along the negative real axis,
            computed from the tableau.
    """

    name: str
    c: tuple[float, ...]
    a: tuple[tuple[float, ...], ...]
    b: tuple[float, ...]
    b_error: tuple[float, ...] | None
    order: int
    error_order: int | None
    fsal: bool
    dense: tuple[tuple[float, ...], ...] | None = None
    dense_order: int = 3
    stiffness_stages: tuple[int, int] | None = None
    reuses_last_stage: bool = False
    stability_size: float = field(init=False)

    def __post_init__(self):
        s = len(self.c)
        if len(self.a) != s - 1 or any(len(row) != i + 1 for i, row in enumerate(self.a)):
            raise ValueError(f"{self.name}: `a` must have rows of length 1..{s - 1}")
        if len(self.b) != s or (self.b_error is not None and len(self.b_error) != s):
            raise ValueError(f"{self.name}: `b` and `b_error` must have {s} entries")
        if self.fsal and self.reuses_last_stage:
            raise ValueError(f"{self.name}: `fsal` and `reuses_last_stage` exclude each other")
        object.__setattr__(self, "stability_size", _real_stability_size(self))

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def adaptive(self) -> bool:
        return self.b_error is not None

    @property
    def stiffness_pair(self) -> tuple[int, int] | None:
        """Stages used for the stiffness estimate: the declared pair, else the last two (None for 1 stage)."""
        if self.stiffness_stages is not None:
            return self.stiffness_stages
        return (self.stages - 2, self.stages - 1) if self.stages > 1 else None

    @property
    def carries_last_stage(self) -> bool:
        """The last stage is the next step's first (FSAL, or torchdiffeq's reuse of a stage not at y1)."""
        return self.fsal or self.reuses_last_stage

    @property
    def new_evals_per_step(self) -> int:
        """Function evaluations per step (a carried last stage is the next step's first)."""
        return self.stages - 1 if self.carries_last_stage else self.stages


def _stability_function(tab: ButcherTableau, z: float) -> float:
    """R(z) = 1 + z bᵀ (I − zA)⁻¹ 1 (Hairer & Wanner II, eq. IV.2.3)."""
    s = tab.stages
    A = np.zeros((s, s))
    for i, row in enumerate(tab.a):
        A[i + 1, : i + 1] = row
    g = np.linalg.solve(np.eye(s) - z * A, np.ones(s))
    return 1.0 + z * float(np.dot(tab.b, g))


def _real_stability_size(tab: ButcherTableau) -> float:
    """Largest x such that |R(−x')| ≤ 1 for all x' in [0, x] (bisection after a scan)."""
    step, x = 0.01, 0.0
    while x < 20.0 and abs(_stability_function(tab, -(x + step))) <= 1.0 + 1e-12:
        x += step
    lo, hi = x, x + step
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if abs(_stability_function(tab, -mid)) <= 1.0 + 1e-12:
            lo = mid
        else:
            hi = mid
    return lo


EULER = ButcherTableau("euler", c=(0.0,), a=(), b=(1.0,), b_error=None, order=1, error_order=None, fsal=False)

MIDPOINT = ButcherTableau("midpoint", c=(0.0, 0.5), a=((0.5,),), b=(0.0, 1.0), b_error=None,
                          order=2, error_order=None, fsal=False)

RK4 = ButcherTableau("rk4", c=(0.0, 0.5, 0.5, 1.0), a=((0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)),
                     b=(1 / 6, 1 / 3, 1 / 3, 1 / 6), b_error=None, order=4, error_order=None, fsal=False,
                     stiffness_stages=(1, 2))

# Kutta's 3/8 rule (Hairer, Nørsett & Wanner I, Table II.1.2), fixed steps: torchdiffeq's "rk4", and the
# start-up steps of its Adams methods.
RK4_38 = ButcherTableau("rk4_38", c=(0.0, 1 / 3, 2 / 3, 1.0), a=((1 / 3,), (-1 / 3, 1.0), (1.0, -1.0, 1.0)),
                        b=(1 / 8, 3 / 8, 3 / 8, 1 / 8), b_error=None, order=4, error_order=None, fsal=False)

# Heun's method (explicit trapezoidal rule), fixed steps: torchdiffeq's "heun2".
HEUN = ButcherTableau("heun", c=(0.0, 1.0), a=((1.0,),), b=(0.5, 0.5), b_error=None,
                      order=2, error_order=None, fsal=False)

# Heun's third-order method (Heun 1900; Hairer, Nørsett & Wanner I, Table II.1.1), fixed steps.
HEUN3 = ButcherTableau("heun3", c=(0.0, 1 / 3, 2 / 3), a=((1 / 3,), (0.0, 2 / 3)), b=(0.25, 0.0, 0.75),
                       b_error=None, order=3, error_order=None, fsal=False)

# Fehlberg (1969), NASA TR R-315, RK1(2) with the second-order solution propagated, as torchdiffeq's
# "fehlberg2": the third stage, at the first-order solution, is the next step's first stage although it is
# not f(t+dt, y1) (torchdiffeq's convention; same evaluations and step sequence as torchdiffeq).
FEHLBERG2 = ButcherTableau(
    "fehlberg2", c=(0.0, 0.5, 1.0),
    a=((0.5,), (1 / 256, 255 / 256)),
    b=(1 / 512, 255 / 256, 1 / 512),
    b_error=(-1 / 512, 0.0, 1 / 512),
    order=2, error_order=1, fsal=False, reuses_last_stage=True)

# The same pair with an appended FSAL stage f(t+dt, y1): every step a map of y alone, one evaluation more.
FEHLBERG2_FSAL = ButcherTableau(
    "fehlberg2_fsal", c=(0.0, 0.5, 1.0, 1.0),
    a=((0.5,), (1 / 256, 255 / 256), (1 / 512, 255 / 256, 1 / 512)),
    b=(1 / 512, 255 / 256, 1 / 512, 0.0),
    b_error=(-1 / 512, 0.0, 1 / 512, 0.0),
    order=2, error_order=1, fsal=True)

# Heun–Euler 2(1) as torchdiffeq's "adaptive_heun": the Euler predictor's evaluation f(t+dt, y + dt·k1) is
# the next step's first stage (not f at the solution): one evaluation per step.
ADAPTIVE_HEUN = ButcherTableau("adaptive_heun", c=(0.0, 1.0), a=((1.0,),), b=(0.5, 0.5),
                               b_error=(-0.5, 0.5), order=2, error_order=1, fsal=False,
                               reuses_last_stage=True)

# Heun–Euler 2(1), extended by an FSAL stage f(t+dt, y1) so that dense output is Hermite at no extra cost.
HEUN2 = ButcherTableau("heun2", c=(0.0, 1.0, 1.0), a=((1.0,), (0.5, 0.5)), b=(0.5, 0.5, 0.0),
                       b_error=(-0.5, 0.5, 0.0), order=2, error_order=1, fsal=True)

# Bogacki & Shampine (1989), "A 3(2) pair of Runge–Kutta formulas", Appl. Math. Lett. 2(4).
BOSH3 = ButcherTableau(
    "bosh3", c=(0.0, 0.5, 0.75, 1.0),
    a=((0.5,), (0.0, 0.75), (2 / 9, 1 / 3, 4 / 9)),
    b=(2 / 9, 1 / 3, 4 / 9, 0.0),
    b_error=(2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8),
    order=3, error_order=2, fsal=True)

# Dormand & Prince (1980), "A family of embedded Runge–Kutta formulae", J. Comput. Appl. Math. 6(1),
# with the embedded 4th-order solution and the continuous extension recommended by Shampine (1986),
# "Some practical Runge–Kutta formulas", Math. Comp. 46 (the error estimate of torchdiffeq and diffrax,
# so step sequences match theirs; dense coefficients of θ^1..θ^4 per stage as in MATLAB's ode45).
_DP5_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_DP5_BHAT = (1951 / 21600, 0.0, 22642 / 50085, 451 / 720, -12231 / 42400, 649 / 6300, 1 / 60)
DOPRI5 = ButcherTableau(
    "dopri5", c=(0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0),
    a=((1 / 5,),
       (3 / 40, 9 / 40),
       (44 / 45, -56 / 15, 32 / 9),
       (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
       (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
       _DP5_B[:6]),
    b=_DP5_B, b_error=tuple(b - bh for b, bh in zip(_DP5_B, _DP5_BHAT)),
    order=5, error_order=4, fsal=True, stiffness_stages=(5, 6),
    dense=((1.0, -8048581381 / 2820520608, 8663915743 / 2820520608, -12715105075 / 11282082432),
           (0.0, 0.0, 0.0, 0.0),
           (0.0, 131558114200 / 32700410799, -68118460800 / 10900136933, 87487479700 / 32700410799),
           (0.0, -1754552775 / 470086768, 14199869525 / 1410260304, -10690763975 / 1880347072),
           (0.0, 127303824393 / 49829197408, -318862633887 / 49829197408, 701980252875 / 199316789632),
           (0.0, -282668133 / 205662961, 2019193451 / 616988883, -1453857185 / 822651844),
           (0.0, 40617522 / 29380423, -110615467 / 29380423, 69997945 / 29380423)), dense_order=4)

def _tsit5_dense() -> tuple[tuple[float, ...], ...]:
    """Tsitouras (2011) interpolant weights b_i(θ), written as in the paper (products of factors)."""
    th = np.poly1d([1.0, 0.0])
    polys = [
        -1.0530884977290216 * th * (th - 1.3299890189751412) * (th * th - 1.4364028541716351 * th + 0.7139816917074209),
        0.1017 * th * th * (th * th - 2.1966568338249754 * th + 1.2949852507374631),
        2.490627285651252793 * th * th * (th * th - 2.38535645472061657 * th + 1.57803468208092486),
        -16.54810288924490272 * (th - 1.21712927295533244) * (th - 0.61620406037800089) * th * th,
        47.37952196281928122 * (th - 1.203071208372362603) * (th - 0.658047292653547382) * th * th,
        -34.87065786149660974 * (th - 1.2) * (th - 0.666666666666666667) * th * th,
        2.5 * (th - 1.0) * (th - 0.6) * th * th,
    ]
    rows = []
    for p in polys:
        asc = np.zeros(5)
        coeffs = p.coeffs[::-1]
        asc[: len(coeffs)] = coeffs
        rows.append(tuple(float(v) for v in asc[1:]))
    return tuple(rows)



# Tsitouras (2011), "Runge–Kutta pairs of order 5(4) satisfying only the first column simplifying
# assumption", Comput. Math. Appl. 62(2). Coefficients and the dense-output polynomials of that paper.
_TS5_B = (0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742,
          -3.290069515436081, 2.324710524099774, 0.0)
_TS5_BERR = (-0.00178001105222577714, -0.0008164344596567469, 0.007880878010261995,
             -0.1447110071732629, 0.5823571654525552, -0.45808210592918697, 1 / 66)
TSIT5 = ButcherTableau(
    "tsit5", c=(0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0),
    a=((0.161,),
       (-0.008480655492356989, 0.335480655492357),
       (2.8971530571054935, -6.359448489975075, 4.3622954328695815),
       (5.325864828439257, -11.748883564062828, 7.4955393428898365, -0.09249506636175525),
       (5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401, -0.028269050394068383),
       _TS5_B[:6]),
    b=_TS5_B, b_error=_TS5_BERR, order=5, error_order=4, fsal=True, stiffness_stages=(5, 6),
    dense=_tsit5_dense(), dense_order=4)


def _rooted_trees(order: int) -> list[tuple]:
    """The rooted trees with ``order`` vertices, each a sorted tuple of its subtrees (the leaf is ``()``)."""
    if order == 1:
        return [()]
    found = set()
    for sizes in _partitions(order - 1):
        for children in itertools.product(*(_rooted_trees(n) for n in sizes)):
            found.add(tuple(sorted(children)))
    return sorted(found)


def _partitions(n: int, largest: int | None = None):
    """The partitions of n into non-increasing positive parts."""
    largest = n if largest is None else largest
    if n == 0:
        yield ()
    for part in range(min(n, largest), 0, -1):
        for rest in _partitions(n - part, part):
            yield (part,) + rest


def _tree_order(tree: tuple) -> int:
    return 1 + sum(_tree_order(child) for child in tree)


def _tree_density(tree: tuple) -> int:
    """γ(τ) = ρ(τ)·Π γ(children)."""
    density = _tree_order(tree)
    for child in tree:
        density *= _tree_density(child)
    return density


def _continuous_extension(c, a, b, order: int) -> tuple[tuple[float, ...], ...]:
    """Dense-output coefficients ``d`` (s, ``order``) of an FSAL method: ``b_i(θ) = Σ_m d[i][m-1]·θ^m`` with

    * ``Σ_i b_i(θ)·Φ_i(τ) = θ^ρ(τ)/γ(τ)`` for every rooted tree τ of order ρ(τ) ≤ ``order`` (the order
      conditions of a continuous extension, Hairer, Nørsett & Wanner I, §II.6; Φ_i the elementary weights:
      Φ_i(leaf) = 1, Φ_i([τ_1, ..., τ_m]) = Π_k (A·Φ(τ_k))_i);
    * ``b_i(1) = b_i`` (it ends on y1) and ``b_i'(1) = [i = s−1]`` (its slope there is the FSAL stage
      f(t+dt, y1): continuous first derivative across steps).

    Each power of θ is a separate linear condition; the minimal-norm solution is taken, and an inconsistent
    system (no extension of that order from these stages) raises."""
    s = len(c)
    A = np.zeros((s, s))
    for i, row in enumerate(a):
        A[i + 1, :i + 1] = row

    def weights(tree):
        phi = np.ones(s)
        for child in tree:
            phi = phi * (A @ weights(child))
        return phi

    trees = [(rho, weights(tree), _tree_density(tree)) for rho in range(1, order + 1) for tree in _rooted_trees(rho)]
    rows, rhs = [], []
    for power in range(1, order + 1):
        for rho, phi, density in trees:
            row = np.zeros((s, order))
            row[:, power - 1] = phi
            rows.append(row.ravel())
            rhs.append(1.0 / density if rho == power else 0.0)
    for i in range(s):
        for values, target in ((np.ones(order), b[i]), (np.arange(1.0, order + 1), float(i == s - 1))):
            row = np.zeros((s, order))
            row[i] = values
            rows.append(row.ravel())
            rhs.append(target)
    system, rhs = np.array(rows), np.array(rhs)
    d = np.linalg.lstsq(system, rhs, rcond=None)[0]
    if np.abs(system @ d - rhs).max() > 1e-11:
        raise ValueError(f"no continuous extension of order {order} from these stages")
    return tuple(tuple(float(v) for v in row) for row in d.reshape(s, order))


# Prince & Dormand (1981), "High order embedded Runge–Kutta formulae", J. Comput. Appl. Math. 7(1):
# RK8(7)13M with its rational coefficient approximations, extended by an FSAL stage f(t+dt, y1). Its dense
# output is the continuous extension of order 5 derived from the order conditions (no order 6 exists with
# these 14 stages: the conditions of the trees of order 6 are inconsistent).
_DP8_C = (0.0, 1 / 18, 1 / 12, 1 / 8, 5 / 16, 3 / 8, 59 / 400, 93 / 200, 5490023248 / 9719169821,
          13 / 20, 1201146811 / 1299019798, 1.0, 1.0, 1.0)
_DP8_A = (
    (1 / 18,),
    (1 / 48, 1 / 16),
    (1 / 32, 0.0, 3 / 32),
    (5 / 16, 0.0, -75 / 64, 75 / 64),
    (3 / 80, 0.0, 0.0, 3 / 16, 3 / 20),
    (29443841 / 614563906, 0.0, 0.0, 77736538 / 692538347, -28693883 / 1125000000, 23124283 / 1800000000),
    (16016141 / 946692911, 0.0, 0.0, 61564180 / 158732637, 22789713 / 633445777, 545815736 / 2771057229,
     -180193667 / 1043307555),
    (39632708 / 573591083, 0.0, 0.0, -433636366 / 683701615, -421739975 / 2616292301, 100302831 / 723423059,
     790204164 / 839813087, 800635310 / 3783071287),
    (246121993 / 1340847787, 0.0, 0.0, -37695042795 / 15268766246, -309121744 / 1061227803,
     -12992083 / 490766935, 6005943493 / 2108947869, 393006217 / 1396673457, 123872331 / 1001029789),
    (-1028468189 / 846180014, 0.0, 0.0, 8478235783 / 508512852, 1311729495 / 1432422823,
     -10304129995 / 1701304382, -48777925059 / 3047939560, 15336726248 / 1032824649,
     -45442868181 / 3398467696, 3065993473 / 597172653),
    (185892177 / 718116043, 0.0, 0.0, -3185094517 / 667107341, -477755414 / 1098053517,
     -703635378 / 230739211, 5731566787 / 1027545527, 5232866602 / 850066563, -4093664535 / 808688257,
     3962137247 / 1805957418, 65686358 / 487910083),
    (403863854 / 491063109, 0.0, 0.0, -5068492393 / 434740067, -411421997 / 543043805,
     652783627 / 914296604, 11173962825 / 925320556, -13158990841 / 6184727034, 3936647629 / 1978049680,
     -160528059 / 685178525, 248638103 / 1413531060, 0.0),
)
_DP8_B = (14005451 / 335480064, 0.0, 0.0, 0.0, 0.0, -59238493 / 1068277825, 181606767 / 758867731,
          561292985 / 797845732, -1041891430 / 1371343529, 760417239 / 1151165299, 118820643 / 751138087,
          -528747749 / 2220607170, 1 / 4, 0.0)
_DP8_BHAT = (13451932 / 455176623, 0.0, 0.0, 0.0, 0.0, -808719846 / 976000145, 1757004468 / 5645159321,
             656045339 / 265891186, -3867574721 / 1518517206, 465885868 / 322736535, 53011238 / 667516719,
             2 / 45, 0.0, 0.0)
DOPRI8 = ButcherTableau(
    "dopri8", c=_DP8_C, a=_DP8_A + (_DP8_B[:13],), b=_DP8_B,
    b_error=tuple(b - bh for b, bh in zip(_DP8_B, _DP8_BHAT)),
    order=8, error_order=7, fsal=True, stiffness_stages=(12, 13),
    dense=_continuous_extension(_DP8_C, _DP8_A + (_DP8_B[:13],), _DP8_B, 5), dense_order=5)

TABLEAUS: dict[str, ButcherTableau] = {
    tab.name: tab for tab in (EULER, MIDPOINT, HEUN, HEUN3, RK4, RK4_38, ADAPTIVE_HEUN, HEUN2, FEHLBERG2,
                              FEHLBERG2_FSAL, BOSH3, DOPRI5, TSIT5, DOPRI8)
}
# torchdiffeq 0.2.5's multistep methods: nde.odeint runs them (nde/_adams.py); they are not tableaus.
MULTISTEP = ("explicit_adams", "implicit_adams", "fixed_adams")


def get_tableau(method: str) -> ButcherTableau:
    """Look up a method by name; a clear error otherwise."""
    if not isinstance(method, str):
        raise TypeError(f"`method` must be a string, got {type(method).__name__}")
    if method == "scipy_solver":
        raise ValueError("`method` 'scipy_solver' (scipy.integrate.solve_ivp, no gradients) is available "
                         "through nde.odeint only")
    if method in MULTISTEP:
        raise ValueError(f"`method` {method!r} (torchdiffeq's multistep Adams method) is available through "
                         "nde.odeint only")
    if method not in TABLEAUS:
        raise ValueError(f"unknown `method` {method!r}; expected one of {sorted(TABLEAUS)}")
    return TABLEAUS[method]


def hermite_weights(theta: float) -> tuple[float, float, float, float]:
    """Cubic Hermite basis on [0, 1]: y(θ) = h00·y0 + h10·dt·f0 + h01·y1 + h11·dt·f1."""
    t2, t3 = theta * theta, theta * theta * theta
    return 2 * t3 - 3 * t2 + 1, t3 - 2 * t2 + theta, -2 * t3 + 3 * t2, t3 - t2


__all__ = ["ButcherTableau", "TABLEAUS", "get_tableau", "hermite_weights"]
