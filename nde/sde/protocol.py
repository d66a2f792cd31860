"""The torchsde ``sde`` object protocol: noise types, SDE types, validation, a fast wrapper.

A user's ``sde`` has attributes ``noise_type`` in {diagonal, scalar, additive, general} and
``sde_type`` in {ito, stratonovich}, and methods ``f(t, y)`` (drift, ``(batch, d)``) and
``g(t, y)`` (diffusion: ``(batch, d)`` for diagonal noise, else ``(batch, d, m)``), or a
fused ``f_and_g(t, y)``; ``h(t, y)`` is the prior drift used with ``logqp=True``.
``names`` renames them (keys ``drift``, ``diffusion``, ``prior_drift``, ``drift_and_diffusion``).

:class:`SDE` wraps such an object once, at the API edge, checks every shape with a message
that names what is wrong, and exposes what the steppers need (``f``, ``g``, ``f_and_g``,
``prod``, ``g_prod``). Nothing is checked per step.
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch

NOISE_TYPES = ("diagonal", "scalar", "additive", "general")
SDE_TYPES = ("ito", "stratonovich")
_RENAMES = {"drift": "f", "diffusion": "g", "prior_drift": "h", "drift_and_diffusion": "f_and_g"}


class BaseSDE(torch.nn.Module):
    """Base class for a user's SDE (torchsde's ``BaseSDE``): an ``nn.Module`` with checked ``noise_type``
    and ``sde_type`` attributes; subclasses define ``f`` and ``g`` (or ``f_and_g``)."""

    def __init__(self, noise_type: str, sde_type: str):
        super().__init__()
        if noise_type not in NOISE_TYPES:
            raise ValueError(f"`noise_type` must be one of {NOISE_TYPES}, got {noise_type!r}")
        if sde_type not in SDE_TYPES:
            raise ValueError(f"`sde_type` must be one of {SDE_TYPES}, got {sde_type!r}")
        self.noise_type, self.sde_type = noise_type, sde_type


class SDEIto(BaseSDE):
    """An Itô SDE (torchsde's ``SDEIto``)."""

    def __init__(self, noise_type: str):
        super().__init__(noise_type, "ito")


class SDEStratonovich(BaseSDE):
    """A Stratonovich SDE (torchsde's ``SDEStratonovich``)."""

    def __init__(self, noise_type: str):
        super().__init__(noise_type, "stratonovich")


class SDE:
    """Validated view of a torchsde-style ``sde`` object.

    Attributes: ``noise_type``, ``sde_type``, ``state_size`` (d), ``noise_size`` (m),
    ``batch_size``; methods ``f(t, y) -> (batch, d)``, ``g(t, y)`` (raw diffusion),
    ``f_and_g(t, y)``, ``prod(g, v) -> (batch, d)`` (diffusion times a ``(batch, m)`` vector),
    ``add_prod(y, g, v) = y + prod(g, v)``,
    ``h(t, y)`` (prior drift, may be missing).
    """

    def __init__(self, sde, names: Optional[dict] = None):
        self.module = sde
        names = _check_names(names)
        self.noise_type = _check_choice(sde, "noise_type", NOISE_TYPES)
        self.sde_type = _check_choice(sde, "sde_type", SDE_TYPES)
        f = getattr(sde, names.get("f", "f"), None)
        g = getattr(sde, names.get("g", "g"), None)
        fg = getattr(sde, names.get("f_and_g", "f_and_g"), None)
        self.h = getattr(sde, names.get("h", "h"), None)
        if fg is None and (f is None or g is None):
            raise ValueError("sde must define `f` and `g` (or `f_and_g`); "
                             f"found f={f is not None}, g={g is not None}, f_and_g={fg is not None}.")
        self.f = f if f is not None else (lambda t, y: fg(t, y)[0])
        self.g = g if g is not None else (lambda t, y: fg(t, y)[1])
        self.f_and_g = fg if fg is not None else (lambda t, y: (f(t, y), g(t, y)))
        self.prod = _prod_for(self.noise_type)
        self.add_prod = _add_prod_for(self.noise_type)
        self.state_size = self.noise_size = self.batch_size = None

    def g_prod(self, t, y, v):
        return self.prod(self.g(t, y), v)

    def f_and_g_prod(self, t, y, v):
        f, g = self.f_and_g(t, y)
        return f, self.prod(g, v)

    def check(self, t0: float, y0: torch.Tensor, uses_noise_derivative: Optional[str] = None) -> None:
        """Evaluate ``f`` and ``g`` once at ``(t0, y0)`` and check their shapes against the noise type.

        The contracts the solvers rely on are probed once: additive g must not depend on y; if
        ``uses_noise_derivative`` names what uses dg_i/dy_i (Milstein, SRK, the Itô backsolve adjoint),
        diagonal g_i should depend on y_i alone (a warning otherwise).
        """
        batch, d = y0.shape
        t = torch.as_tensor(t0, dtype=y0.dtype, device=y0.device)
        f, g = self.f_and_g(t, y0)
        _check_tensor(f, "drift f(t, y)")
        _check_tensor(g, "diffusion g(t, y)")
        for value, name in ((f, "drift f(t, y)"), (g, "diffusion g(t, y)")):
            if value.dtype != y0.dtype:
                raise TypeError(f"{name} returned dtype {value.dtype}, but y0 has dtype {y0.dtype}.")
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"{name} returned non-finite values (NaN or inf) at t0={float(t0):g}, y0.")
        if f.shape != y0.shape:
            raise ValueError(f"drift f(t, y) must have the shape of y0 {tuple(y0.shape)}, got {tuple(f.shape)}.")
        if self.noise_type == "diagonal":
            if g.shape != y0.shape:
                raise ValueError(f"noise_type='diagonal' needs g(t, y) of shape (batch, d) = {tuple(y0.shape)}, "
                                 f"got {tuple(g.shape)}.")
            m = d
        else:
            if g.dim() != 3 or g.shape[:2] != y0.shape:
                raise ValueError(f"noise_type={self.noise_type!r} needs g(t, y) of shape (batch, d, m) with "
                                 f"(batch, d) = {tuple(y0.shape)}, got {tuple(g.shape)}.")
            m = g.shape[2]
            if self.noise_type == "scalar" and m != 1:
                raise ValueError(f"noise_type='scalar' needs g(t, y) of shape (batch, d, 1), got {tuple(g.shape)}.")
        if self.noise_type == "additive":
            self._check_additive(t, y0, g)
        if self.noise_type == "diagonal" and d > 1 and uses_noise_derivative is not None:
            self._check_diagonal(t, y0, g, uses_noise_derivative)
        self.batch_size, self.state_size, self.noise_size = batch, d, m

    def _check_additive(self, t: torch.Tensor, y0: torch.Tensor, g: torch.Tensor) -> None:
        """Additive noise means g independent of y (the methods drop its derivative terms): compare
        g at y0 and at a perturbed state once."""
        with torch.no_grad():
            shifted = self.g(t, y0 + 0.1 * (y0.abs() + 1))
        if not _unchanged(shifted, g):
            raise ValueError("noise_type='additive' needs a diffusion g(t, y) independent of y, but g changed "
                             "when y did; use noise_type='general' (or 'diagonal').")

    def _check_diagonal(self, t: torch.Tensor, y0: torch.Tensor, g: torch.Tensor, user: str) -> None:
        """Diagonal noise for Milstein, SRK and the Itô adjoint (``user``) means g_i = g_i(t, y_i): their
        corrections use dg_i/dy_i only.
        Shift y_0 alone once; if g_1..g_{d-1} change, warn (torchsde runs such SDEs silently, so refusing
        them would break the drop-in, but the solution then lacks part of the correction)."""
        y = y0.detach().clone()
        y[:, 0] += 0.1 * (y[:, 0].abs() + 1)
        with torch.no_grad():
            shifted = self.g(t, y)
        if not _unchanged(shifted[:, 1:], g[:, 1:]):
            warnings.warn(f"{user} with noise_type='diagonal' assumes g_i(t, y) depends on y_i only (the "
                          "correction uses dg_i/dy_i), but g_1.. changed when only y_0 did: the cross-derivatives "
                          "are ignored and the strong order is lost. Use noise_type='general' with g of shape "
                          "(batch, d, d) (a Stratonovich SDE for the adjoint), or a method without derivative "
                          "terms (euler, heun, midpoint, euler_heun).", stacklevel=4)


def _unchanged(shifted: torch.Tensor, g: torch.Tensor) -> bool:
    """Whether a probe of g at a shifted state equals g up to round-off (relative to g's size)."""
    g = g.detach()
    return torch.allclose(shifted, g, rtol=1e-5, atol=1e-6 * float(g.abs().max().clamp_min(1)))


class LogqpSDE(SDE):
    """The SDE augmented with the log-ratio channel of Li et al. (2020), eq. (8).

    The extra last state channel integrates ``0.5 |u|^2`` with ``g u = f - h``
    (``u = (f - h) / g`` for diagonal noise, ``pinv(g) (f - h)`` otherwise); its diffusion is zero.
    """

    def __init__(self, base: SDE):
        if base.h is None:
            raise ValueError("logqp=True needs the prior drift `h(t, y)` on sde (or names={'prior_drift': ...}).")
        self.__dict__.update(base.__dict__)
        self._base = base
        self.f = lambda t, y: self.f_and_g(t, y)[0]
        self.g = self._g
        self.f_and_g = self._f_and_g

    def _g(self, t, y):
        g = self._base.g(t, y[:, :-1])
        return torch.cat([g, torch.zeros_like(g[:, :1])], dim=1)

    def _f_and_g(self, t, y):
        x = y[:, :-1]
        f, g = self._base.f_and_g(t, x)
        h = self._base.h(t, x)
        if self.noise_type == "diagonal":
            u = _stable_division(f - h, g)
        else:
            u = torch.linalg.pinv(g).matmul((f - h).unsqueeze(-1)).squeeze(-1)
        f_logqp = 0.5 * u.pow(2).sum(dim=1, keepdim=True)
        return torch.cat([f, f_logqp], dim=1), torch.cat([g, torch.zeros_like(g[:, :1])], dim=1)


def _stable_division(a, b, eps=1e-7):
    b = torch.where(b.abs() > eps, b, torch.full_like(b, eps) * b.sign().where(b != 0, torch.ones_like(b)))
    return a / b


def _prod_for(noise_type: str):
    if noise_type == "diagonal":
        return torch.mul
    if noise_type == "scalar":
        return lambda g, v: g.squeeze(-1) * v
    return lambda g, v: torch.bmm(g, v.unsqueeze(-1)).squeeze(-1)


def _add_prod_for(noise_type: str):
    """Fused ``y + prod(g, v)`` (one kernel instead of two)."""
    if noise_type == "diagonal":
        return torch.addcmul
    if noise_type == "scalar":
        return lambda y, g, v: torch.addcmul(y, g.squeeze(-1), v)
    return lambda y, g, v: torch.baddbmm(y.unsqueeze(-1), g, v.unsqueeze(-1)).squeeze(-1)


def _check_choice(sde, attr: str, choices) -> str:
    if not hasattr(sde, attr):
        raise ValueError(f"sde has no attribute `{attr}`; expected one of {choices}.")
    value = getattr(sde, attr)
    if value not in choices:
        raise ValueError(f"sde.{attr} must be one of {choices}, got {value!r}.")
    return value


def _check_names(names) -> dict:
    if names is None:
        return {}
    if not isinstance(names, dict):
        raise TypeError(f"names must be a dict, got {type(names).__name__}.")
    unknown = set(names) - set(_RENAMES)
    if unknown:
        raise ValueError(f"names has unknown keys {sorted(unknown)}; allowed: {sorted(_RENAMES)}.")
    return {_RENAMES[k]: v for k, v in names.items()}


def _check_tensor(x, what: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what} must return a torch.Tensor, got {type(x).__name__}.")
