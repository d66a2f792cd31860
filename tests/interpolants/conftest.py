import pytest
import torch

from nde.interpolants import GaussianMixture, ring_mixture


@pytest.fixture
def two_mixtures():
    """rho0: two-component mixture; rho1: 8 Gaussians on a ring (variance 0.05), float64."""
    rho0 = GaussianMixture(torch.tensor([0.3, 0.7], dtype=torch.float64),
                           torch.tensor([[-1.0, 0.0], [1.0, 0.5]], dtype=torch.float64),
                           torch.tensor([0.3, 0.2], dtype=torch.float64))
    return rho0, ring_mixture(8, radius=3.0, variance=0.05, dtype=torch.float64)

