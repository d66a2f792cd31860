"""LatentODE: ODE-RNN encoder semantics and a short fit."""
import pytest
import torch

from nde.models import LatentODE, ODERNNEncoder

FIXED = dict(method="rk4", step_size=0.25)


def test_encoder_skips_unobserved_times():
    """A time step where every channel is NaN must not change the encoding apart from the ODE
    flow across it: dropping that column and merging the gaps gives the same result."""
    enc = ODERNNEncoder(2, hidden=5, out=3, width=8, method="dopri5", rtol=1e-9, atol=1e-9).double()
    t = torch.tensor([0.0, 0.5, 1.0, 1.5], dtype=torch.float64)
    x = torch.randn(3, 4, 2, dtype=torch.float64)
    x[:, 2] = float("nan")
    keep = torch.tensor([0, 1, 3])
    torch.testing.assert_close(enc(x, t), enc(x[:, keep], t[keep]), rtol=1e-7, atol=1e-7)


def test_elbo_decreases_on_sines():
    torch.manual_seed(0)
    t = torch.linspace(0, 2, 9)
    x = torch.sin(2 * t + 3 * torch.rand(16, 1)).unsqueeze(-1)
    x[:, 3] = float("nan")
    model = LatentODE(1, latent_dim=2, hidden=8, width=16, **FIXED)
    optim = torch.optim.Adam(model.parameters(), lr=2e-2)
    first = None
    for _ in range(25):
        loss = model.loss(x, t)
        first = loss.item() if first is None else first
        optim.zero_grad()
        loss.backward()
        optim.step()
    assert loss.item() < 0.5 * first
    assert model(x, t, t_out=torch.linspace(0, 3, 5)).shape == (16, 5, 1)
    assert model.sample(4, t).shape == (4, 9, 1)


def test_extrapolation_decodes_from_the_first_observation_time():
    """The posterior is of z at t[0]: decoding at future times t_out must equal the full decode read off there,
    not a decode that restarts z0 at t_out[0]."""
    torch.manual_seed(0)
    model = LatentODE(1, latent_dim=2, hidden=4, width=8, method="dopri5", rtol=1e-10, atol=1e-10).double()
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    x = torch.randn(3, 5, 1, dtype=torch.float64)
    future = torch.tensor([1.5, 2.0, 3.0], dtype=torch.float64)
    with torch.no_grad():
        full = model(x, t, t_out=torch.cat([t[:1], future]))
        torch.testing.assert_close(model(x, t, t_out=future), full[:, 1:], rtol=1e-7, atol=1e-9)
    with pytest.raises(ValueError, match="t_out must start at or after t"):
        model(x, t, t_out=t - 1)


def test_bad_inputs_raise_naming_the_argument():
    t = torch.linspace(0, 1, 5)
    x = torch.randn(3, 5, 2)
    model = LatentODE(2, hidden=4, width=8, **FIXED)
    with pytest.raises(ValueError, match="t must be finite and strictly increasing"):
        model.loss(x, t.flip(0))
    x[1, 2, 0] = float("inf")
    with pytest.raises(ValueError, match=r"x contains ±inf at index \(1, 2, 0\)"):
        model.loss(x, t)
    for obs_std in (0.0, -1.0, float("nan"), True):
        with pytest.raises(ValueError, match="obs_std"):
            LatentODE(2, obs_std=obs_std)
    with pytest.raises(ValueError, match="n must be a positive int"):
        model.sample(0, t)
    with pytest.raises(TypeError, match="methd"):
        LatentODE(2, methd="rk4")
