"""The core benchmark's dopri5 by hand computes what nde.odeint computes (same steps, evaluations, values and
gradients), so torchdiffeq / its time bounds what nde could gain without dropping the method's own arithmetic."""
import pytest
import torch

import nde
from benchmarks.core import HandDopri5, MLPField


@pytest.mark.parametrize("tol", [1e-3, 1e-6, 1e-9])
def test_dopri5_by_hand_matches_odeint(tol):
    torch.manual_seed(0)
    field = MLPField(2).double()
    y0 = torch.randn(64, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 0.7], dtype=torch.float64)
    ours = nde.odeint(field, y0, t, rtol=tol, atol=tol)[-1]
    nfe, field.nfe = field.nfe, 0
    by_hand = HandDopri5(field, y0, tol, tol)(0.0, 0.7)
    assert field.nfe == nfe
    torch.testing.assert_close(by_hand, ours, rtol=0, atol=1e-12)
    params = list(field.parameters())
    for hand_grad, nde_grad in zip(torch.autograd.grad(by_hand.pow(2).mean(), params),
                                   torch.autograd.grad(ours.pow(2).mean(), params)):
        torch.testing.assert_close(hand_grad, nde_grad, rtol=0, atol=1e-12)


def test_dopri5_by_hand_matches_torchdiffeq():
    torchdiffeq = pytest.importorskip("torchdiffeq")
    torch.manual_seed(1)
    field = MLPField(2).double()
    y0 = torch.randn(32, 2, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    theirs = torchdiffeq.odeint(field, y0, t, rtol=1e-6, atol=1e-6)[-1]
    nfe, field.nfe = field.nfe, 0
    torch.testing.assert_close(HandDopri5(field, y0, 1e-6, 1e-6)(0.0, 1.0), theirs, rtol=0, atol=1e-12)
    assert field.nfe == nfe
