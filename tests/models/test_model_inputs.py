"""The time-series models check their data at the door, naming it: an integer tensor failed inside torch.finfo,
an empty batch was reported as an empty `y0` (an argument the caller never passed), and a wrong channel count
failed inside the GRU or a matrix product."""
import pytest
import torch

from nde.models import CDEDiscriminator, LatentODE, LatentSDE, ODERNNEncoder

FIXED = dict(method="rk4", step_size=0.25)
MODELS = {
    "LatentODE.loss": ("x", lambda: LatentODE(2, hidden=4, width=8, **FIXED).loss),
    "ODERNNEncoder": ("x", lambda: ODERNNEncoder(2, hidden=3, out=4, width=8, **FIXED)),
    "LatentSDE": ("xs", lambda: LatentSDE(2, latent_dim=2, context_dim=3, width=8, dt=0.25)),
    "CDEDiscriminator": ("ys", lambda: CDEDiscriminator(2, hidden=4, width=8)),
}


@pytest.mark.parametrize("model", MODELS)
def test_bad_series_raise_naming_the_argument(model):
    name, build = MODELS[model]
    call = build()
    t = torch.linspace(0, 1, 5)
    assert call(torch.randn(3, 5, 2), t) is not None
    assert call(torch.randn(3, 5, 2), t.tolist()) is not None
    for bad in (torch.ones(3, 5, 2, dtype=torch.long), [[0.0, 1.0]]):
        with pytest.raises(TypeError, match=f"{name} must be a floating-point tensor"):
            call(bad, t)
    for bad in (torch.randn(0, 5, 2), torch.randn(3, 5, 3), torch.randn(5, 2)):
        with pytest.raises(ValueError, match=rf"{name} must have shape \(batch, T, channels=2\) with batch >= 1"):
            call(bad, t)
    infinite = torch.randn(3, 5, 2)
    infinite[1, 2, 0] = float("inf")
    with pytest.raises(ValueError, match=f"{name} "):
        call(infinite, t)
