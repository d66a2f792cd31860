"""Per-step SDE increments: one small class per method, with its declared facts.

Step contract (shared by every method; the integration loop calls nothing else):

* ``init(sde, t0, y0) -> extra``: the method's extra state (a tuple, empty for most).
* ``step(sde, t0, t1, h, y0, extra, dw, u) -> (y1, extra1)``: advance ``y0`` (``(batch, d)``) from
  ``t0`` to ``t1`` (0-d tensors, precomputed by the loop; ``h = t1 - t0`` as a Python float) with
  the Brownian increment ``dw`` (``(batch, m)``) and, for methods with ``needs_area``, the
  space-time integral ``u = int (W_s - W_t0) ds``.

Declared facts: ``sde_type``, ``noise_types``, ``strong_order(noise_type)``, ``needs_area``,
``evals_per_step`` (drift-and-diffusion evaluations per step, for ``Solution.stats['nfe']``; ``init_evals``
those of the initial extra state),
``stability_size(noise_type)`` (length of the real stability interval ``[-S, 0]`` of the method's
drift part on ``y' = lambda y``, used by the stiffness regulariser; ``None`` where it is empty).
Diagonal noise follows torchsde: ``g`` is element-wise, ``g_i`` depends on ``y_i`` only
(the Milstein correction ``g dg/dy`` is computed with that assumption).
"""
from __future__ import annotations

import math

import torch

ALL_NOISE = ("diagonal", "scalar", "additive", "general")
COMMUTATIVE_NOISE = ("diagonal", "scalar", "additive")


class Method:
    """Base class: declared facts and the default (empty) extra state."""
    name: str
    sde_type: str
    noise_types: tuple = ALL_NOISE
    needs_area = False
    # Methods whose correction terms use dg_i/dy_i only (diagonal noise), which is exact only when
    # g_i depends on y_i alone: the SDE checks that contract for them (``SDE.check``).
    uses_noise_derivative = False
    evals_per_step = 1
    init_evals = 0  # evaluations made by :meth:`init` (counted once per solve that calls it)

    def stability_size(self, noise_type: str):
        """Explicit Euler and two-stage RK2 drift parts: ``|1 + z (+ z^2/2)| <= 1`` on ``[-2, 0]``."""
        return 2.0

    def __init__(self, grad_free: bool = False):
        self.grad_free = grad_free

    def strong_order(self, noise_type: str) -> float:
        raise NotImplementedError

    def init(self, sde, t0: torch.Tensor, y0: torch.Tensor) -> tuple:
        return ()

    def step(self, sde, t0, t1, h, y0, extra, dw, u):
        raise NotImplementedError


class Euler(Method):
    """Euler–Maruyama (Itô): ``y1 = y0 + f h + g dW``. Kloeden & Platen (1992), eq. (10.2.2)."""
    name, sde_type = "euler", "ito"

    def strong_order(self, noise_type):
        return 1.0 if noise_type == "additive" else 0.5

    def step(self, sde, t0, t1, h, y0, extra, dw, u):
        f, g = sde.f_and_g(t0, y0)
        return sde.add_prod(torch.add(y0, f, alpha=h), g, dw), ()


class Milstein(Method):
    """Milstein for commutative noise, Kloeden & Platen (1992), eq. (10.3.3).

    ``y1 = y0 + f h + g dW + 1/2 (g . grad g) (dW^2 - c h)`` with ``c = 1`` (Itô) or ``0``
    (Stratonovich). With ``grad_free`` the derivative term uses the finite difference
    ``(g(y0 + g sqrt(h)) - g(y0)) / sqrt(h)`` (Kloeden & Platen eq. (11.1.5)).
    """
    name = "milstein"
    noise_types = COMMUTATIVE_NOISE
    uses_noise_derivative = True

    def __init__(self, sde_type: str, grad_free: bool = False):
        super().__init__(grad_free)
        self.sde_type = sde_type
        self._ito = sde_type == "ito"

    def strong_order(self, noise_type):
        return 1.0

    def step(self, sde, t0, t1, h, y0, extra, dw, u):
        t = t0
        v = dw * dw - h if self._ito else dw * dw
        if sde.noise_type == "additive":
            f, g = sde.f_and_g(t, y0)
            return sde.add_prod(torch.add(y0, f, alpha=h), g, dw), ()
        if self.grad_free:
            f, g = sde.f_and_g(t, y0)
            sqrt_h = math.sqrt(h)
            g_col = g if sde.noise_type == "diagonal" else g.squeeze(-1)
            y_shift = y0 + g_col * sqrt_h + (f * h if self._ito else 0.0)
            gdg = sde.prod(sde.g(t, y_shift) - g, v) / (2 * sqrt_h)
            return y0 + f * h + sde.prod(g, dw) + gdg, ()
        f = sde.f(t, y0)
        g, gdg = g_and_gdg_prod(sde, t, y0, 0.5 * v)
        return sde.add_prod(torch.add(y0, f, alpha=h), g, dw) + gdg, ()


def g_and_gdg_prod(sde, t, y, weight=None):
    """``g`` and the Milstein term ``((grad g) g) * weight`` (``(batch, d)``) for commutative noise.

    Diagonal noise (``weight``: ``(batch, d)``): the vjp ``J_g^T (g * weight)`` — torchsde's
    formula, equal to ``g_i dg_i/dy_i weight_i`` when ``g`` is element-wise (the diagonal-noise
    assumption). Scalar noise (``weight``: ``(batch, 1)``): the Jacobian-vector product
    ``J_g g * weight`` (double-vjp trick), exact for any ``g``. ``weight=None`` means 1.
    Differentiable when grad mode is on.
    """
    create = torch.is_grad_enabled()
    with torch.enable_grad():
        y_ = y if y.requires_grad else y.detach().requires_grad_(True)
        g = sde.g(t, y_)
        if not g.requires_grad:  # g independent of y (and of any parameter): no Milstein term
            return g, torch.zeros_like(y)
        if sde.noise_type == "diagonal":
            out, = torch.autograd.grad(g, y_, g if weight is None else g * weight, create_graph=create,
                                       allow_unused=True)
            return g, torch.zeros_like(y) if out is None else out
        col = g.squeeze(-1)
        probe = torch.zeros_like(col, requires_grad=True)
        jt_probe, = torch.autograd.grad(col, y_, probe, create_graph=True, allow_unused=True)
        if jt_probe is None:
            return g, torch.zeros_like(y)
        jg, = torch.autograd.grad(jt_probe, probe, col, create_graph=create)
        return g, jg if weight is None else jg * weight


class EulerHeun(Method):
    """Euler–Heun (Stratonovich): ``y' = y0 + g dW``, ``y1 = y0 + f h + (g(y0) + g(y')) dW / 2``."""
    name, sde_type = "euler_heun", "stratonovich"
    evals_per_step = 2

    def strong_order(self, noise_type):
        return 0.5 if noise_type == "general" else 1.0

    def step(self, sde, t0, t1, h, y0, extra, dw, u):
        f, g_dw = sde.f_and_g_prod(t0, y0, dw)
        g_dw_prime = sde.g_prod(t1, y0 + g_dw, dw)
        return y0 + f * h + 0.5 * (g_dw + g_dw_prime), ()


class Heun(Method):
    """Stratonovich Heun, Burrage, Burrage & Tian (2004), eq. (4.8): trapezoidal predictor-corrector."""
    name, sde_type = "heun", "stratonovich"
    evals_per_step = 2

    def strong_order(self, noise_type):
        return 0.5 if noise_type == "general" else 1.0

    def step(self, sde, t0, t1, h, y0, extra, dw, u):
        f, g_dw = sde.f_and_g_prod(t0, y0, dw)
        f1, g_dw1 = sde.f_and_g_prod(t1, y0 + f * h + g_dw, dw)
        return y0 + 0.5 * ((f + f1) * h + g_dw + g_dw1), ()


class Midpoint(Method):
    """Stratonovich midpoint: ``y' = y0 + (f h + g dW)/2`` at ``t0 + h/2``; ``y1 = y0 + f(y') h + g(y') dW``."""
    name, sde_type = "midpoint", "stratonovich"
    evals_per_step = 2

    def strong_order(self, noise_type):
        return 0.5 if noise_type == "general" else 1.0

    def step(self, sde, t0, t1, h, y0, extra, dw, u):
        f, g_dw = sde.f_and_g_prod(t0, y0, dw)
        f1, g_dw1 = sde.f_and_g_prod(t0 + 0.5 * h, y0 + 0.5 * (f * h + g_dw), dw)
        return y0 + f1 * h + g_dw1, ()


class ReversibleHeun(Method):
    """Reversible Heun (Stratonovich), Kidger et al. (2021), "Efficient and accurate gradients
    for neural SDEs", Algorithm 1. Extra state ``(f(z), g(z), z)``; algebraically reversible:

    ``z1 = 2 y0 - z0 + f0 h + g0 dW``;  ``y1 = y0 + (f0 + f1) h/2 + (g0 + g1) dW/2``.
    """
    name, sde_type = "reversible_heun", "stratonovich"
    init_evals = 1

    def stability_size(self, noise_type):
        """None: unstable on the whole negative real axis (its stability region is ``[-i, i]``)."""
        return None

    def strong_order(self, noise_type):
        return 1.0 if noise_type == "additive" else 0.5

    def init(self, sde, t0, y0):
        f, g = sde.f_and_g(t0, y0)
        return f, g, y0

    def step(self, sde, t0, t1, h, y0, extra, dw, u):
        f0, g0, z0 = extra
        z1 = sde.add_prod(torch.add(2 * y0 - z0, f0, alpha=h), g0, dw)
        f1, g1 = sde.f_and_g(t1, z1)
        y1 = sde.add_prod(torch.add(y0, f0 + f1, alpha=0.5 * h), g0 + g1, 0.5 * dw)
        return y1, (f1, g1, z1)


class SRK(Method):
    """Stochastic Runge–Kutta of strong order 1.5, Rößler (2010), SIAM J. Numer. Anal. 48(3):
    SRI2 (Table 5.2 family, as listed in DifferentialEquations.jl/torchsde) for diagonal or scalar
    noise, SRA1 (Table 6.1 family, eq. (6.1)) for additive noise. Needs ``u = I_(1,0)``.
    """
    name, sde_type = "srk", "ito"
    noise_types = COMMUTATIVE_NOISE
    needs_area = True
    uses_noise_derivative = True
    evals_per_step = 4

    def stability_size(self, noise_type):
        """SRI2's drift part is three-stage RK3 (``1 + z + z^2/2 + z^3/6``, real interval
        ``[-2.5127, 0]``); SRA1's is two-stage RK2 (``[-2, 0]``)."""
        return 2.0 if noise_type == "additive" else 2.5127

    def strong_order(self, noise_type):
        return 1.5

    def step(self, sde, t0, t1, h, y0, extra, dw, u):
        if sde.noise_type == "additive":
            return _sra1_step(sde, t0, h, y0, dw, u), ()
        return _sri2_step(sde, t0, h, y0, dw, u), ()


# Rößler (2010) SRI2 coefficients (diagonal/scalar noise), four stages.
_SRI2 = dict(
    c0=(0, 1, 1 / 2, 0), c1=(0, 1 / 4, 1, 1 / 4),
    a0=((), (1,), (1 / 4, 1 / 4), (0, 0, 0)), a1=((), (1 / 4,), (1, 0), (0, 0, 1 / 4)),
    b0=((), (0,), (1, 1 / 2), (0, 0, 0)), b1=((), (-1 / 2,), (1, 0), (2, -1, 1 / 2)),
    alpha=(1 / 6, 1 / 6, 2 / 3, 0),
    beta1=(-1, 4 / 3, 2 / 3, 0), beta2=(1, -4 / 3, 1 / 3, 0),
    beta3=(2, -4 / 3, -2 / 3, 0), beta4=(-2, 5 / 3, -2 / 3, 1),
)
# Rößler (2010) SRA1 coefficients (additive noise), two stages.
_SRA1 = dict(c0=(0, 3 / 4), c1=(1, 0), a0=((), (3 / 4,)), b0=((), (3 / 2,)),
             alpha=(1 / 3, 2 / 3), beta1=(1, 0), beta2=(-1, 1))


def _g_col(sde, t, y):
    g = sde.g(t, y)
    return g.squeeze(-1) if sde.noise_type == "scalar" else g


def _sri2_step(sde, t0, h, y0, dw, u):
    tab = _SRI2
    sqrt_h = math.sqrt(h)
    i11 = 0.5 * (dw * dw - h)
    i111 = (dw * dw * dw - 3 * h * dw) / 6
    i10 = u
    fs, gs = [], []
    y1 = y0
    for s in range(4):
        h0, h1 = y0, y0
        for j in range(s):
            if tab["a0"][s][j]:
                h0 = h0 + tab["a0"][s][j] * h * fs[j]
            if tab["b0"][s][j]:
                h0 = h0 + tab["b0"][s][j] * gs[j] * (i10 / h)
            if tab["a1"][s][j]:
                h1 = h1 + tab["a1"][s][j] * h * fs[j]
            if tab["b1"][s][j]:
                h1 = h1 + tab["b1"][s][j] * sqrt_h * gs[j]
        fs.append(sde.f(t0 + tab["c0"][s] * h, h0))
        gs.append(_g_col(sde, t0 + tab["c1"][s] * h, h1))
        weight = (tab["beta1"][s] * dw + tab["beta2"][s] * i11 / sqrt_h
                  + tab["beta3"][s] * i10 / h + tab["beta4"][s] * i111 / h)
        y1 = y1 + tab["alpha"][s] * h * fs[s] + gs[s] * weight
    return y1


def _sra1_step(sde, t0, h, y0, dw, u):
    tab = _SRA1
    gs = [sde.g(t0 + c * h, y0) for c in tab["c1"]]
    fs = []
    y1 = y0
    for i in range(2):
        h0 = y0
        for j in range(i):
            h0 = h0 + tab["a0"][i][j] * h * fs[j] + sde.prod(gs[j], tab["b0"][i][j] * u / h)
        fs.append(sde.f(t0 + tab["c0"][i] * h, h0))
        y1 = y1 + tab["alpha"][i] * h * fs[i] + sde.prod(gs[i], tab["beta1"][i] * dw + tab["beta2"][i] * u / h)
    return y1


METHOD_NAMES = ("euler", "milstein", "srk", "euler_heun", "heun", "midpoint", "reversible_heun")


def select_method(name, sde_type: str, noise_type: str, options: dict) -> Method:
    """The method object for ``name``; a clear ``ValueError`` for unknown or unsupported combinations."""
    options = dict(options or {})
    grad_free = options.pop("grad_free", False)
    if not isinstance(grad_free, bool):
        raise TypeError(f"options['grad_free'] must be True or False, got {grad_free!r}.")
    if options:
        raise ValueError(f"options has unknown keys {sorted(options)}; supported: ['grad_free', 'max_steps'].")
    if name not in METHOD_NAMES:
        raise ValueError(f"method must be one of {METHOD_NAMES}, got {name!r}.")
    if name == "milstein":
        method = Milstein(sde_type, grad_free)
    else:
        method = {"euler": Euler, "srk": SRK, "euler_heun": EulerHeun, "heun": Heun,
                  "midpoint": Midpoint, "reversible_heun": ReversibleHeun}[name](grad_free)
    if method.sde_type != sde_type:
        raise ValueError(f"method {name!r} solves {method.sde_type} SDEs, but sde.sde_type={sde_type!r}.")
    if noise_type not in method.noise_types:
        raise ValueError(f"method {name!r} supports noise types {method.noise_types}, "
                         f"but sde.noise_type={noise_type!r}.")
    if grad_free and name != "milstein":
        raise ValueError(f"options['grad_free'] applies to method 'milstein' only, got method {name!r}.")
    return method


def default_method(sde_type: str, noise_type: str) -> str:
    """torchsde 0.2.6 defaults: Itô srk (euler for general noise), Stratonovich midpoint."""
    if sde_type == "ito":
        return "euler" if noise_type == "general" else "srk"
    return "midpoint"
