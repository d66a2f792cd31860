"""h(r) = f''(r) r^2 for each f; ratio clipping and the two-stage normalisation."""
import pytest
import torch

from nde.distill import (F_DIVERGENCES, RatioNormalizer, density_ratio, divergence_weight, f_function,
                         normalize_by_mean)


@pytest.mark.parametrize("name", sorted(F_DIVERGENCES))
def test_weight_is_second_derivative_times_r_squared(name):
    r = torch.tensor([0.1, 0.5, 1.0, 2.0, 7.0], dtype=torch.float64, requires_grad=True)
    f = f_function(name)
    first = torch.autograd.grad(f(r).sum(), r, create_graph=True)[0]
    second = torch.autograd.grad(first.sum(), r)[0]
    torch.testing.assert_close(divergence_weight(name, r.detach()), second * r.detach() ** 2)
    torch.testing.assert_close(f(torch.ones(1, dtype=torch.float64)), torch.zeros(1, dtype=torch.float64))


def test_reverse_kl_weight_is_one_and_forward_kl_is_ratio():
    r = torch.rand(10, dtype=torch.float64) * 5 + 0.1
    torch.testing.assert_close(divergence_weight("reverse_kl", r), torch.ones_like(r))
    torch.testing.assert_close(divergence_weight("forward_kl", r), r)


def test_unknown_divergence():
    with pytest.raises(ValueError, match="divergence"):
        divergence_weight("tv", torch.ones(2))


def test_density_ratio_clipping():
    logit = torch.tensor([-50.0, -1.0, 0.0, 2.0, 50.0])
    r = density_ratio(logit, 0.1, 20.0)
    torch.testing.assert_close(r, torch.tensor([0.1, torch.e ** -1, 1.0, torch.e ** 2, 20.0]))
    with pytest.raises(ValueError, match="lower"):
        density_ratio(logit, 2.0, 1.0)


@pytest.mark.parametrize("logit_clip", [-1.0, 0.0, float("nan")])
def test_density_ratio_refuses_a_non_positive_logit_clip(logit_clip):
    """A negative logit_clip inverted the clamp: every logit became -logit_clip's bound, one ratio for all samples."""
    with pytest.raises(ValueError, match="logit_clip"):
        density_ratio(torch.tensor([-3.0, 0.0, 3.0]), logit_clip=logit_clip)


def test_density_ratio_with_an_infinite_logit_clip_clips_only_the_ratio():
    logit = torch.tensor([-50.0, -1.0, 2.0, 50.0], dtype=torch.float64)
    torch.testing.assert_close(density_ratio(logit, 0.1, 20.0, logit_clip=float("inf")),
                               logit.exp().clamp(0.1, 20.0))


def test_two_stage_normalisation():
    gen = torch.Generator().manual_seed(0)
    s = torch.rand(4000, generator=gen, dtype=torch.float64)
    r = (1 + 5 * s) * torch.rand(4000, generator=gen, dtype=torch.float64)  # mean ratio grows with s
    norm = RatioNormalizer(0.0, 1.0, bins=10, ema_rate=0.0)
    out = norm(r, s)
    idx = norm.bin_index(s)
    for k in range(10):  # stage 1: every bin has mean ratio 1
        assert abs(float(out[idx == k].mean()) - 1.0) < 1e-12
    h = normalize_by_mean(divergence_weight("forward_kl", out))
    assert abs(float(h.mean()) - 1.0) < 1e-12  # stage 2
    ema = RatioNormalizer(0.0, 1.0, bins=1, ema_rate=0.5)
    ema(torch.full((4,), 3.0, dtype=torch.float64), torch.zeros(4, dtype=torch.float64))
    assert float(ema.means[0]) == pytest.approx(2.0)  # 0.5 * 1 + 0.5 * 3
