"""Measured strong and weak convergence orders against exact solutions on the same Brownian path."""
import math

import pytest
import torch

from nde.sde import BrownianPath, sdeint
from tests.sde.models import GBM, OU

N_PATHS = 2000
DTS = [2.0 ** -k for k in range(3, 9)]


def _slope(dts, errors):
    x = torch.tensor([math.log(h) for h in dts], dtype=torch.float64)
    y = torch.tensor([math.log(e) for e in errors], dtype=torch.float64)
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / (x * x).sum())


def _path(n_paths, finest, area, entropy=0):
    """A path drawn on the finest grid first, so every coarser step sums exactly those increments."""
    bm = BrownianPath(0.0, 1.0, (n_paths, 1), dtype=torch.float64, entropy=entropy,
                      levy_area_approximation="space-time" if area else "none")
    n = round(1 / finest)
    bm.increments([k * finest for k in range(n + 1)], return_U=area)
    return bm


def _strong_errors(sde, method, exact, dts=DTS, options=None, y0=None):
    y0 = torch.full((N_PATHS, 1), 1.0, dtype=torch.float64) if y0 is None else y0
    bm = _path(N_PATHS, min(dts), method == "srk")
    truth = exact(y0, bm)
    errors = []
    with torch.no_grad():
        for dt in dts:
            ys = sdeint(sde, y0, [0.0, 1.0], bm=bm, method=method, dt=dt, options=options)
            errors.append(float((ys[-1] - truth).abs().mean()))
    return errors


def _gbm_exact(sde):
    return lambda y0, bm: sde.exact(y0, 1.0, bm(0.0, 1.0))


@pytest.mark.parametrize("sde_type,method,options,order", [
    ("ito", "euler", None, 0.5),
    ("ito", "milstein", None, 1.0),
    ("ito", "milstein", {"grad_free": True}, 1.0),
    ("ito", "srk", None, 1.5),
    ("stratonovich", "euler_heun", None, 1.0),
    ("stratonovich", "heun", None, 1.0),
    ("stratonovich", "midpoint", None, 1.0),
    ("stratonovich", "milstein", None, 1.0),
])
def test_strong_order_gbm(sde_type, method, options, order):
    sde = GBM(sde_type)
    errors = _strong_errors(sde, method, _gbm_exact(sde), options=options)
    slope = _slope(DTS, errors)
    assert abs(slope - order) < 0.15, (slope, errors)


def test_reversible_heun_strong_order_on_gbm_is_at_least_half():
    sde = GBM("stratonovich")
    slope = _slope(DTS, _strong_errors(sde, "reversible_heun", _gbm_exact(sde)))
    assert slope > 0.45, slope


@pytest.fixture(scope="module")
def ou_reference():
    """OU has no closed form on W(1) alone; the reference is SRK (strong order 1.5) at dt = 2^-10."""
    y0 = torch.full((N_PATHS, 1), 1.0, dtype=torch.float64)
    bm = _path(N_PATHS, 2.0 ** -10, True)
    with torch.no_grad():
        truth = sdeint(OU("ito"), y0, [0.0, 1.0], bm=bm, method="srk", dt=2.0 ** -10)[-1]
    return y0, bm, truth


@pytest.mark.parametrize("sde_type,method,order", [
    ("ito", "euler", 1.0), ("stratonovich", "reversible_heun", 1.0), ("stratonovich", "midpoint", 1.0),
])
def test_strong_order_ou_additive_noise(ou_reference, sde_type, method, order):
    y0, bm, truth = ou_reference
    dts = DTS[:-1]
    with torch.no_grad():
        errors = [float((sdeint(OU(sde_type), y0, [0.0, 1.0], bm=bm, method=method, dt=dt)[-1] - truth).abs().mean())
                  for dt in dts]
    slope = _slope(dts, errors)
    assert abs(slope - order) < 0.2, (slope, errors)


def test_weak_order_of_euler_on_gbm_mean():
    """E[y(1)] = y0 e^mu; the Euler mean error (common random numbers against the exact path) is O(dt)."""
    sde = GBM("ito", mu=1.0, sigma=0.5)
    n = 20_000
    y0 = torch.ones(n, 1, dtype=torch.float64)
    dts = [2.0 ** -k for k in range(2, 7)]
    bm = _path(n, min(dts), False, entropy=3)
    truth = sde.exact(y0, 1.0, bm(0.0, 1.0))
    errors = []
    with torch.no_grad():
        for dt in dts:
            ys = sdeint(sde, y0, [0.0, 1.0], bm=bm, method="euler", dt=dt)
            errors.append(abs(float((ys[-1] - truth).mean())))
    slope = _slope(dts, errors)
    assert abs(slope - 1.0) < 0.2, (slope, errors)


class _StateFreeNoise(torch.nn.Module):
    """dy = −y dt + σ(t) dW with σ depending on t only (no graph from y to g)."""
    noise_type, sde_type = "diagonal", "ito"

    def f(self, t, y):
        return -y

    def g(self, t, y):
        return torch.full_like(y, 0.5) * (1 + t)


@pytest.mark.parametrize("method", ["milstein", "euler"])
def test_milstein_with_state_free_noise_equals_euler(method):
    """The Milstein term g·∂g/∂y vanishes when g does not depend on y (it used to raise)."""
    y0 = torch.ones(4, 2, dtype=torch.float64)
    ts = torch.tensor([0.0, 1.0], dtype=torch.float64)
    bm = BrownianPath(t0=0.0, t1=1.0, size=(4, 2), dtype=torch.float64, entropy=3)
    ys = sdeint(_StateFreeNoise(), y0, ts, bm=bm, method=method, dt=0.05)
    bm = BrownianPath(t0=0.0, t1=1.0, size=(4, 2), dtype=torch.float64, entropy=3)
    ref = sdeint(_StateFreeNoise(), y0, ts, bm=bm, method="euler", dt=0.05)
    torch.testing.assert_close(ys, ref, rtol=0, atol=1e-14)


class LinearScalarNoise(torch.nn.Module):
    """dY = a Y dt + B Y dW (Itô, one Brownian motion) with a non-symmetric B: Y(t) = exp((a - B²/2) t + B W(t)) Y0
    exactly (a·I commutes with B). The Milstein correction is ½ (∂g/∂y) g (ΔW² - Δt) = ½ B² Y (ΔW² - Δt); with the
    transposed Jacobian, Bᵀ B Y (torchsde 0.2.6's vector-Jacobian product), the order drops to 1/2."""

    noise_type, sde_type = "scalar", "ito"
    a = 0.1
    B = torch.tensor([[0.0, 1.0], [-0.5, 0.0]], dtype=torch.float64)

    def f(self, t, y):
        return self.a * y

    def g(self, t, y):
        return (y @ self.B.T).unsqueeze(-1)

    def exact(self, y0, w):
        drift = (self.a * torch.eye(2, dtype=torch.float64) - 0.5 * self.B @ self.B)
        flow = torch.linalg.matrix_exp(drift + w.reshape(-1, 1, 1) * self.B)
        return (flow @ y0.unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("method,order", [("euler", 0.5), ("milstein", 1.0)])
def test_strong_order_with_scalar_noise_and_a_non_symmetric_noise_jacobian(method, order):
    sde = LinearScalarNoise()
    y0 = torch.tensor([[1.0, 0.5]], dtype=torch.float64).expand(N_PATHS, 2)
    errors = _strong_errors(sde, method, lambda y0, bm: sde.exact(y0, bm(0.0, 1.0)), y0=y0)
    slope = _slope(DTS, errors)
    assert abs(slope - order) < 0.15, (slope, errors)
