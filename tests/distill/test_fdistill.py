"""f-distill gradients: the pseudo-target loss, the VSD special case, the mode-covering weights,
the discriminator's ratio and the analytic teacher."""
import math

import pytest
import torch

from nde.distill import (DiffusionTeacher, FDistill, cosine_alpha, cosine_sigma, diffuse, distillation_loss,
                        train_velocity_teacher)
from nde.distill import divergence_weight, normalize_by_mean
from nde.interpolants import (GaussianMixture, MixtureInterpolantFields, one_sided_trigonometric, ring_mixture,
                             standard_normal)
from nde.metrics import energy_mmd


def _loss_inputs():
    """Generator sample x (requires grad), teacher and fake x0 predictions, weights w: batch 8, dim 2."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    x0_t, x0_f = (torch.randn(8, 2, generator=gen, dtype=torch.float64) for _ in range(2))
    return x, x0_t, x0_f, torch.rand(8, generator=gen, dtype=torch.float64)


def test_distillation_loss_gradient_is_pseudo_target_direction():
    x, x0_t, x0_f, w = _loss_inputs()
    grad = torch.autograd.grad(distillation_loss(x, x0_t, x0_f, w), x)[0]
    scale = (x.detach() - x0_t).abs().mean(1) + 1e-6
    torch.testing.assert_close(grad, (w / scale)[:, None] * (x0_f - x0_t) / x.numel())


def test_batch_normalizer_uses_one_scale_per_batch():
    """normalizer="batch": g = w (x0_fake - x0_teacher) / mean over the batch of |x - x0_teacher|."""
    x, x0_t, x0_f, w = _loss_inputs()
    grad = torch.autograd.grad(distillation_loss(x, x0_t, x0_f, w, normalizer="batch"), x)[0]
    scale = (x.detach() - x0_t).abs().mean() + 1e-6
    torch.testing.assert_close(grad, w[:, None] * (x0_f - x0_t) / scale / x.numel())
    with pytest.raises(ValueError, match="normalizer"):
        distillation_loss(x, x0_t, x0_f, w, normalizer="pixel")


def _task(divergence="reverse_kl", gan_weight=0.0, dtype=torch.float64):
    mix = ring_mixture(4, radius=2.0, variance=0.1, dtype=dtype)
    task = FDistill(DiffusionTeacher.from_mixture(mix), mix.sample, 2, divergence=divergence,
                    gan_weight=gan_weight, hidden=16, depth=2, dtype=dtype)
    return task, mix


def test_reverse_kl_gradient_equals_vsd_gradient():
    """h = 1: the generator's gradient is the DMD/VSD gradient, computed here from its definition."""
    task, _ = _task("reverse_kl")
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(64, 2, generator=gen, dtype=torch.float64)
    s = torch.rand(64, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    noise = torch.randn(64, 2, generator=gen, dtype=torch.float64)
    params = list(task.networks["generator"].parameters())
    loss, _ = task.generator_loss(z, s, noise)
    got = torch.autograd.grad(loss, params)

    x = task.networks["generator"](z)
    with torch.no_grad():
        x_s = cosine_alpha(s)[:, None] * x + cosine_sigma(s)[:, None] * noise
        # score difference in x0 form: grad log q - grad log p = alpha / sigma^2 (x0_fake - x0_teacher)
        x0_teacher = task.teacher.denoise(x_s, s)
        x0_fake = task.networks["fake_score"](s, x_s)
        vsd = (x0_fake - x0_teacher) / ((x - x0_teacher).abs().mean(1, keepdim=True) + 1e-6)
    expected = torch.autograd.grad(x, params, grad_outputs=vsd / x.numel())
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def test_mode_covering_weights_emphasise_a_missed_mode():
    """Exact ratio, student missing one mode: forward-KL / JS put more weight near the missed mode than
    reverse-KL (h = 1), and less on the over-covered modes."""
    teacher = GaussianMixture(torch.ones(4, dtype=torch.float64) / 4,
                              torch.tensor([[3.0, 0], [0, 3.0], [-3.0, 0], [0, -3.0]], dtype=torch.float64), 0.05)
    student = GaussianMixture(torch.ones(3, dtype=torch.float64) / 3, teacher.means[:3], 0.05)
    s = torch.tensor(0.5, dtype=torch.float64)
    p_s, q_s = teacher.diffused(cosine_alpha(s), cosine_sigma(s)), student.diffused(cosine_alpha(s), cosine_sigma(s))
    x_s = q_s.sample(20000, torch.Generator().manual_seed(2))
    r = (p_s.log_prob(x_s) - q_s.log_prob(x_s)).exp()
    near_missing = torch.cdist(x_s, teacher.means).argmin(1) == 3
    assert int(near_missing.sum()) > 20
    mean_weight = {}
    for name in ("reverse_kl", "forward_kl", "js"):
        h = normalize_by_mean(divergence_weight(name, r))
        mean_weight[name] = float(h[near_missing].mean()), float(h[~near_missing].mean())
    for name in ("forward_kl", "js"):
        assert mean_weight[name][0] > 1.5 * mean_weight["reverse_kl"][0]
        assert mean_weight[name][1] < mean_weight["reverse_kl"][1]


def test_discriminator_learns_log_density_ratio():
    """p = N(0, 1), q = N(1, 1) in 1-D at a fixed noise level: the optimal logit is
    log p_s/q_s (x) = (alpha^2 - 2 alpha x) / 2 (both diffuse to unit-variance Gaussians)."""
    torch.manual_seed(0)
    task = FDistill(DiffusionTeacher(lambda x, s: x), lambda n, g: torch.randn(n, 1, generator=g), 1,
                    hidden=32, depth=2, lr=3e-3)
    gen = torch.Generator().manual_seed(3)
    s_val = 0.4
    opt = task.optimizers["discriminator"]
    for _ in range(1500):
        real = torch.randn(256, 1, generator=gen)
        fake = 1.0 + torch.randn(256, 1, generator=gen)
        s = torch.full((256,), s_val)
        loss = task.discriminator_loss(real, fake, s, s, torch.randn(256, 1, generator=gen),
                                       torch.randn(256, 1, generator=gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
    alpha = math.cos(0.5 * math.pi * s_val)
    x = torch.linspace(-1.0, 2.0, 31)[:, None]
    with torch.no_grad():
        logit = task.log_ratio(x, torch.full((31,), s_val))
    exact = (alpha ** 2 - 2 * alpha * x[:, 0]) / 2
    assert (logit - exact).abs().max() < 0.15


def test_analytic_teacher_denoiser_and_50_step_sampler():
    mix = ring_mixture(8, 3.0, 0.05, weights=torch.tensor([0.2, 0.05] * 4), dtype=torch.float64)
    teacher = DiffusionTeacher.from_mixture(mix)
    s = torch.tensor(0.6, dtype=torch.float64)
    a, sig = cosine_alpha(s), cosine_sigma(s)
    noisy = mix.diffused(a, sig)
    x = noisy.sample(200)
    tweedie = (x + sig ** 2 * noisy.score(x)) / a  # E[x0 | x_s], independent closed form
    torch.testing.assert_close(teacher.denoise(x, s), tweedie)
    gen = torch.Generator().manual_seed(4)
    samples = teacher.sample(1000, 2, steps=50, generator=gen, dtype=torch.float64)
    assert energy_mmd(samples, mix.sample(1000, gen)) < 0.01


def test_velocity_teacher_equals_the_analytic_teacher():
    """from_velocity on the exact interpolant velocity gives the closed-form teacher's x0-prediction."""
    mix = ring_mixture(8, 3.0, 0.05, weights=torch.tensor([0.2, 0.05] * 4), dtype=torch.float64)
    fields = MixtureInterpolantFields(one_sided_trigonometric(), standard_normal(2, torch.float64), mix)
    teacher, exact = DiffusionTeacher.from_velocity(fields.velocity), DiffusionTeacher.from_mixture(mix)
    x = torch.randn(64, 2, dtype=torch.float64) * 2
    for s_val in (0.05, 0.5, 0.95):
        s = torch.full((64,), s_val, dtype=torch.float64)
        torch.testing.assert_close(teacher.denoise(x, s), exact.denoise(x, s))


def test_trained_velocity_teacher_samples_the_data_law():
    """A teacher learned from samples of N(mu, 0.25 I) reproduces its mean and spread; same seed, same teacher."""
    mu = torch.tensor([1.5, -1.0])

    def data(n, gen):
        return mu + 0.5 * torch.randn(n, 2, generator=gen)

    teacher = train_velocity_teacher(data, 2, steps=300, hidden=32, depth=2, batch_size=256)
    x = teacher.sample(4000, 2, steps=50, generator=torch.Generator().manual_seed(1))
    assert (x.mean(0) - mu).abs().max() < 0.1
    assert (x.std(0) - 0.5).abs().max() < 0.1
    again = train_velocity_teacher(data, 2, steps=300, hidden=32, depth=2, batch_size=256)
    s = torch.full((8,), 0.5)
    torch.testing.assert_close(again.denoise(x[:8], s), teacher.denoise(x[:8], s))


def test_training_step_alternates_updates():
    """Generator parameters change only on student steps; critics only on the others."""
    from nde.training import StepContext
    task, _ = _task("js", gan_weight=1e-3)
    before = {n: [p.clone() for p in m.parameters()] for n, m in task.networks.items()}

    def changed(name):
        return any(not torch.equal(a, b) for a, b in zip(before[name], task.networks[name].parameters()))

    task.freq = 2
    task.training_step(StepContext(0, torch.Generator().manual_seed(0), None, task.optimizers))
    assert not changed("generator") and changed("fake_score") and changed("discriminator")
    before = {n: [p.clone() for p in m.parameters()] for n, m in task.networks.items()}
    task.training_step(StepContext(1, torch.Generator().manual_seed(1), None, task.optimizers))
    assert changed("generator") and not changed("fake_score") and not changed("discriminator")


def test_bad_arguments():
    mix = ring_mixture(4)
    with pytest.raises(ValueError, match="divergence"):
        FDistill(DiffusionTeacher.from_mixture(mix), mix.sample, 2, divergence="nope")
    with pytest.raises(ValueError, match="gan_weight"):
        FDistill(DiffusionTeacher.from_mixture(mix), mix.sample, 2, gan_weight=-1.0)


def test_learning_rate_step_decay_is_a_function_of_the_step():
    """lr_decay_every=k: every optimiser uses lr * decay^(step // k) at each step (so resuming needs no state)."""
    from nde.training import StepContext
    mix = ring_mixture(4, radius=2.0, variance=0.1, dtype=torch.float64)
    task = FDistill(DiffusionTeacher.from_mixture(mix), mix.sample, 2, hidden=8, depth=1, dtype=torch.float64,
                    lr=1e-2, lr_decay_every=2, lr_decay=0.5, batch_size=16)
    for step in range(5):
        task.training_step(StepContext(step, torch.Generator().manual_seed(step), None, task.optimizers))
        for opt in task.optimizers.values():
            assert opt.param_groups[0]["lr"] == pytest.approx(1e-2 * 0.5 ** (step // 2))
    with pytest.raises(ValueError, match="lr_decay_every"):
        FDistill(DiffusionTeacher.from_mixture(mix), mix.sample, 2, lr_decay_every=0)
    with pytest.raises(ValueError, match="normalizer"):
        FDistill(DiffusionTeacher.from_mixture(mix), mix.sample, 2, normalizer="pixel")


def test_diffuse_and_distillation_loss_refuse_shapes_that_would_broadcast():
    x, x0_t, x0_f, w = _loss_inputs()
    s = torch.full((8,), 0.3, dtype=torch.float64)
    with pytest.raises(ValueError, match="t must"):
        diffuse(x, s[:, None], x0_t)
    with pytest.raises(ValueError, match="noise"):
        diffuse(x, s, x0_t[:, :1])
    with pytest.raises(ValueError, match="weight"):
        distillation_loss(x, x0_t, x0_f, w[:, None])
    with pytest.raises(ValueError, match="x0_teacher"):
        distillation_loss(x, x0_t[:1], x0_f, w)
    with pytest.raises(ValueError, match="x0_fake"):
        distillation_loss(x, x0_t, x0_f[:, :1], w)


@pytest.mark.parametrize("kwargs, word", [
    ({"lr_decay": -1.0, "lr_decay_every": 2}, "lr_decay"),
    ({"lr_decay": 0.0, "lr_decay_every": 2}, "lr_decay"),
    ({"lr": 0.0}, "lr"),
    ({"batch_size": 0}, "batch_size"),
    ({"gan_weight": float("nan")}, "gan_weight"),
    ({"student_update_freq": 2.5}, "student_update_freq"),
    ({"ratio_lower": 5.0, "ratio_upper": 1.0}, "ratio_lower"),
    ({"s_min": 0.9, "s_max": 0.1}, "s_min"),
    ({"s_max": 1.0}, "s_max"),
    ({"ratio_bins": -1}, "ratio_bins"),
    ({"ratio_ema_rate": 1.0}, "ratio_ema_rate"),
])
def test_fdistill_refuses_bad_hyperparameters(kwargs, word):
    mix = ring_mixture(4)
    with pytest.raises(ValueError, match=word):
        FDistill(DiffusionTeacher.from_mixture(mix), mix.sample, 2, **kwargs)


def test_fdistill_checks_the_real_samples():
    from nde.training import Trainer
    mix = ring_mixture(4)
    task = FDistill(DiffusionTeacher.from_mixture(mix), lambda n, g: mix.sample(n, g)[:, :1], 2, batch_size=16,
                    hidden=8, depth=1)
    with pytest.raises(ValueError, match=r"sample_real\(n, generator\) returned shape \(16, 1\)"):
        Trainer(task, 3).fit()


def test_teacher_sample_refuses_a_reversed_or_singular_noise_range():
    teacher = DiffusionTeacher.from_mixture(ring_mixture(4))
    with pytest.raises(ValueError, match="s_min"):
        teacher.sample(10, 2, steps=4, s_max=0.001, s_min=0.999)
    with pytest.raises(ValueError, match="s_max"):
        teacher.sample(10, 2, steps=4, s_max=1.5, s_min=-0.5)
    with pytest.raises(ValueError, match=r"eps_model\(x, s\)"):
        DiffusionTeacher(lambda x, s: x[:, :1]).sample(10, 2, steps=4)
