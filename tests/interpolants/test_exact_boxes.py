"""Exact fields of N(0, I) -> checkerboard (one-sided linear): checked by the defining conditional
expectations, by Eq. 4.19, and as minimisers of the denoiser loss."""
import math

import pytest
import torch

from nde.interpolants import BoxUniformFields, checkerboard, denoiser_loss, one_sided_linear


@pytest.mark.parametrize("t0", [0.3, 0.7, 0.95])
def test_denoiser_is_the_conditional_expectation(t0):
    """Tower property: E[eta(t, x_t) f(x_t)] = E[x0 f(x_t)] for test functions f (Monte Carlo, n = 40000)."""
    gen = torch.Generator().manual_seed(0)
    n = 40000
    x0 = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    x1 = checkerboard(n, gen, dtype=torch.float64)
    xt = (1 - t0) * x0 + t0 * x1
    eta = BoxUniformFields.checkerboard().denoiser(torch.full((n,), t0, dtype=torch.float64), xt)
    for f in (torch.ones_like(xt), xt, torch.sin(xt), torch.cos(2 * xt.flip(1))):
        lhs, rhs = (eta * f).mean(0), (x0 * f).mean(0)
        noise = ((x0 - eta) * f).std(0) / n ** 0.5  # the difference is a mean of zero-mean terms
        assert bool(((lhs - rhs).abs() < 4 * noise + 1e-12).all()), (f, lhs, rhs)


def test_velocity_matches_eq_4_19_and_losses_are_minimised():
    interp, fields = one_sided_linear(), BoxUniformFields.checkerboard()
    gen = torch.Generator().manual_seed(1)
    n = 20000
    t = torch.rand(n, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    x0 = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    x1 = checkerboard(n, gen, dtype=torch.float64)
    xt = interp.x_t(t, x0, x1)
    eta = fields.denoiser(t, xt)
    torch.testing.assert_close(fields.velocity(t, xt), interp.velocity_from_denoiser(t, xt, eta))
    exact = denoiser_loss(fields.denoiser, interp, t, x0, x1, None)
    for shift in (0.05, -0.05):
        perturbed = denoiser_loss(lambda s, x: fields.denoiser(s, x) + shift, interp, t, x0, x1, None)
        assert float(perturbed) > float(exact)


def test_box_arguments_are_checked():
    with pytest.raises(ValueError, match="highs > lows"):
        BoxUniformFields(torch.zeros(2, 2), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="equal volumes"):
        BoxUniformFields(torch.zeros(2, 2), torch.tensor([[1.0, 1.0], [2.0, 2.0]]))


def _posterior_mean_by_quadrature(m, s, lows, highs):
    """E[x1 | x_t] for the prior uniform on the boxes and the likelihood N(x1; m, s^2 I), by scipy's quad per box
    and coordinate; each integrand is scaled to peak at 1 on its interval and the scale kept as a log, so nothing
    underflows."""
    from scipy.integrate import quad
    log_masses, means = [], []
    for lo, hi in zip(lows, highs):
        log_mass, mean = 0.0, []
        for c, lo_c, hi_c in zip(m, lo, hi):
            gap = max(lo_c - c, 0.0, c - hi_c)

            def density(u, c=c, gap=gap):
                return math.exp(-((u - c) ** 2 - gap ** 2) / (2 * s * s))
            reach = math.sqrt(gap ** 2 + (40 * s) ** 2)  # the integrand is below e^-800 beyond c +- reach
            a, b = max(lo_c, c - reach), min(hi_c, c + reach)
            z = quad(density, a, b, epsabs=0, epsrel=1e-10)[0]
            mean.append(quad(lambda u: u * density(u), a, b, epsabs=0, epsrel=1e-10)[0] / z)
            log_mass += math.log(z) - gap ** 2 / (2 * s * s)
        log_masses.append(log_mass)
        means.append(mean)
    weights = [math.exp(v - max(log_masses)) for v in log_masses]
    return [sum(w * mean[i] for w, mean in zip(weights, means)) / sum(weights) for i in range(len(m))]


@pytest.mark.parametrize("t0", [0.5, 0.9, 0.99])
def test_expected_target_off_the_support(t0):
    """Points in the white squares, many standard deviations (1 - t) / t from every black one: the posterior mean
    by quadrature (Phi(b) - Phi(a) used to cancel to 0 there, 8.3 standard deviations from a box, and the
    division by it gave box means of order 1e288)."""
    fields = BoxUniformFields.checkerboard()
    targets = torch.tensor([[1.0, 3.0], [-3.0, 3.0], [3.0, -1.0], [0.5, 12.0]], dtype=torch.float64)
    x = t0 * targets
    got = fields.expected_target(torch.full((4,), t0, dtype=torch.float64), x)
    s = (1 - t0) / t0
    lows, highs = fields.lows.tolist(), fields.highs.tolist()
    expected = torch.tensor([_posterior_mean_by_quadrature(m, s, lows, highs) for m in targets.tolist()],
                            dtype=torch.float64)
    torch.testing.assert_close(got, expected, rtol=1e-8, atol=1e-8)
    assert bool(torch.isfinite(fields.denoiser(torch.full((4,), t0), x.float())).all())
