"""Interpolant losses, samplers and training refuse bad shapes and values with errors that name the argument;
float32 intervals that are valid in float64 work."""
import math

import pytest
import torch

from nde.interpolants import (Gamma, InterpolantTask, checkerboard, denoiser_loss, gaussian_log_prob,
                              interpolant_velocity_loss, linear, log_likelihood, one_sided_linear, sample_ode,
                              sample_sde, score_loss, trigonometric, velocity_loss)
from nde.training import Trainer

B = 16


def _batch():
    gen = torch.Generator().manual_seed(0)
    x0, x1, z = (torch.randn(B, 2, generator=gen) for _ in range(3))
    return 0.05 + 0.9 * torch.rand(B, generator=gen), x0, x1 + 3, z


def _half(t, x):
    return 0.5 * x


LOSSES = [velocity_loss, interpolant_velocity_loss, score_loss, denoiser_loss]


@pytest.mark.parametrize("loss", LOSSES)
def test_losses_refuse_times_of_shape_b_by_1(loss):
    t, x0, x1, z = _batch()
    with pytest.raises(ValueError, match=r"t must .* shape \(16,\), got \(16, 1\)"):
        loss(_half, linear(), t[:, None], x0, x1, z)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("which", ["x0", "x1", "z"])
def test_losses_refuse_samples_of_another_shape(loss, which):
    t, x0, x1, z = _batch()
    args = {"x0": x0, "x1": x1, "z": z}
    args[which] = args[which][:, :1]
    with pytest.raises(ValueError, match=which):
        loss(_half, linear(), t, args["x0"], args["x1"], args["z"])


@pytest.mark.parametrize("loss, name", [(velocity_loss, "b"), (interpolant_velocity_loss, "v"), (score_loss, "s"),
                                        (denoiser_loss, "eta")])
def test_losses_refuse_a_field_of_the_wrong_width(loss, name):
    t, x0, x1, z = _batch()
    with pytest.raises(ValueError, match=rf"{name}\(t, x\) has shape \(16, 1\)"):
        loss(lambda t, x: x[:, :1], linear(), t, x0, x1, z)


def test_x_t_refuses_times_of_shape_b_by_1_and_accepts_a_scalar():
    t, x0, x1, z = _batch()
    interp = linear()
    with pytest.raises(ValueError, match="t must"):
        interp.x_t(t[:, None], x0, x1, z)
    torch.testing.assert_close(interp.x_t(0.3, x0, x1, z), interp.x_t(torch.full((B,), 0.3), x0, x1, z))


def test_gamma_must_be_a_gamma_below_one_for_the_trigonometric_path():
    with pytest.raises(TypeError, match="gamma"):
        linear("brownian")
    with pytest.raises(ValueError, match="gamma < 1"):
        trigonometric(Gamma("bsquared", a=8.0))
    assert trigonometric(Gamma("bsquared", a=3.9)).alpha(torch.tensor([0.5])) > 0


def test_sample_ode_accepts_float32_intervals_and_matches_the_closed_form():
    """b = -x/2 on [1e-3, 1 - 1e-3] in float32 (refused before: float32(0.999) > 0.999)."""
    x = torch.randn(B, 2, generator=torch.Generator().manual_seed(1))
    t0, t1 = 1e-3, 1 - 1e-3
    out = sample_ode(lambda t, y: -0.5 * y, x, t0, t1, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out, x * math.exp(-0.5 * (t1 - t0)), rtol=1e-5, atol=1e-6)
    path = sample_ode(lambda t, y: -0.5 * y, x, 0.2, 0.8, times=torch.linspace(0.2, 0.8, 4), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(path[-1], x * math.exp(-0.3), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="times"):
        sample_ode(lambda t, y: -0.5 * y, x, 0.2, 0.8, times=torch.linspace(0.1, 0.8, 4))


def test_sample_sde_accepts_float32_intervals_and_matches_euler():
    """With eps = 0 the SDE is the ODE and Euler-Maruyama is Euler: X = x (1 - dt/2)^steps, dt = (t1 - t0)/steps."""
    x = torch.randn(B, 2, generator=torch.Generator().manual_seed(2))
    t0, t1, steps = 1e-3, 1 - 1e-3, 10
    out = sample_sde(lambda t, y: -0.5 * y, lambda t, y: -y, x, 0.0, t0, t1, steps=steps)
    torch.testing.assert_close(out, x * (1 - 0.5 * (t1 - t0) / steps) ** steps)
    noisy = sample_sde(lambda t, y: -0.5 * y, lambda t, y: -y, x, 0.5, t0, t1, steps=steps)
    assert noisy.dtype == torch.float32 and torch.isfinite(noisy).all()


def test_sample_sde_heun_is_heun_and_has_weak_order_two():
    """eps = 0: Heun on dx/dt = -x/2 is x (1 - h/2 + h^2/8)^steps exactly. With b = -x, s = -x, eps = 1 the forward
    SDE is dX = -2X dt + sqrt(2) dW (law at t = 1 from X0 = 1: mean e^-2, variance (1 - e^-4)/2). One step is
    X' = a X + c sqrt(2) dW with a = 1 - 2h (Euler-Maruyama), a = 1 - 2h + 2h^2 and c = 1 - h (Heun), so the
    moments after n steps are a^n and 2h c^2 (1 - a^2n) / (1 - a^2): the samples match these recursions, and
    Heun's variance error is far below Euler-Maruyama's (weak order 2 vs 1 for additive noise)."""
    x = torch.randn(B, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    steps, h = 10, 1.0 / 10
    out = sample_sde(lambda t, y: -0.5 * y, lambda t, y: -y, x, 0.0, steps=steps, method="heun")
    torch.testing.assert_close(out, x * (1 - h / 2 + h * h / 8) ** steps)
    n, steps, h = 200_000, 8, 1.0 / 8
    ones = torch.ones(n, 1, dtype=torch.float64)
    true_var = (1 - math.exp(-4)) / 2
    schemes = {"euler": (1 - 2 * h, 1.0), "heun": (1 - 2 * h + 2 * h * h, 1 - h)}
    for method, (a, c) in schemes.items():
        end = sample_sde(lambda t, y: -y, lambda t, y: -y, ones, 1.0, steps=steps, method=method,
                         generator=torch.Generator().manual_seed(5))
        var = 2 * h * c * c * (1 - a ** (2 * steps)) / (1 - a * a)
        assert abs(float(end.mean()) - a ** steps) < 5 * math.sqrt(var / n)
        assert abs(float(end.var()) - var) < 5 * var * math.sqrt(2 / n)
    errors = {m: abs(2 * h * c * c * (1 - a ** (2 * steps)) / (1 - a * a) - true_var) for m, (a, c) in schemes.items()}
    assert errors["heun"] < errors["euler"] / 5
    with pytest.raises(ValueError, match="method"):
        sample_sde(lambda t, y: -y, lambda t, y: -y, x, 1.0, steps=4, method="milstein")


def test_sample_sde_checks_the_fields_and_eps():
    x = torch.randn(B, 2, generator=torch.Generator().manual_seed(3))
    b, s = (lambda t, y: -0.5 * y), (lambda t, y: -y)
    with pytest.raises(ValueError, match=r"s\(t, x\) has shape \(16, 1\)"):
        sample_sde(b, lambda t, y: -y[:, :1], x, 0.5, steps=4)
    with pytest.raises(ValueError, match=r"b\(t, x\) has shape \(1, 2\)"):
        sample_sde(lambda t, y: -y[:1], s, x, 0.5, steps=4)
    with pytest.raises(ValueError, match="eps"):
        sample_sde(b, s, x, lambda t: -torch.ones_like(t), steps=4)
    with pytest.raises(ValueError, match=r"eps\(t\) returned shape"):
        sample_sde(b, s, x, lambda t: torch.ones(3), steps=4)
    constant = sample_sde(b, s, x, 0.5, steps=4, generator=torch.Generator().manual_seed(0))
    as_float = sample_sde(b, s, x, lambda t: 0.5, steps=4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(as_float, constant, rtol=0, atol=0)


def test_log_likelihood_of_a_field_independent_of_x():
    """b = 1 has divergence 0: log rho(1, x) = log N(x - 1; 0, I) (failed before: 'does not require grad')."""
    x = torch.randn(B, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    for divergence in ("exact", "hutchinson"):
        logp = log_likelihood(lambda t, y: torch.ones_like(y), x, gaussian_log_prob, divergence=divergence,
                              generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(logp, gaussian_log_prob(x - 1), rtol=1e-7, atol=1e-7)


def test_log_likelihood_checks_shapes():
    x = torch.randn(B, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    with pytest.raises(ValueError, match="base_log_prob"):
        log_likelihood(_half, x, lambda y: gaussian_log_prob(y)[:, None])
    with pytest.raises(ValueError, match=r"b\(t, x\) has shape"):
        log_likelihood(lambda t, y: y[:, :1], x, gaussian_log_prob)


def _task(**kwargs):
    settings = {"fields": ("b",), "batch_size": 16, "hidden": 8, "depth": 1, **kwargs}
    return InterpolantTask(one_sided_linear(), settings.pop("sample_target", checkerboard), 2, **settings)


@pytest.mark.parametrize("kwargs, word", [
    ({"batch_size": 0}, "batch_size"),
    ({"lr": 0.0}, "lr"),
    ({"lr": -1e-3}, "lr"),
    ({"lr_decay": -1.0}, "lr_decay"),
    ({"lr_decay": 1.5}, "lr_decay"),
    ({"lr_decay_every": 0}, "lr_decay_every"),
    ({"t_min": 0.9, "t_max": 0.1}, "t_min"),
    ({"activation": "gelu"}, "activation"),
])
def test_interpolant_task_refuses_bad_hyperparameters(kwargs, word):
    with pytest.raises(ValueError, match=word):
        _task(**kwargs)


def test_interpolant_task_checks_the_sampler_output():
    task = _task(sample_target=lambda n, g: checkerboard(n, g)[:, :1])
    with pytest.raises(ValueError, match=r"sample_target\(n, generator\) returned shape \(16, 1\)"):
        Trainer(task, 2).fit()


def test_relu_fields_are_piecewise_linear_in_x():
    """activation="relu" (the paper's networks) reaches the field networks: along a line in x the field's
    second differences vanish except at the few kinks, unlike the smooth SiLU default."""
    torch.manual_seed(0)
    x = torch.linspace(-2, 2, 2001, dtype=torch.float64)[:, None] * torch.tensor([[1.0, 0.3]], dtype=torch.float64)
    t = torch.full((x.shape[0],), 0.5, dtype=torch.float64)
    kinked = {}
    for activation in ("relu", "silu"):
        net = _task(activation=activation, hidden=16).networks["b"].double()
        with torch.no_grad():
            second = net(t, x).diff(n=2, dim=0).abs().amax(1)
        kinked[activation] = float((second > 1e-12).float().mean())
    assert kinked["relu"] < 0.05 < 0.9 < kinked["silu"]
    assert _task(activation="relu").settings()["activation"] == "relu"


def test_mixture_with_integer_means_keeps_fractional_weights_and_variances():
    """Python-int means no longer truncate the other arguments to integers (variances 2.5 became 2)."""
    from nde.interpolants import GaussianMixture
    mixture = GaussianMixture([1.0, 3.0], [[0, 0], [3, 3]], 2.5)
    assert mixture.means.dtype == torch.get_default_dtype()
    torch.testing.assert_close(mixture.variances, torch.tensor([2.5, 2.5]))
    torch.testing.assert_close(mixture.weights, torch.tensor([0.25, 0.75]))
    wide = GaussianMixture(torch.tensor([1.5, 2.5], dtype=torch.float64), [[0, 0], [3, 3]], 2.5)
    assert wide.means.dtype == torch.float64
    torch.testing.assert_close(wide.weights, torch.tensor([0.375, 0.625], dtype=torch.float64))


@pytest.mark.parametrize("name", ["weights", "means", "variances"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_mixture_refuses_non_finite_arguments(name, bad):
    from nde.interpolants import GaussianMixture
    args = {"weights": torch.tensor([1.0, 3.0]), "means": torch.tensor([[0.0, 0.0], [3.0, 3.0]]),
            "variances": torch.tensor([0.5, 2.5])}
    args[name] = args[name].clone().view(-1).index_fill(0, torch.tensor([1]), bad).view(args[name].shape)
    with pytest.raises(ValueError, match=f"{name} must be finite, got 1 NaN or infinite"):
        GaussianMixture(**args)


def test_integer_samples_are_refused_instead_of_truncating_the_time():
    """The time is cast to the samples' dtype: with integer samples t = 0.5 became 0, so x_t returned x0 and the
    losses trained on t = 0 (where gamma_dot is infinite) without a word."""
    from nde.distill import diffuse
    from nde.interpolants import GaussianMixture, MixtureInterpolantFields
    x0, x1, z = (torch.arange(8).reshape(4, 2) + k for k in range(3))
    interp = linear()
    with pytest.raises(TypeError, match="x1 must be a floating-point"):
        interp.x_t(0.5, x0, x1, z)
    with pytest.raises(TypeError, match="x1 must be a floating-point"):
        velocity_loss(_half, interp, 0.5, x0, x1, z)
    with pytest.raises(TypeError, match="x must be a floating-point"):
        diffuse(x1, 0.5, z)
    mixture = GaussianMixture(torch.ones(1), torch.zeros(1, 2), 1.0)
    with pytest.raises(TypeError, match="x must be a floating-point"):
        MixtureInterpolantFields(interp, mixture, mixture).velocity(0.5, x1)
    torch.testing.assert_close(interp.x_t(0.5, x0.double(), x1.double(), z.double()),
                               0.5 * (x0 + x1).double() + 0.5 ** 0.5 * z.double())


def test_mixture_density_and_score_take_points_of_another_dtype_and_check_their_dimension():
    """A float64 x against a float32 mixture (e.g. ``standard_normal(2).log_prob`` as the base density of a float64
    likelihood) failed inside torch.cdist, as did a point of the wrong dimension. Reference: the Gaussian formulas."""
    from nde.interpolants import GaussianMixture
    mixture = GaussianMixture(torch.tensor([0.25, 0.75]), torch.tensor([[0.0, 1.0], [2.0, -1.0]]),
                              torch.tensor([0.5, 2.0]))
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    means, var = mixture.means.double(), mixture.variances.double()
    log_comp = (mixture.weights.double().log() - 0.5 * torch.cdist(x, means).square() / var
                - torch.log(2 * math.pi * var))
    torch.testing.assert_close(mixture.log_prob(x), torch.logsumexp(log_comp, 1))
    resp = torch.softmax(log_comp, 1)
    torch.testing.assert_close(mixture.score(x), -(resp[..., None] * (x[:, None] - means) / var[:, None]).sum(1))
    assert mixture.log_prob(x.float()).dtype == torch.float32
    for bad in (torch.zeros(3, 3), torch.zeros(3)):
        with pytest.raises(ValueError, match=r"x must be a floating-point \(n, 2\) tensor"):
            mixture.log_prob(bad)
        with pytest.raises(ValueError, match=r"x must be a floating-point \(n, 2\) tensor"):
            mixture.score(bad)


def test_field_conversions_take_a_scalar_time_like_x_t():
    """score_from_denoiser and velocity_from_denoiser failed with AttributeError on a float t (x_t takes one);
    a scalar t gives the same fields as the time broadcast over the batch."""
    gen = torch.Generator().manual_seed(7)
    x, eta, v = (torch.randn(B, 2, generator=gen, dtype=torch.float64) for _ in range(3))
    full = torch.full((B,), 0.3, dtype=torch.float64)
    for interp in (linear(), one_sided_linear()):
        torch.testing.assert_close(interp.score_from_denoiser(0.3, eta), interp.score_from_denoiser(full, eta))
        torch.testing.assert_close(interp.velocity_from_denoiser(0.3, x, eta, v),
                                   interp.velocity_from_denoiser(full, x, eta, v))
    torch.testing.assert_close(one_sided_linear().score_from_denoiser(0.3, eta), -eta / 0.7)


def test_exact_mixture_fields_check_their_arguments_and_points():
    """Points of the wrong dimension failed inside torch (a size mismatch at dimension 3, or IndexError for (B,));
    a non-interpolant failed with AttributeError at the first call."""
    from nde.interpolants import MixtureInterpolantFields, standard_normal
    fields = MixtureInterpolantFields(linear(), standard_normal(2), standard_normal(2))
    for bad in (torch.zeros(3, 3), torch.zeros(3)):
        for field in (fields.velocity, fields.score, fields.denoiser, fields.log_prob):
            with pytest.raises(ValueError, match=r"x must have shape \(B, 2\)"):
                field(0.5, bad)
    with pytest.raises(TypeError, match="interpolant must be"):
        MixtureInterpolantFields("linear", standard_normal(2), standard_normal(2))
    with pytest.raises(TypeError, match="rho1 must be"):
        MixtureInterpolantFields(linear(), standard_normal(2), torch.zeros(1, 2))


def test_samplers_name_an_empty_batch_a_seed_for_a_generator_and_a_bool_step_count():
    """log_likelihood of an empty batch failed with IndexError; a seed passed as ``generator`` failed inside
    torch.randint with a list of overloads; steps=True ran one step."""
    x = torch.randn(B, 2, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    with pytest.raises(ValueError, match=r"x must be a non-empty \(batch, \*state\) tensor"):
        log_likelihood(_half, x[:0], gaussian_log_prob)
    with pytest.raises(TypeError, match="`generator` must be a torch.Generator"):
        log_likelihood(_half, x, gaussian_log_prob, divergence="hutchinson", generator=3)
    with pytest.raises(TypeError, match="`generator` must be a torch.Generator"):
        sample_sde(_half, _half, x, 0.5, steps=4, generator=3)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        sample_sde(_half, _half, x, 0.5, steps=True)


def test_mixture_refuses_per_coordinate_variances_and_non_scalar_diffusion_coefficients():
    """(K, d) variances (a diagonal covariance) failed inside torch's expand; a (d,) alpha in ``diffused`` broadcast
    over the means' coordinates and gave a wrong mixture without a word."""
    from nde.interpolants import GaussianMixture
    means = torch.tensor([[0.0, 1.0], [2.0, -1.0]])
    with pytest.raises(ValueError, match=r"variances must be a float or a \(2,\) tensor"):
        GaussianMixture(torch.ones(2), means, torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"variances must be a float or a \(2,\) tensor"):
        GaussianMixture(torch.ones(2), means, torch.ones(3))
    mixture = GaussianMixture(torch.ones(2), means, torch.tensor([0.5, 2.0]))
    with pytest.raises(ValueError, match="alpha and sigma must be scalars"):
        mixture.diffused(torch.tensor([0.5, 0.5]), 0.3)
    noisy = mixture.diffused(torch.tensor([0.6]), 0.8)
    torch.testing.assert_close(noisy.means, 0.6 * means)
    torch.testing.assert_close(noisy.variances, 0.36 * torch.tensor([0.5, 2.0]) + 0.64)


def test_sample_ode_starts_at_t0_when_the_output_times_do_not():
    """x is at t0 (t1 when reverse): with times = [0.5, 1] the path used to start at 0.5 with x, so path[0] was x
    itself. Reference: the closed form x exp(-(t - t0) / 2) of dX/dt = -X/2."""
    x = torch.randn(B, 2, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    decay = lambda t, y: -0.5 * y  # noqa: E731
    path = sample_ode(decay, x, 0.0, 1.0, times=torch.tensor([0.5, 1.0], dtype=torch.float64), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(path, torch.stack([x * math.exp(-0.25), x * math.exp(-0.5)]), rtol=1e-7, atol=1e-7)
    back = sample_ode(decay, x, 0.2, 0.9, reverse=True, times=torch.tensor([0.2, 0.5], dtype=torch.float64),
                      rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(back, torch.stack([x * math.exp(0.2), x * math.exp(0.35)]), rtol=1e-7, atol=1e-7)
    full = sample_ode(decay, x, 0.2, 0.9, times=torch.tensor([0.2, 0.9]), rtol=1e-9, atol=1e-9)  # float32 times
    torch.testing.assert_close(full, torch.stack([x, x * math.exp(-0.35)]), rtol=1e-7, atol=1e-7)
