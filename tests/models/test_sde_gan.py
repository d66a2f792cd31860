"""SDE-GAN pieces: shapes, Lipschitz clipping, gradients through the discriminator, a WGAN step."""
import pytest
import torch
from torch import nn

from nde.models import CDEDiscriminator, LipSwish, clip_lipschitz_


def test_lipswish_is_one_lipschitz():
    x = torch.linspace(-6, 6, 20001, dtype=torch.float64)
    y = LipSwish()(x)
    slopes = (y[1:] - y[:-1]) / (x[1:] - x[:-1])
    assert slopes.abs().max() <= 1.0 and slopes.abs().max() > 0.99


def test_clip_bounds_every_linear_layer():
    disc = CDEDiscriminator(2, hidden=8, width=16)
    for p in disc.parameters():
        nn.init.normal_(p, std=3.0)
    clip_lipschitz_(disc)
    for layer in disc.modules():
        if isinstance(layer, nn.Linear):
            assert layer.weight.abs().max() <= 1.0 / layer.out_features + 1e-7


def test_discriminator_scores_and_gradient_reaches_the_paths():
    ts = torch.linspace(0, 1, 8)
    ys = torch.randn(5, 8, 2, requires_grad=True)
    disc = CDEDiscriminator(2, hidden=8, width=16)
    scores = disc(ys, ts)
    assert scores.shape == (5,)
    scores.sum().backward()
    assert ys.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="ts must"):
        disc(ys, torch.linspace(0, 1, 7))


def test_discriminator_reads_the_path_after_its_start():
    """Same start, different later increments: the CDE must score them differently."""
    ts = torch.linspace(0, 1, 6, dtype=torch.float64)
    ys = torch.randn(3, 6, 1, dtype=torch.float64)
    disc = CDEDiscriminator(1, hidden=4, width=8).double()
    flipped = ys.clone()
    flipped[:, 3:] = -flipped[:, 3:]
    assert not torch.allclose(disc(ys, ts), disc(flipped, ts))


def test_generator_shapes_and_one_wasserstein_step():
    pytest.importorskip("nde.sde", reason="the SDE core (nde.sde) has not landed")
    from nde.models import SDEGenerator
    torch.manual_seed(0)
    ts = torch.linspace(0, 1, 11)
    gen = SDEGenerator(1, hidden=8, width=16, dt=0.1)
    disc = CDEDiscriminator(1, hidden=8, width=16)
    fake = gen(ts, 16)
    assert fake.shape == (16, 11, 1)
    real = (ts.view(1, -1, 1) * torch.randn(16, 1, 1))
    loss_d = disc(fake.detach(), ts).mean() - disc(real, ts).mean()
    loss_d.backward()
    clip_lipschitz_(disc)
    gen.zero_grad()
    (-disc(gen(ts, 16), ts).mean()).backward()
    grads = [p.grad for p in gen.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads) and sum(g.abs().sum() for g in grads) > 0
