"""Verification on a small network trained in the repo (no pretrained weights)."""
import pytest
import torch

from nde.diffusion import (DPMSolverV3, TimeMLP, VPLinear, adjoint_sample, ddim, dpm_solver_pp, estimate_statistics,
                           probability_flow_reference, ring_mixture, train_noise_predictor)
from nde.diffusion import GaussianMixtureNoisePredictor


def test_noise_optimisation_reduces_loss_monotonically_at_first():
    schedule = VPLinear()
    mixture = ring_mixture(variance=0.05)
    model = GaussianMixtureNoisePredictor(mixture, schedule)
    x_T = torch.randn(2, 2, dtype=torch.float64, requires_grad=True)
    target = mixture.means[2]
    losses = []
    opt = torch.optim.SGD([x_T], lr=0.05)
    for _ in range(6):
        loss = (adjoint_sample(model, x_T, schedule, steps=8, variable="lambda") - target).pow(2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:])), losses


@pytest.mark.slow
def test_trained_mlp_samplers_and_statistics():
    torch.manual_seed(0)
    schedule = VPLinear()
    mixture = ring_mixture(variance=0.05)
    net = TimeMLP(2, schedule, hidden=64, depth=3).double()
    losses = train_noise_predictor(net, mixture.sample, schedule, steps=1500, batch_size=512)
    assert sum(losses[-100:]) / 100 < 0.6 * losses[0]
    x_T = torch.randn(400, 2, dtype=torch.float64)
    with torch.no_grad():
        ref = probability_flow_reference(net, x_T, schedule, rtol=1e-7, atol=1e-7, method="dopri5")
        # the learned model generates the ring: most samples near a mode
        dist = torch.cdist(ref, mixture.means).min(dim=1).values
        assert (dist < 3 * 0.05**0.5).float().mean() > 0.5
        stats = estimate_statistics(net, mixture.sample(1024), schedule, n_grid=150, progress=False)
        err = lambda x: (x - ref).pow(2).mean().item()
        for nfe in (6, 8):
            v3 = DPMSolverV3(stats, schedule, nfe)
            assert err(v3.sample(net, x_T, order=1, use_corrector=False)) < err(ddim(net, x_T, schedule, nfe))
            assert err(v3.sample(net, x_T)) < err(dpm_solver_pp(net, x_T, schedule, nfe, order=3))
