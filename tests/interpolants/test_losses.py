"""The quadratic losses are minimised by the exact fields (paper Eqs. 2.13, 2.16, 2.19, Remark 2.10)."""
import pytest
import torch

from nde.interpolants import (MixtureInterpolantFields, denoiser_loss, interpolant_velocity_loss, linear,
                              one_sided_linear, sample_times, score_loss, standard_normal, velocity_loss)

LOSSES = {
    "b": (velocity_loss, "velocity"),
    "v": (interpolant_velocity_loss, "interpolant_velocity"),
    "s": (score_loss, "score"),
    "eta": (denoiser_loss, "denoiser"),
}


def _batch(interp, rho0, rho1, n, gen):
    x1 = rho1.sample(n, gen)
    x0 = torch.randn(n, 2, generator=gen, dtype=torch.float64) if interp.one_sided else rho0.sample(n, gen)
    z = torch.randn(n, 2, generator=gen, dtype=torch.float64)
    t = sample_times(n, 0.05, 0.95, gen, dtype=torch.float64)
    return t, x0, x1, z


@pytest.mark.parametrize("interp", [linear(), one_sided_linear()], ids=lambda i: i.name)
@pytest.mark.parametrize("which", list(LOSSES))
def test_exact_field_minimises_loss(interp, which, two_mixtures):
    rho0, rho1 = two_mixtures
    if interp.one_sided:
        rho0 = standard_normal(2, dtype=torch.float64)
    fields = MixtureInterpolantFields(interp, rho0, rho1)
    loss_fn, attr = LOSSES[which]
    exact = getattr(fields, attr)
    gen = torch.Generator().manual_seed(1)
    t, x0, x1, z = _batch(interp, rho0, rho1, 20000, gen)
    direction = torch.tensor([0.6, -0.8], dtype=torch.float64)

    def perturbed(c):
        return lambda tt, x: exact(tt, x) + c * (direction + 0.3 * torch.tanh(x))

    base = loss_fn(exact, interp, t, x0, x1, z)
    for c in (-0.1, 0.1):
        assert loss_fn(perturbed(c), interp, t, x0, x1, z) > base
    # First variation at the exact field is ~0: the loss is flat to first order there.
    c = 1e-3
    slope = (loss_fn(perturbed(c), interp, t, x0, x1, z) - loss_fn(perturbed(-c), interp, t, x0, x1, z)) / (2 * c)
    curvature = 2 * (loss_fn(perturbed(0.3), interp, t, x0, x1, z) - base) / 0.3 ** 2
    assert abs(float(slope)) < 0.05 * float(curvature)


def test_losses_equal_half_squared_error_up_to_constant(two_mixtures):
    """L_eta[f] - L_eta[g] = 1/2 E|f - eta*|^2 - 1/2 E|g - eta*|^2 (up to Monte-Carlo error)."""
    rho0, rho1 = two_mixtures
    interp = linear()
    fields = MixtureInterpolantFields(interp, rho0, rho1)
    gen = torch.Generator().manual_seed(2)
    t, x0, x1, z = _batch(interp, rho0, rho1, 40000, gen)
    shift = torch.tensor([0.5, 0.0], dtype=torch.float64)
    diff = denoiser_loss(lambda tt, x: fields.denoiser(tt, x) + shift, interp, t, x0, x1, z) \
        - denoiser_loss(fields.denoiser, interp, t, x0, x1, z)
    assert abs(float(diff) - 0.125) < 0.01


def test_antithetic_keeps_score_loss_variance_bounded(two_mixtures):
    """Near t = 0 the plain L_s estimator's variance grows like 1/gamma^2; the antithetic one stays bounded."""
    rho0, rho1 = two_mixtures
    interp = linear()
    fields = MixtureInterpolantFields(interp, rho0, rho1)
    gen = torch.Generator().manual_seed(3)

    def estimator_variance(t_value, antithetic):
        values = []
        for _ in range(100):
            t, x0, x1, z = _batch(interp, rho0, rho1, 20, gen)
            t = torch.full_like(t, t_value)
            values.append(float(score_loss(fields.score, interp, t, x0, x1, z, antithetic=antithetic)))
        return torch.tensor(values).var()

    # gamma^2 = 2t(1-t): t 1e-3 -> 1e-4 shrinks gamma^2 tenfold.
    plain = [estimator_variance(t, False) for t in (1e-3, 1e-4)]
    anti = [estimator_variance(t, True) for t in (1e-3, 1e-4)]
    assert plain[1] > 5 * plain[0]
    assert anti[1] < 2 * anti[0]
    assert plain[1] > 100 * anti[1]
