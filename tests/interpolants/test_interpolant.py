"""Boundary conditions, time derivatives and field identities of the interpolant family."""
import pytest
import torch

from nde.interpolants import (Gamma, MixtureInterpolantFields, encoder_decoder, linear, mirror,
                              one_sided_linear, one_sided_trigonometric, standard_normal, trigonometric)

TWO_SIDED = [linear(), linear(Gamma("bsquared")), trigonometric(), trigonometric(Gamma("brownian", 1.0)),
             encoder_decoder()]
ALL = TWO_SIDED + [one_sided_linear(), one_sided_trigonometric(), mirror()]


@pytest.mark.parametrize("interp", ALL, ids=lambda i: f"{i.name}-{i.gamma.kind}")
def test_boundary_conditions(interp):
    x0, x1, z = (torch.randn(5, 3, dtype=torch.float64) for _ in range(3))
    zero, one = torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64)
    expected_start = x1 if interp.name == "mirror" else x0
    torch.testing.assert_close(interp.x_t(zero, x0, x1, z), expected_start)
    torch.testing.assert_close(interp.x_t(one, x0, x1, z), x1)


@pytest.mark.parametrize("interp", ALL, ids=lambda i: f"{i.name}-{i.gamma.kind}")
def test_velocity_target_is_time_derivative(interp):
    """d/dt x_t by central finite differences equals velocity_target away from kinks."""
    x0, x1, z = (torch.randn(6, 2, dtype=torch.float64) for _ in range(3))
    t = torch.tensor([0.1, 0.3, 0.45, 0.55, 0.7, 0.9], dtype=torch.float64)
    h = 1e-6
    fd = (interp.x_t(t + h, x0, x1, z) - interp.x_t(t - h, x0, x1, z)) / (2 * h)
    torch.testing.assert_close(interp.velocity_target(t, x0, x1, z), fd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind,a", [("brownian", 2.0), ("bsquared", 1.0), ("sinesquared", 1.0)])
def test_gamma_vanishes_at_ends_and_derivatives(kind, a):
    g = Gamma(kind, a)
    ends = torch.tensor([0.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(g(ends), torch.zeros(2, dtype=torch.float64))
    t = torch.linspace(0.05, 0.95, 11, dtype=torch.float64)
    assert bool((g(t) > 0).all())
    fd = (g(t + 1e-6) - g(t - 1e-6)) / 2e-6
    torch.testing.assert_close(g.dot(t), fd, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(g.gamma_dot_gamma(t), g(t) * fd, rtol=1e-6, atol=1e-7)


def test_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        Gamma("nope")
    with pytest.raises(ValueError, match="t_min"):
        from nde.interpolants import sample_times
        sample_times(4, t_min=0.5, t_max=0.2)


FIELD_CASES = [("linear", lambda: linear()), ("trig", lambda: trigonometric()),
               ("one_sided_linear", lambda: one_sided_linear()), ("mirror", lambda: mirror())]


def _fields(interp, two_mixtures):
    rho0, rho1 = two_mixtures
    if interp.one_sided:
        rho0 = standard_normal(2, dtype=torch.float64)
    return MixtureInterpolantFields(interp, rho0, rho1)


@pytest.mark.parametrize("name,make", FIELD_CASES, ids=[c[0] for c in FIELD_CASES])
def test_exact_score_is_gradient_of_log_density(name, make, two_mixtures):
    fields = _fields(make(), two_mixtures)
    x = 2 * torch.randn(64, 2, dtype=torch.float64)
    t = torch.rand(64, dtype=torch.float64) * 0.9 + 0.05
    xg = x.clone().requires_grad_(True)
    grad = torch.autograd.grad(fields.log_prob(t, xg).sum(), xg)[0]
    torch.testing.assert_close(fields.score(t, x), grad)


@pytest.mark.parametrize("name,make", FIELD_CASES, ids=[c[0] for c in FIELD_CASES])
def test_exact_velocity_solves_continuity_equation(name, make, two_mixtures):
    """d/dt log rho + div b + b . grad log rho = 0 (transport equation, paper Thm 2.2)."""
    fields = _fields(make(), two_mixtures)
    x = 2 * torch.randn(32, 2, dtype=torch.float64)
    t = torch.rand(32, dtype=torch.float64) * 0.8 + 0.1
    h = 1e-5
    dlogp_dt = (fields.log_prob(t + h, x) - fields.log_prob(t - h, x)) / (2 * h)
    xg = x.clone().requires_grad_(True)
    b = fields.velocity(t, xg)
    div = sum(torch.autograd.grad(b[:, i].sum(), xg, retain_graph=True)[0][:, i] for i in range(2))
    residual = dlogp_dt + div + (b * fields.score(t, x)).sum(1)
    assert residual.abs().max() < 1e-5


@pytest.mark.parametrize("name,make", FIELD_CASES, ids=[c[0] for c in FIELD_CASES])
def test_velocity_from_denoiser_identities(name, make, two_mixtures):
    """b = v + gamma_dot eta (two-sided), Eq. 4.19 (one-sided), s = -eta / scale."""
    interp = make()
    fields = _fields(interp, two_mixtures)
    x = 2 * torch.randn(50, 2, dtype=torch.float64)
    t = torch.rand(50, dtype=torch.float64) * 0.8 + 0.1
    eta = fields.denoiser(t, x)
    v = None if interp.one_sided else fields.interpolant_velocity(t, x)
    torch.testing.assert_close(interp.velocity_from_denoiser(t, x, eta, v), fields.velocity(t, x))
    torch.testing.assert_close(interp.score_from_denoiser(t, eta), fields.score(t, x))
    if name == "mirror":  # b = gamma_dot eta needs no v (Remark 3.8)
        torch.testing.assert_close(interp.velocity_from_denoiser(t, x, eta), fields.velocity(t, x))


def test_training_task_argument_errors():
    from nde.interpolants import InterpolantTask, checkerboard
    with pytest.raises(ValueError, match="fields"):
        InterpolantTask(one_sided_linear(), checkerboard, 2, fields=("q",))
    with pytest.raises(ValueError, match="sample_base"):
        InterpolantTask(linear(), checkerboard, 2)
    task = InterpolantTask(one_sided_linear(), checkerboard, 2, fields=("b",), hidden=8, depth=1)
    with pytest.raises(ValueError, match="eta"):
        task.field("eta")
