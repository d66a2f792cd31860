"""Property-based tests: output shapes, dtypes and devices follow the input."""
import hypothesis.strategies as st
import torch
from hypothesis import given, settings

import nde


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3),
       n_times=st.integers(1, 4),
       dtype=st.sampled_from([torch.float32, torch.float64]),
       method=st.sampled_from(["dopri5", "tsit5", "bosh3", "rk4", "euler"]))
def test_shapes_and_dtypes(shape, n_times, dtype, method):
    y0 = torch.rand(*shape, dtype=dtype) + 0.5
    t = torch.linspace(0, 1, n_times, dtype=dtype)
    ys = nde.odeint(lambda t, y: -0.5 * y, y0, t, method=method, rtol=1e-6, atol=1e-6,
                    options={"step_size": 0.1} if method in ("rk4", "euler") else None)
    assert ys.shape == (n_times, *shape) and ys.dtype == dtype and ys.device == y0.device
    expected = y0 * torch.exp(-0.5 * t.reshape(-1, *([1] * len(shape))))
    # fixed-grid outputs off the grid are linearly interpolated (torchdiffeq semantics): O(h^2)
    tol = {"euler": 3e-2, "rk4": 1e-3}.get(method, 1e-4)
    assert torch.allclose(ys, expected, atol=tol)


@settings(max_examples=15, deadline=None)
@given(batch=st.integers(1, 6), dim=st.integers(1, 3), per_sample=st.booleans())
def test_tuple_states_keep_their_shapes(batch, dim, per_sample):
    a0, b0 = torch.ones(batch, dim, dtype=torch.float64), torch.zeros(batch, 2, dim, dtype=torch.float64)

    def f(t, state):
        a, b = state
        return -a, b + a.unsqueeze(1)
    sol = nde.solve_ode(f, (a0, b0), torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64), per_sample=per_sample)
    a, b = sol.ys
    assert a.shape == (3, batch, dim) and b.shape == (3, batch, 2, dim)
    assert torch.allclose(a[-1], torch.exp(torch.tensor(-1.0, dtype=torch.float64)).expand_as(a[-1]), atol=1e-5)
