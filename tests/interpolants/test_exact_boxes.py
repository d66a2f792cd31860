"""Exact fields of N(0, I) -> checkerboard (one-sided linear): checked by the defining conditional
expectations, by Eq. 4.19, and as minimisers of the denoiser loss."""
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
