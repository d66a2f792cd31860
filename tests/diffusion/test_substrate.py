import math

import pytest
import torch

from nde.diffusion import (EDM, VE, DiffusersUNet, GaussianMixtureNoisePredictor, NoisePredictor,
                           VPCosine, VPDiscrete, VPLinear, from_eps, random_mixture, sampling_times, to_eps)

DDPM = VPDiscrete(betas=torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))
SCHEDULES = [VPLinear(), VPCosine(), VE(), EDM(), DDPM]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.config()["name"])
def test_schedule_inverse_lambda_and_derivatives(schedule):
    t = torch.linspace(schedule.t_end, schedule.t_start, 50, dtype=torch.float64)
    lam = schedule.lambda_(t)
    assert bool((lam[1:] < lam[:-1]).all())
    torch.testing.assert_close(schedule.t_of_lambda(lam), t, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(lam, torch.log(schedule.alpha(t) / schedule.sigma(t)))
    h = 1e-6
    fd = (schedule.log_alpha(t[1:-1] + h) - schedule.log_alpha(t[1:-1] - h)) / (2 * h)
    torch.testing.assert_close(schedule.dlog_alpha_dt(t[1:-1]), fd, rtol=1e-6, atol=1e-8)
    dlam = (schedule.lambda_(t[1:-1] + h) - schedule.lambda_(t[1:-1] - h)) / (2 * h)
    torch.testing.assert_close(schedule.diffusion_squared(t[1:-1]), -2 * schedule.sigma(t[1:-1]) ** 2 * dlam,
                               rtol=1e-5, atol=1e-8)
    generic = torch.func.jvp(lambda v: schedule.log_alpha(schedule.t_of_lambda(v)), (lam,), (torch.ones_like(lam),))[1]
    torch.testing.assert_close(schedule.dlog_alpha_dlambda(lam), generic, rtol=1e-9, atol=1e-12)


def test_vp_linear_closed_form_and_variance_preservation():
    s = VPLinear()
    t = torch.tensor([0.25, 0.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(s.alpha(t), torch.exp(-0.25 * t**2 * 19.9 - 0.05 * t))
    for sched in (VPLinear(), VPCosine()):
        torch.testing.assert_close(sched.alpha(t.clamp(max=0.99)) ** 2 + sched.sigma(t.clamp(max=0.99)) ** 2,
                                   torch.ones(3, dtype=torch.float64))



def test_cosine_schedule_is_accurate_near_t_1_where_alpha_vanishes():
    """alpha(1 - d) = c d (1 + O(d^2)), c = pi / (2 (1+s) cos(s pi / (2 (1+s)))): cos((t+s)/(1+s) pi/2) had lost the
    digits there (7e-6 relative at d = 1e-12; alpha(1) = 6e-17, so lambda(1) = -37 and t_start = 1 was accepted;
    t_of_lambda rounded finite lambdas to t >= 1)."""
    schedule = VPCosine()
    slope = math.pi / (2 * (1 + schedule.s)) / math.cos(schedule.s / (1 + schedule.s) * math.pi / 2)
    t = 1 - torch.tensor([1e-6, 1e-9, 1e-12, 1e-15, 2**-52, 2**-53], dtype=torch.float64)
    torch.testing.assert_close(schedule.alpha(t), slope * (1 - t), rtol=1e-12, atol=0)
    torch.testing.assert_close(schedule.t_of_lambda(schedule.lambda_(t)), t, rtol=0, atol=0)
    assert schedule.lambda_(torch.tensor(1.0, dtype=torch.float64)) == -math.inf
    with pytest.raises(ValueError, match="t_start"):
        VPCosine(t_start=1.0)

def test_discrete_schedule_matches_its_steps_and_the_linear_limit():
    cumprod = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    t_n = torch.arange(1, 1001, dtype=torch.float64) / 1000
    torch.testing.assert_close(DDPM.alpha(t_n) ** 2, cumprod)
    # DDPM's betas are VPLinear(0.1, 20) sampled at N = 1000
    torch.testing.assert_close(DDPM.alpha(t_n), VPLinear().alpha(t_n), rtol=0.05, atol=2e-3)
    with pytest.raises(ValueError, match="exactly one"):
        VPDiscrete()


def test_schedule_errors():
    with pytest.raises(ValueError, match="beta_0"):
        VPLinear(beta_0=1.0, beta_1=0.5)
    with pytest.raises(ValueError, match="t_end"):
        VPLinear(t_start=0.1, t_end=0.2)
    with pytest.raises(ValueError, match="sigma_min"):
        EDM(sigma_min=2.0, sigma_max=1.0)


def test_sampling_times():
    s = VPLinear()
    t = sampling_times(s, 10, "logSNR")
    lam = s.lambda_(t)
    torch.testing.assert_close(lam[1:] - lam[:-1], torch.full((10,), float(lam[1] - lam[0]), dtype=torch.float64))
    assert t[0] == 1.0 and t[-1] == 1e-3
    edm = sampling_times(EDM(), 4, "edm")
    ramp = torch.linspace(0, 1, 5, dtype=torch.float64)
    expected = (80 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    torch.testing.assert_close(edm, expected)
    torch.testing.assert_close(sampling_times(s, 4, "time_quadratic"),
                               torch.linspace(1.0, 1e-3**0.5, 5, dtype=torch.float64) ** 2)


@pytest.mark.parametrize("prediction", ["eps", "x0", "v", "score"])
def test_parameterisation_round_trip_and_consistency(prediction):
    x0, eps = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    alpha, sigma = torch.tensor(0.7, dtype=torch.float64), torch.tensor(1.3, dtype=torch.float64)  # not VP
    x = alpha * x0 + sigma * eps
    out = from_eps(eps, x, alpha, sigma, prediction)
    truth = {"eps": eps, "x0": x0, "v": alpha * eps - sigma * x0, "score": -eps / sigma}[prediction]
    torch.testing.assert_close(out, truth)
    torch.testing.assert_close(to_eps(out, x, alpha, sigma, prediction), eps)
    with pytest.raises(ValueError, match="prediction"):
        to_eps(out, x, alpha, sigma, "noise")


def test_gmm_score_matches_autograd_and_samples_match_moments():
    gmm = random_mixture(3, 4, torch.Generator().manual_seed(0))
    x = torch.randn(10, 3, dtype=torch.float64, requires_grad=True)
    alpha, sigma = torch.full((10,), 0.8, dtype=torch.float64), torch.full((10,), 0.6, dtype=torch.float64)
    grad = torch.autograd.grad(gmm.log_prob(x, alpha, sigma).sum(), x)[0]
    torch.testing.assert_close(gmm.score(x, alpha, sigma), grad)
    samples = gmm.sample(200_000, torch.Generator().manual_seed(1))
    w = gmm.log_weights.exp()
    mean = (w[:, None] * gmm.means).sum(0)
    torch.testing.assert_close(samples.mean(0), mean, atol=0.02, rtol=0)


def test_noise_predictor_wraps_x0_and_v_networks():
    schedule = VPLinear()
    gmm = random_mixture(2, 3, torch.Generator().manual_seed(0))
    exact = GaussianMixtureNoisePredictor(gmm, schedule)
    x, t = torch.randn(7, 2, dtype=torch.float64), torch.rand(7, dtype=torch.float64) * 0.9 + 0.05

    x0_net = lambda x, t: (x - schedule.sigma(t)[:, None] * exact(x, t)) / schedule.alpha(t)[:, None]
    v_net = lambda x, t: from_eps(exact(x, t), x, schedule.alpha(t)[:, None], schedule.sigma(t)[:, None], "v")
    torch.testing.assert_close(NoisePredictor(x0_net, schedule, "x0")(x, t), exact(x, t))
    torch.testing.assert_close(NoisePredictor(v_net, schedule, "v")(x, t), exact(x, t))


def test_classifier_free_guidance_and_diffusers_adapter():
    schedule = VPLinear()
    calls = []

    def net(x, t, cond):
        calls.append(x.shape[0])
        return x * cond[:, :1] + t[:, None]

    cond, uncond = torch.tensor([2.0, 0.0]), torch.tensor([0.5, 0.0])   # single items: no batch dimension
    x, t = torch.randn(4, 3), torch.full((4,), 0.5)
    guided = NoisePredictor(net, schedule, cond=cond, uncond=uncond, guidance_scale=3.0)(x, t)
    eps_u, eps_c = x * 0.5 + 0.5, x * 2.0 + 0.5
    torch.testing.assert_close(guided, eps_u + 3.0 * (eps_c - eps_u))
    assert calls == [8]  # one batched call for both branches

    class Output:
        def __init__(self, sample):
            self.sample = sample

    seen = {}

    def unet(x, timestep, encoder_hidden_states=None):
        seen["t"], seen["cond"] = timestep, encoder_hidden_states
        return Output(torch.zeros_like(x))

    out = DiffusersUNet(unet, schedule, cond=torch.ones(4, 5))(x, t)
    assert torch.equal(out, torch.zeros_like(x))
    torch.testing.assert_close(seen["t"], torch.full((4,), 499.0))
    assert seen["cond"].shape == (4, 5)
    with pytest.raises(ValueError, match="uncond"):
        NoisePredictor(net, schedule, guidance_scale=2.0, cond=cond)
    with pytest.raises(TypeError, match="callable"):
        NoisePredictor(3, schedule)


@pytest.mark.parametrize("cond", [torch.randn(1, 3), torch.randn(1, 2, 3), torch.randn(3)])
def test_conditioning_reaches_every_row_as_when_sampling_one_row(cond):
    """A batch of one (1, ...) and a single item (3,) condition every row of a batch of 4 exactly as they
    condition a batch of 1: the network sees the same per-row conditioning (previously (1, 3) became (4, 1, 3))."""
    schedule = VPLinear()
    seen = []

    def net(x, t, c):
        seen.append(c)
        return x * c.flatten(1).sum(1, keepdim=True)

    x, t = torch.randn(4, 2), torch.full((4,), 0.5)
    batched = NoisePredictor(net, schedule, cond=cond)(x, t)
    one_row = torch.cat([NoisePredictor(net, schedule, cond=cond)(x[i:i + 1], t[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, one_row)
    assert seen[0].shape == (4,) + seen[1].shape[1:]
