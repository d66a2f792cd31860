"""Bad input to the samplers, schedules and statistics is refused with an error that names the argument."""
import numpy as np
import pytest
import torch

from nde.diffusion import (EDM, VE, DiffusersUNet, EDMSDE, GaussianMixture, LambdaODE, NoisePredictor, ReverseSDE,
                           RhoODE, SamplingClock, DPMSolverV3, GaussianMixtureNoisePredictor, ModelStatistics,
                           VPCosine, VPDiscrete, VPLinear, adjoint_sample, ddim, dpm_solver_pp, edm_sampler, edm_sde,
                           estimate_statistics, probability_flow_reference, reverse_sde, ring_mixture, sampling_times,
                           unipc)

SCHEDULE = VPLinear()
MIXTURE = ring_mixture()
MODEL = GaussianMixtureNoisePredictor(MIXTURE, SCHEDULE)
X_T = torch.randn(8, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
STATS = ModelStatistics.degenerate(SCHEDULE, (2,), 50)

SAMPLERS = {
    "ddim": lambda m, x, **k: ddim(m, x, SCHEDULE, 5, **k),
    "dpm_solver_pp": lambda m, x, **k: dpm_solver_pp(m, x, SCHEDULE, 5, order=3, **k),
    "unipc": lambda m, x, **k: unipc(m, x, SCHEDULE, 5, **k),
    "reverse_sde": lambda m, x, **k: reverse_sde(m, x, SCHEDULE, 5, generator=torch.Generator().manual_seed(0), **k),
    "reverse_sde_euler": lambda m, x, **k: reverse_sde(m, x, SCHEDULE, 5, method="euler", **k),
    "edm_sde": lambda m, x, **k: edm_sde(m, x, SCHEDULE, 5, **k),
    "edm_sampler": lambda m, x, **k: edm_sampler(m, x, SCHEDULE, 5, **k),
    "dpm_solver_v3": lambda m, x, **k: DPMSolverV3(STATS, SCHEDULE, 5).sample(m, x),
    "adjoint_sample": lambda m, x, **k: adjoint_sample(m, x, SCHEDULE, 5, **k),
    "probability_flow_reference": lambda m, x, **k: probability_flow_reference(m, x, SCHEDULE, rtol=1e-5, atol=1e-5,
                                                                               **k),
}


def _narrow_model(x, t):
    """A network built with the wrong output width: eps of shape (B, 1) for x of shape (B, 2)."""
    return MODEL(x, t)[:, :1]


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_model_output_of_the_wrong_shape_is_refused(name):
    with pytest.raises(ValueError, match=r"returned shape \(8, 1\)"):
        SAMPLERS[name](_narrow_model, X_T)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v", "score"])
@pytest.mark.parametrize("out_shape", [(8, 1), (1, 2)])
def test_wrapped_net_output_of_the_wrong_shape_is_refused_for_every_prediction(prediction, out_shape):
    """to_eps broadcasts x against an x0 / v output of shape (8, 1) or (1, 2): the raw output is checked."""
    net = lambda x, t, *cond: x[:out_shape[0], :out_shape[1]]
    wrapped = {"plain": NoisePredictor(net, SCHEDULE, prediction),
               "cond": NoisePredictor(net, SCHEDULE, prediction, cond=torch.ones(8, 3)),
               "guided": NoisePredictor(net, SCHEDULE, prediction, cond=torch.ones(3), uncond=torch.zeros(3),
                                        guidance_scale=2.0),
               "diffusers": DiffusersUNet(lambda x, t, encoder_hidden_states=None: net(x, t), SCHEDULE, prediction)}
    for name, model in wrapped.items():
        with pytest.raises(ValueError, match=r"net\(x, t.*\) returned shape \(\d+, \d\), expected x's shape"):
            dpm_solver_pp(model, X_T, SCHEDULE, 5)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("other", [VPCosine(), VPLinear(beta_1=10.0)], ids=["VPCosine", "VPLinear-beta_1=10"])
def test_a_model_built_for_another_schedule_is_refused(name, other):
    """The samplers run on SCHEDULE (VPLinear()); the model's eps belongs to another noise law."""
    with pytest.raises(ValueError, match=r"schedule VPLinear\(.*model.schedule = " + other.config()["name"]):
        SAMPLERS[name](GaussianMixtureNoisePredictor(MIXTURE, other), X_T)


@pytest.mark.parametrize("build", [
    lambda m: estimate_statistics(m, MIXTURE.sample(16), SCHEDULE, n_grid=3, progress=False),
    lambda m: ReverseSDE(m, SCHEDULE, (2,)),
    lambda m: EDMSDE(m, SCHEDULE, (2,)),
    lambda m: RhoODE(m, SCHEDULE),
    lambda m: LambdaODE(m, SCHEDULE),
    lambda m: ddim(DiffusersUNet(lambda x, t, encoder_hidden_states=None: x, m.schedule), X_T, SCHEDULE, 5),
    lambda m: ddim(NoisePredictor(lambda x, t: x, m.schedule), X_T, SCHEDULE, 5),
], ids=["estimate_statistics", "ReverseSDE", "EDMSDE", "RhoODE", "LambdaODE", "DiffusersUNet", "NoisePredictor"])
def test_every_model_and_schedule_pair_is_compared(build):
    with pytest.raises(ValueError, match="model.schedule = VPCosine"):
        build(GaussianMixtureNoisePredictor(MIXTURE, VPCosine()))


def test_a_model_schedule_with_another_sampling_interval_is_the_same_law():
    model = GaussianMixtureNoisePredictor(MIXTURE, VPLinear(t_start=0.5, t_end=1e-2))
    torch.testing.assert_close(ddim(model, X_T, SCHEDULE, 5), ddim(MODEL, X_T, SCHEDULE, 5), rtol=0, atol=0)


def test_statistics_refuse_a_model_output_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"model\(x, t\) returned shape \(64, 1\)"):
        estimate_statistics(_narrow_model, MIXTURE.sample(64), SCHEDULE, n_grid=3, progress=False)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("x_T, error", [
    (torch.randint(-2, 3, (8, 2)), TypeError),         # integer noise: the model would see truncated times
    ([[0.1, 0.2]], TypeError),
    (np.zeros((8, 2)), TypeError),
    (torch.randn(2, dtype=torch.float64), ValueError),  # 1-D: no batch dimension
], ids=["int", "list", "numpy", "1-D"])
def test_x_T_must_be_a_floating_point_batch(name, x_T, error):
    with pytest.raises(error, match="x_T"):
        SAMPLERS[name](MODEL, x_T)


def test_integer_x_T_no_longer_evaluates_the_model_at_a_truncated_time():
    seen = []

    def recording(x, t):
        seen.append(float(t[0]))
        return torch.zeros(x.shape, dtype=torch.float64)

    with pytest.raises(TypeError, match="floating-point"):
        ddim(recording, torch.randint(-2, 3, (4, 2)), SCHEDULE, 5, t_start=0.8)
    assert seen == []
    ddim(recording, torch.randint(-2, 3, (4, 2)).double(), SCHEDULE, 5, t_start=0.8)
    assert seen[0] == pytest.approx(0.8)


@pytest.mark.parametrize("call, word", [
    (lambda: ddim(MODEL, X_T, SCHEDULE, 5, t_start=-0.01, t_end=-0.5), "t_end"),
    (lambda: ddim(MODEL, X_T, SCHEDULE, 5, t_end=0.0), "t_end"),
    (lambda: ddim(GaussianMixtureNoisePredictor(MIXTURE, VPCosine()), X_T, VPCosine(), 5, t_start=1.2), "t_start"),
    (lambda: sampling_times(EDM(), 5, t_end=0.0), "t_end"),
    (lambda: sampling_times(VE(), 5, t_end=-0.1), "t_end"),
    (lambda: sampling_times(VPDiscrete(betas=torch.linspace(1e-4, 0.02, 100)), 5, t_start=1.5), "t_start"),
    (lambda: sampling_times(VPDiscrete(betas=torch.linspace(1e-4, 0.02, 100)), 5, t_end=0.0), "t_end"),
    (lambda: edm_sampler(MODEL, X_T, SCHEDULE, 5, t_end=0.0), "t_end"),
    (lambda: ModelStatistics.degenerate(SCHEDULE, (2,), 10, t_end=0.0), "t_end"),
    (lambda: adjoint_sample(MODEL, X_T, SCHEDULE, None, method="dopri5", t_end=-0.1), "t_end"),
    (lambda: adjoint_sample(MODEL, X_T, SCHEDULE, 4, t_start=0.001, t_end=1.0), "t_end < t_start"),
    (lambda: probability_flow_reference(MODEL, X_T, SCHEDULE, t_end=0.0), "t_end"),
    (lambda: reverse_sde(MODEL, X_T, SCHEDULE, 5, method="euler", t_end=0.0), "t_end"),
])
def test_times_outside_the_schedule_domain_are_refused(call, word):
    with pytest.raises(ValueError, match=word):
        call()


@pytest.mark.parametrize("rho", [float("nan"), float("inf"), -1.0, 0, True, "7"])
def test_rho_must_be_a_finite_positive_number(rho):
    with pytest.raises(ValueError, match="rho"):
        sampling_times(SCHEDULE, 4, "edm", rho=rho)
    with pytest.raises(ValueError, match="rho"):
        SamplingClock(SCHEDULE, "edm", rho=rho)


def test_edm_spacing_is_karras_eq_5_for_any_positive_rho():
    """sigma_i^{1/rho} linear in i (sigma = e^{-lambda}); large rho tends to the logSNR spacing, small rho does not
    overflow (it crowds the interior steps at t_start)."""
    lam_ends = SCHEDULE.lambda_(torch.tensor([SCHEDULE.t_start, SCHEDULE.t_end], dtype=torch.float64))
    sigma_max, sigma_min = torch.exp(-lam_ends).tolist()
    ramp = torch.linspace(0, 1, 5, dtype=torch.float64)
    for rho in (0.5, 3.0, 7.0):
        noise = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
        times = sampling_times(SCHEDULE, 4, "edm", rho=rho)
        # rtol 1e-7: the reference formula itself cancels (sigma_max^{1/rho} - sigma_min^{1/rho} for small rho)
        torch.testing.assert_close(SCHEDULE.lambda_(times), -torch.log(noise), rtol=1e-7, atol=1e-7)
        clock = SamplingClock(SCHEDULE, "edm", rho=rho)
        torch.testing.assert_close(torch.stack([clock(u)[0] for u in ramp]), times, rtol=1e-7, atol=1e-12)
    torch.testing.assert_close(sampling_times(SCHEDULE, 4, "edm", rho=1e15), sampling_times(SCHEDULE, 4, "logSNR"),
                               rtol=1e-9, atol=0)
    crowded = sampling_times(SCHEDULE, 4, "edm", rho=1e-3)
    assert bool((crowded[1:] < crowded[:-1]).all()) and crowded[3] > 0.99


def test_valid_domain_edges_are_accepted():
    assert sampling_times(VE(), 5, t_end=0.0)[-1] == 0.0   # VE is defined at t = 0
    times = sampling_times(VPCosine(), 5, t_start=1 - 2**-53)   # alpha(1) = 0: t = 1 itself is refused
    assert torch.isfinite(times).all() and bool((times[1:] < times[:-1]).all())



@pytest.mark.parametrize("sampler", [dpm_solver_pp, unipc])
def test_steps_that_round_to_the_same_time_are_refused(sampler):
    """Within 2^-53 of t = 1, VPCosine's t(lambda) maps neighbouring logSNR steps to one float64 time: h = 0 used to
    raise ZeroDivisionError inside the multistep update."""
    cosine = VPCosine()
    with pytest.raises(ValueError, match="steps=100 .* repeat a time"):
        sampler(GaussianMixtureNoisePredictor(MIXTURE, cosine), X_T, cosine, 100, order=3, t_start=1 - 2**-53)

@pytest.mark.parametrize("call, error, word", [
    (lambda: VPDiscrete(betas=torch.tensor([0.1, float("nan"), 0.2])), ValueError, "betas"),
    (lambda: VPDiscrete(alphas_cumprod=torch.tensor([0.9, float("nan"), 0.5])), ValueError, "alphas_cumprod"),
    (lambda: VPCosine(s=float("nan")), ValueError, "s="),
    (lambda: VE(sigma_max=float("inf")), ValueError, "sigma_max"),
    (lambda: VPLinear(t_end=0.0), ValueError, "t_end"),
    (lambda: DiffusersUNet(lambda x, t, encoder_hidden_states=None: x, SCHEDULE, num_train_timesteps=-5),
     ValueError, "num_train_timesteps"),
    (lambda: edm_sampler(MODEL, X_T, SCHEDULE, 5, s_churn=5.0, s_tmin=10.0, s_tmax=1.0), ValueError, "s_tmin"),
    (lambda: edm_sampler(MODEL, X_T, SCHEDULE, 5, s_churn=float("nan")), ValueError, "s_churn"),
    (lambda: edm_sde(MODEL, X_T, SCHEDULE, 5, churn=lambda rho: -torch.ones_like(rho)), ValueError, "churn"),
    (lambda: dpm_solver_pp(MODEL, X_T, SCHEDULE, 5, order=2.0), ValueError, "order"),
    (lambda: ddim(MODEL, X_T, SCHEDULE, True), ValueError, "steps"),
    (lambda: adjoint_sample(MODEL, X_T, SCHEDULE, 0, variable="lambda"), ValueError, "steps"),
    (lambda: adjoint_sample(MODEL, X_T, SCHEDULE, 2.5, variable="lambda"), ValueError, "steps"),
    (lambda: ddim(MODEL, X_T, "vp", 5), TypeError, "schedule"),
    (lambda: GaussianMixtureNoisePredictor(__import__("nde.interpolants").interpolants.ring_mixture(), SCHEDULE),
     TypeError, "mixture"),
])
def test_other_bad_values_are_refused(call, error, word):
    with pytest.raises(error, match=word):
        call()


def test_statistics_must_be_finite():
    data = MIXTURE.sample(64, torch.Generator().manual_seed(0))
    data[0, 0] = float("nan")
    with pytest.raises(ValueError, match="data"):
        estimate_statistics(MODEL, data, SCHEDULE, n_grid=3, progress=False)
    with pytest.raises(TypeError, match="data"):
        estimate_statistics(MODEL, torch.randint(0, 3, (64, 2)), SCHEDULE, n_grid=3, progress=False)
    l = STATS.l.clone()
    l[3, 0] = float("nan")
    with pytest.raises(ValueError, match="statistic l has 1 non-finite"):
        ModelStatistics(STATS.lambdas, l, STATS.s, STATS.b, STATS.schedule, STATS.t_start, STATS.t_end)
    with pytest.raises(TypeError, match="statistics"):
        DPMSolverV3(None, SCHEDULE, 5)


def test_float32_statistics_are_stored_as_float64_and_sample_like_float64_ones():
    stats32 = ModelStatistics(STATS.lambdas, STATS.l.float(), STATS.s.float(), STATS.b.float(), STATS.schedule,
                              STATS.t_start, STATS.t_end)
    assert stats32.l.dtype == torch.float64
    x32 = DPMSolverV3(stats32, SCHEDULE, 5).sample(MODEL, X_T)
    torch.testing.assert_close(x32, DPMSolverV3(STATS, SCHEDULE, 5).sample(MODEL, X_T), rtol=0, atol=0)


def test_mixture_with_integer_means_keeps_fractional_weights_and_covariances():
    """Python-int means no longer truncate weights [1.5, 2.5] to [1, 2] (or covariances to integers)."""
    mixture = GaussianMixture([1.5, 2.5], [[0, 0], [3, 3]], [[0.5, 1.5], [2.5, 0.25]])
    assert mixture.means.dtype == torch.get_default_dtype()
    torch.testing.assert_close(mixture.log_weights.exp(), torch.tensor([0.375, 0.625]))
    torch.testing.assert_close(mixture.eigvals, torch.tensor([[0.5, 1.5], [2.5, 0.25]]))
    wide = GaussianMixture(torch.tensor([1.5, 2.5], dtype=torch.float64), [[0, 0], [3, 3]], 0.5)
    assert wide.means.dtype == torch.float64


@pytest.mark.parametrize("name", ["weights", "means", "covariances"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_mixture_refuses_non_finite_arguments(name, bad):
    args = {"weights": torch.tensor([1.0, 3.0]), "means": torch.tensor([[0.0, 0.0], [3.0, 3.0]]),
            "covariances": torch.eye(2).expand(2, 2, 2)}
    args[name] = args[name].clone().view(-1).index_fill(0, torch.tensor([1]), bad).view(args[name].shape)
    with pytest.raises(ValueError, match=f"{name} must be finite, got 1 NaN or infinite"):
        GaussianMixture(**args)


@pytest.mark.parametrize("sample", [lambda g: reverse_sde(MODEL, X_T, SCHEDULE, 5, generator=g),
                                    lambda g: reverse_sde(MODEL, X_T, SCHEDULE, 5, method="euler", generator=g),
                                    lambda g: edm_sampler(MODEL, X_T, SCHEDULE, 5, s_churn=1.0, generator=g)])
def test_a_seed_given_as_generator_is_refused_naming_it(sample):
    """An int passed as generator failed with "'int' object has no attribute 'device'"."""
    with pytest.raises(TypeError, match="`generator` must be a torch.Generator or None, got int"):
        sample(3)


def test_the_mixture_model_accepts_states_of_another_dtype():
    """A float32 x_T with the float64 mixture failed inside the model ("expected m1 and m2 to have the same dtype");
    the model now computes in the mixture's dtype and answers in x's."""
    x32 = X_T.float()
    out = ddim(MODEL, x32, SCHEDULE, 10)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ddim(MODEL, X_T, SCHEDULE, 10).float(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["ddim", "dpm_solver_pp", "unipc", "edm_sampler", "reverse_sde_euler", "dpm_solver_v3"])
def test_non_finite_or_empty_noise_is_refused_naming_x_T(name):
    bad = X_T.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="x_T contains non-finite"):
        SAMPLERS[name](MODEL, bad)
    with pytest.raises(ValueError, match="x_T must have shape"):
        SAMPLERS[name](MODEL, X_T[:0])


def test_mixture_sample_counts_and_generator_are_checked():
    assert MIXTURE.sample(0).shape == (0, MIXTURE.dim)
    assert MIXTURE.sample(3, generator=torch.Generator().manual_seed(0)).shape == (3, MIXTURE.dim)
    for bad in (-1, 2.0, True):
        with pytest.raises(ValueError, match="n must be"):
            MIXTURE.sample(bad)
    with pytest.raises(TypeError, match="generator"):
        MIXTURE.sample(3, generator=0)
