"""CNF: exact log-density of a linear flow in closed form; Hutchinson is unbiased; sampling inverts."""
import math

import pytest
import torch
from torch import nn

from nde.models import CNF

TIGHT = dict(rtol=1e-9, atol=1e-9)


class LinearField(nn.Module):
    def __init__(self, A):
        super().__init__()
        self.A = nn.Parameter(A.clone())

    def forward(self, t, z):
        return z @ self.A.T


def _closed_form_log_prob(A, x):
    """z' = A z over [0, 1]: x = expm(A) z0, so log p1(x) = log N(expm(-A) x) - tr(A)."""
    z0 = x @ torch.linalg.matrix_exp(-A).T
    return -0.5 * (z0 ** 2).sum(-1) - 0.5 * x.shape[-1] * math.log(2 * math.pi) - torch.trace(A)


def test_exact_trace_log_prob_matches_closed_form_and_its_gradient():
    A = 0.5 * torch.randn(3, 3, dtype=torch.float64)
    x = torch.randn(6, 3, dtype=torch.float64)
    flow = CNF(LinearField(A), 3, trace="exact", **TIGHT)
    lp = flow.log_prob(x)
    A_ref = A.clone().requires_grad_(True)
    ref = _closed_form_log_prob(A_ref, x)
    torch.testing.assert_close(lp, ref.detach(), rtol=1e-7, atol=1e-7)
    lp.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(flow.vector_field.A.grad, A_ref.grad, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_estimate_is_unbiased(noise):
    """Averaged over probes, the Hutchinson log-density converges to the exact one; for a
    linear field eps^T A eps has variance 2 sum_{i<j} (A_ij + A_ji)^2 (Rademacher) per probe."""
    A = 0.5 * torch.randn(2, 2, dtype=torch.float64)
    x = torch.randn(1, 2, dtype=torch.float64).expand(4000, 2)
    flow = CNF(LinearField(A), 2, trace="hutchinson", noise=noise, **TIGHT)
    with torch.no_grad():
        estimates = flow.log_prob(x)
    exact = _closed_form_log_prob(A, x[:1])
    stderr = estimates.std() / math.sqrt(estimates.shape[0])
    assert estimates.std() > 0
    assert (estimates.mean() - exact).abs() < 4 * stderr


def test_sample_pushes_base_points_through_the_flow():
    A = 0.5 * torch.randn(2, 2, dtype=torch.float64)
    flow = CNF(LinearField(A), 2, **TIGHT)
    z = torch.randn(5, 2, dtype=torch.float64)
    torch.testing.assert_close(flow.transform(z), z @ torch.linalg.matrix_exp(A).T, rtol=1e-8, atol=1e-8)
    assert flow.sample(7).shape == (7, 2) and flow.sample(7).dtype == torch.float64


def test_bad_arguments():
    with pytest.raises(ValueError, match="trace"):
        CNF(LinearField(torch.eye(2)), 2, trace="bogus")
    with pytest.raises(ValueError, match="x must"):
        CNF(LinearField(torch.eye(2)), 2).log_prob(torch.randn(3, 4))


class Shift(nn.Module):
    """z' = c, independent of z (trace 0): x = z0 + c, so log p1(x) = log N(x - c; 0, I)."""

    def forward(self, t, z):
        return torch.full_like(z, 0.5)


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_field_independent_of_z_has_zero_trace(trace):
    x = torch.randn(5, 2, dtype=torch.float64)
    expected = -0.5 * ((x - 0.5) ** 2).sum(-1) - math.log(2 * math.pi)
    torch.testing.assert_close(CNF(Shift(), 2, trace=trace, **TIGHT).log_prob(x), expected, rtol=1e-8, atol=1e-8)
    bias = nn.Parameter(torch.tensor(0.5, dtype=torch.float64))      # depends on a parameter, not on z

    class Bias(nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = bias

        def forward(self, t, z):
            return self.bias.expand_as(z)

    lp = CNF(Bias(), 2, trace=trace, **TIGHT).log_prob(x)
    torch.testing.assert_close(lp, expected, rtol=1e-8, atol=1e-8)
    lp.sum().backward()
    torch.testing.assert_close(bias.grad, (x - 0.5).sum(), rtol=1e-8, atol=1e-8)


def test_bad_flags_trace_and_sample_counts():
    field = LinearField(torch.eye(2))
    with pytest.raises(ValueError, match="dim"):
        CNF(field, True)
    with pytest.raises(ValueError, match="trace must be 'hutchinson' or 'exact', got 'Exact'"):
        CNF(field, 2).log_prob(torch.randn(3, 2), trace="Exact")
    for n, error in ((0, ValueError), (-1, ValueError), (2.5, TypeError), (True, TypeError)):
        with pytest.raises(error, match="n must be a positive int"):
            CNF(field, 2).sample(n)


def test_hutchinson_with_per_sample_steps_keeps_each_rows_probe():
    """per_sample=True: the core calls the field with only the rows still running, so each row must keep its
    own probe (a (batch, dim) probe failed inside autograd). For a linear field a Rademacher probe estimates
    tr(A) +- (A01 + A10), so each log-density is the closed form -+ that, and equals the shared solve's."""
    A = torch.tensor([[0.3, 0.5], [-0.2, -0.4]], dtype=torch.float64)
    x = torch.randn(6, 2, dtype=torch.float64) * torch.tensor([0.01, 0.1, 1.0, 3.0, 10.0, 30.0],
                                                               dtype=torch.float64).unsqueeze(-1)
    flow = CNF(LinearField(A), 2, **TIGHT)
    torch.manual_seed(1)
    with torch.no_grad():
        per_sample = flow.log_prob(x, per_sample=True)
        torch.manual_seed(1)
        shared = flow.log_prob(x)
    offset = (per_sample - _closed_form_log_prob(A, x)).abs()
    torch.testing.assert_close(offset, (A[0, 1] + A[1, 0]).abs().expand(6), rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(per_sample, shared, rtol=1e-7, atol=1e-7)


def test_base_and_data_times_must_be_finite_and_distinct():
    """t0 = t1 failed at the first log_prob naming `t` (no such argument), NaN or inf times likewise."""
    field = LinearField(torch.eye(2))
    with pytest.raises(ValueError, match="t0 and t1 must differ"):
        CNF(field, 2, t0=1.0, t1=1.0)
    for name, value in (("t0", float("nan")), ("t1", float("inf")), ("t0", "0"), ("t1", True)):
        with pytest.raises(ValueError, match=f"{name} must be a finite number"):
            CNF(field, 2, **{name: value})
    flow = CNF(field, 2, t0=torch.tensor(0.5), t1=2)
    assert (flow.t0, flow.t1) == (0.5, 2.0)


def test_sample_with_a_plain_function_as_field():
    """log_prob takes any callable f(t, z); sample looked for the field's parameters and failed on a function.
    dz/dt = -z pushes N(0, I) at t0 = 0 to x = z e^{-1} at t1 = 1."""
    flow = CNF(lambda t, z: -z, 2, rtol=1e-10, atol=1e-10)
    torch.manual_seed(0)
    samples = flow.sample(5, dtype=torch.float64)
    torch.manual_seed(0)
    torch.testing.assert_close(samples, torch.randn(5, 2, dtype=torch.float64) * math.exp(-1), rtol=1e-8, atol=1e-8)
