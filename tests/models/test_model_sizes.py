"""Every model constructor checks its layer sizes, naming the argument (zero, negative or non-integer sizes
built empty layers that failed later inside torch, or silently gave degenerate models: a zero-width MLP, a
depth-0 LipSwish MLP that had one hidden layer, an SDE generator without noise, a negative diffusion scale)."""
import pytest

from nde.models import (CDEDiscriminator, DiagonalDiffusion, LatentODE, LatentSDE, MLPCDEField, ODERNNEncoder,
                        SDEGenerator)

CASES = [
    (LatentODE, dict(data_dim=2), ["data_dim", "latent_dim", "hidden", "width"]),
    (ODERNNEncoder, dict(input_channels=2, hidden=3, out=4), ["input_channels", "hidden", "out", "width"]),
    (LatentSDE, dict(data_dim=2), ["data_dim", "latent_dim", "context_dim", "width"]),
    (DiagonalDiffusion, dict(dim=2), ["dim", "width"]),
    (SDEGenerator, dict(data_dim=2), ["data_dim", "initial_noise_dim", "noise_dim", "hidden", "width", "depth"]),
    (CDEDiscriminator, dict(data_dim=2), ["data_dim", "hidden", "width", "depth"]),
    (MLPCDEField, dict(channels=2, hidden=3), ["channels", "hidden", "width"]),
]


@pytest.mark.parametrize("cls, required, sizes", CASES, ids=[case[0].__name__ for case in CASES])
def test_sizes_must_be_positive_ints(cls, required, sizes):
    for name in sizes:
        for bad in (0, -1, 2.5, True):
            with pytest.raises(ValueError, match=f"{name} must be a positive int"):
                cls(**{**required, name: bad})


def test_mlp_cde_field_depth_may_be_zero_and_diffusion_scale_must_be_positive():
    assert len(MLPCDEField(2, 3, depth=0).net) == 2          # one Linear and the final tanh
    with pytest.raises(ValueError, match="depth must be a non-negative int"):
        MLPCDEField(2, 3, depth=-1)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="max_scale"):
            DiagonalDiffusion(2, max_scale=bad)
