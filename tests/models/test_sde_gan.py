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


def test_discriminator_steps_on_the_observation_grid_when_it_is_irregular():
    """One close pair of times used to set the step of the whole solve (1e6 steps for a 1e-6 gap); now
    midpoint takes one step per gap: 2 evaluations each."""
    ts = torch.tensor([0.0, 1e-6, 0.2, 0.6, 0.8, 1.0])
    disc = CDEDiscriminator(2, hidden=4, width=8)
    calls = []
    disc.field.register_forward_hook(lambda *args: calls.append(1))
    assert disc(torch.randn(3, 6, 2), ts).shape == (3,)
    assert len(calls) <= 2 * (len(ts) - 1) + 1


def test_discriminator_fills_a_missing_first_observation():
    ts = torch.linspace(0, 1, 5)
    ys = torch.randn(3, 5, 2)
    filled = ys.clone()
    ys[1, 0, 0] = float("nan")
    filled[1, 0, 0] = filled[1, 1, 0]                       # leading NaN takes the first observed value
    disc = CDEDiscriminator(2, hidden=4, width=8)
    torch.testing.assert_close(disc(ys, ts), disc(filled, ts))


def test_bad_arguments_raise_naming_them():
    with pytest.raises(TypeError, match="module must be an nn.Module"):
        clip_lipschitz_(torch.randn(3, 3))
    pytest.importorskip("nde.sde", reason="the SDE core (nde.sde) has not landed")
    from nde.models import SDEGenerator
    with pytest.raises(TypeError, match="adjoint must be a bool"):
        SDEGenerator(1, adjoint="no")
    with pytest.raises(TypeError, match="batch_size must be a positive int"):
        SDEGenerator(1, dt=0.1)(torch.linspace(0, 1, 3), 4.0)
