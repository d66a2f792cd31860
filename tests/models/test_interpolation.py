"""Control-path interpolations: exactness, smoothness, causality, torchcde agreement."""
import pytest
import torch
import torchcde

from nde.interpolation import (ControlPath, hermite_cubic_backward, linear_interpolation, natural_cubic_spline,
                               rectilinear_interpolation)
from nde.models import MLPCDEField, cdeint

INTERPOLATIONS = [linear_interpolation, natural_cubic_spline, hermite_cubic_backward]
TORCHCDE = {
    linear_interpolation: lambda x, t: torchcde.LinearInterpolation(torchcde.linear_interpolation_coeffs(x, t), t),
    natural_cubic_spline: lambda x, t: torchcde.CubicSpline(torchcde.natural_cubic_coeffs(x, t), t),
    hermite_cubic_backward: lambda x, t: torchcde.CubicSpline(
        torchcde.hermite_cubic_coefficients_with_backward_differences(x, t), t),
}


def _data(batch=3, length=11, channels=2):
    t = torch.sort(torch.rand(length, dtype=torch.float64) * 4).values
    x = torch.randn(batch, length, channels, dtype=torch.float64)
    return x, t


def _with_missing(x):
    """Interior, leading, trailing and whole-row gaps."""
    x = x.clone()
    x[0, 3, 0] = x[0, 5:7, 1] = float("nan")
    x[1, :2, 1] = float("nan")
    x[2, -3:, :] = float("nan")
    return x


def _queries(t, n=101):
    return torch.linspace(float(t[0]), float(t[-1]), n, dtype=t.dtype)[1:-1]


def _second_derivative_jumps(path: ControlPath):
    """Left and right limits of (X, X', X'') at the interior knots, from the coefficients."""
    c = path.coeffs
    h = (path.knots[1:] - path.knots[:-1])[:-1].view(-1, 1)
    a, b, cc, d = (c[..., :-1, j, :] for j in range(4))
    left = (a + h * (b + h * (cc + h * d)), b + h * (2 * cc + 3 * h * d), 2 * cc + 6 * h * d)
    right = (c[..., 1:, 0, :], c[..., 1:, 1, :], 2 * c[..., 1:, 2, :])
    return left, right


@pytest.mark.parametrize("interp", INTERPOLATIONS)
def test_reproduces_data_points(interp):
    x, t = _data()
    path = interp(x, t)
    torch.testing.assert_close(path.evaluate(t), x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("interp", INTERPOLATIONS)
def test_reproduces_observed_points_with_missing_values(interp):
    x, t = _data()
    xm = _with_missing(x)
    values = interp(xm, t).evaluate(t)
    observed = ~torch.isnan(xm)
    torch.testing.assert_close(values[observed], x[observed], rtol=0, atol=1e-12)


@pytest.mark.parametrize("interp", INTERPOLATIONS)
@pytest.mark.parametrize("missing", [False, True])
def test_matches_torchcde(interp, missing):
    x, t = _data()
    if missing:
        x = _with_missing(x)
    ours, ref = interp(x, t), TORCHCDE[interp](x, t)
    tq = _queries(t)
    torch.testing.assert_close(ours.evaluate(tq), ref.evaluate(tq), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours.derivative(tq), ref.derivative(tq), rtol=1e-9, atol=1e-9)


def test_cubic_coefficients_match_torchcde_layout():
    x, t = _data()
    x = _with_missing(x)
    torch.testing.assert_close(natural_cubic_spline(x, t).torchcde_coeffs(), torchcde.natural_cubic_coeffs(x, t),
                               rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(hermite_cubic_backward(x, t).torchcde_coeffs(),
                               torchcde.hermite_cubic_coefficients_with_backward_differences(x, t),
                               rtol=1e-9, atol=1e-9)


@pytest.mark.filterwarnings("ignore:The data `x` begins with missing values")
def test_rectilinear_matches_torchcde():
    x, t = _data()
    x = torch.cat([t.expand(3, -1).unsqueeze(-1), _with_missing(x)], dim=-1)
    ours = rectilinear_interpolation(x, time_channel=0)
    ref = torchcde.LinearInterpolation(torchcde.linear_interpolation_coeffs(x, rectilinear=0))
    tq = torch.linspace(0, 2 * x.shape[-2] - 2, 301, dtype=x.dtype)
    torch.testing.assert_close(ours.evaluate(tq), ref.evaluate(tq), rtol=0, atol=1e-12)
    # Lead-lag: on each odd-to-even segment only the time channel moves, then only the data.
    d = ours.derivative(tq[:-1] + 1e-3)
    moving_time = (tq[:-1] + 1e-3).floor() % 2 == 0
    assert torch.all(d[..., moving_time, 1:] == 0) and torch.all(d[..., ~moving_time, 0] == 0)


def test_natural_cubic_spline_is_c2_with_natural_ends():
    x, t = _data(length=15)
    path = natural_cubic_spline(_with_missing(x), t)
    (v_l, d_l, dd_l), (v_r, d_r, dd_r) = _second_derivative_jumps(path)
    for left, right in ((v_l, v_r), (d_l, d_r), (dd_l, dd_r)):
        torch.testing.assert_close(left, right, rtol=1e-9, atol=1e-9)
    c = path.coeffs[0]                                            # first sample: no leading/trailing gaps
    h = path.knots[-1] - path.knots[-2]
    torch.testing.assert_close(2 * c[0, 2], torch.zeros_like(c[0, 2]), rtol=0, atol=1e-10)
    torch.testing.assert_close(2 * c[-1, 2] + 6 * h * c[-1, 3], torch.zeros_like(c[0, 2]), rtol=0, atol=1e-9)


def test_hermite_is_c1_but_linear_is_not():
    x, t = _data()
    (v_l, d_l, _), (v_r, d_r, _) = _second_derivative_jumps(hermite_cubic_backward(x, t))
    torch.testing.assert_close(v_l, v_r, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(d_l, d_r, rtol=1e-9, atol=1e-9)
    (_, d_l, _), (_, d_r, _) = _second_derivative_jumps(linear_interpolation(x, t))
    assert (d_l - d_r).abs().max() > 1e-2


@pytest.mark.parametrize("interp,causal", [(hermite_cubic_backward, True), (linear_interpolation, True),
                                           (natural_cubic_spline, False)])
def test_causality(interp, causal):
    """The Hermite path up to t_{k+1} depends only on x_0..x_{k+1}; the natural spline's does not."""
    x, t = _data(length=12)
    k = 5
    changed = x.clone()
    changed[:, k + 2:] += torch.randn_like(changed[:, k + 2:])
    tq = torch.linspace(float(t[0]), float(t[k + 1]), 50, dtype=t.dtype)
    same = torch.allclose(interp(x, t).evaluate(tq), interp(changed, t).evaluate(tq), rtol=0, atol=1e-12)
    assert same == causal


@pytest.mark.parametrize("interp", INTERPOLATIONS)
def test_derivative_matches_finite_differences(interp):
    x, t = _data()
    path = interp(x, t)
    tq = _queries(t, 37)
    eps = 1e-6
    fd = (path.evaluate(tq + eps) - path.evaluate(tq - eps)) / (2 * eps)
    near_knot = (tq.view(-1, 1) - t.view(1, -1)).abs().min(dim=1).values < 2 * eps
    torch.testing.assert_close(path.derivative(tq)[..., ~near_knot, :], fd[..., ~near_knot, :],
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("interp", [linear_interpolation, hermite_cubic_backward])
def test_reproduces_linear_functions(interp):
    t = torch.sort(torch.rand(9, dtype=torch.float64) * 3).values
    x = torch.stack([2 * t + 1, -t], dim=-1).unsqueeze(0)
    tq = _queries(t)
    path = interp(x, t)
    torch.testing.assert_close(path.evaluate(tq)[0], torch.stack([2 * tq + 1, -tq], -1), rtol=0, atol=1e-12)
    torch.testing.assert_close(path.derivative(tq)[0, :, 0], torch.full_like(tq, 2.0), rtol=0, atol=1e-11)


@pytest.mark.parametrize("interp,settles_after", [(linear_interpolation, 0), (hermite_cubic_backward, 1),
                                                   (natural_cubic_spline, None)])
def test_lengths_equal_nan_padding_and_path_holds_last_value(interp, settles_after):
    """Past a sample's end the path passes through its last value at every knot; the linear
    path is constant at once, the C1 Hermite path one interval later (its slope must decay)."""
    x, t = _data(length=10)
    lengths = torch.tensor([10, 6, 3])
    padded = x.clone()
    for b, n in enumerate(lengths):
        padded[b, n:] = float("nan")
    a, b = interp(x, t, lengths=lengths), interp(padded, t)
    torch.testing.assert_close(a.coeffs, b.coeffs)
    torch.testing.assert_close(a.evaluate(t[5:])[1], x[1, 5].expand(5, -1), rtol=0, atol=1e-12)
    if settles_after is not None:
        after = torch.linspace(float(t[5 + settles_after]) + 1e-3, float(t[-1]), 20, dtype=t.dtype)
        assert torch.all(a.derivative(after)[1] == 0)


def test_scalar_and_batched_queries_and_dtype():
    x, t = _data()
    path = hermite_cubic_backward(x.float(), t.float())
    assert path.evaluate(0.5).shape == (3, 2) and path.evaluate(0.5).dtype == torch.float32
    assert path.derivative(torch.rand(4, 5)).shape == (3, 4, 5, 2)
    torch.testing.assert_close(path.evaluate(t.float()[4]), x.float()[:, 4])


def test_coefficients_are_differentiable_in_the_data():
    x, t = _data(batch=1, length=6, channels=1)
    xm = x.clone()
    xm[0, 2, 0] = float("nan")
    tq = _queries(t, 9)
    keep = ~torch.isnan(xm)

    def f(values):
        data = xm.masked_scatter(keep, values)
        return natural_cubic_spline(data, t).evaluate(tq)

    assert torch.autograd.gradcheck(f, (x[keep].clone().requires_grad_(),))


def test_missing_values_keep_gradients_finite_at_large_float32_times():
    """Packed padding knots past t[-1] once sat one unit apart, a step float32 loses beyond 2^24 (times in
    seconds over half a year): a zero-width interval, and NaN gradients for the data."""
    t = torch.tensor([0.0, 512.0, 1024.0, 2048.0]) + 2.0 ** 24
    x = torch.tensor([[1.0], [float("nan")], [3.0], [2.0]], requires_grad=True)
    ours = torch.autograd.grad(natural_cubic_spline(x, t).evaluate(t[2] + 100.0).sum(), x)[0]
    X = torchcde.CubicSpline(torchcde.natural_cubic_coeffs(x, t), t)
    ref = torch.autograd.grad(X.evaluate(t[2] + 100.0).sum(), x)[0]
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6)


def test_bad_input_raises_named_errors():
    x, t = _data()
    with pytest.raises(ValueError, match="t must"):
        linear_interpolation(x, t.flip(0))
    with pytest.raises(ValueError, match="t must have shape"):
        natural_cubic_spline(x, t[:-1])
    with pytest.raises(TypeError, match="x must .* got torch.int64"):
        hermite_cubic_backward(x.long(), t)
    with pytest.raises(ValueError, match="lengths"):
        linear_interpolation(x, t, lengths=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="time_channel"):
        rectilinear_interpolation(x, time_channel=5)


@pytest.mark.parametrize("interp", INTERPOLATIONS)
def test_infinite_data_raise_naming_x_while_nan_stays_missing(interp):
    x, t = _data()
    x[1, 4, 0] = float("inf")
    with pytest.raises(ValueError, match=r"x contains ±inf at index \(1, 4, 0\); use NaN"):
        interp(x, t)
    x[1, 4, 0] = -float("inf")
    with pytest.raises(ValueError, match="x contains ±inf"):
        interp(x, t)
    x[1, 4, 0] = float("nan")
    assert torch.isfinite(interp(x, t).coeffs).all()
    x[1, 4, 0] = float("inf")                              # beyond this sample's length: unused, so accepted
    assert torch.isfinite(interp(x, t, lengths=torch.tensor([11, 4, 11])).coeffs).all()


@pytest.mark.parametrize("interp", INTERPOLATIONS)
def test_float64_times_that_float32_cannot_space_raise_naming_t(interp):
    """Unix seconds 1000 s apart are 1024 s apart in float32: raise rather than build a path on wrong knots;
    in float64 data the knots keep the exact spacing, and ordinary float64 times still cast to float32."""
    t = 1.7e9 + 1000.0 * torch.arange(6, dtype=torch.float64)
    with pytest.raises(ValueError, match="t loses precision in torch.float32"):
        interp(torch.randn(2, 6, 1), t)
    with pytest.raises(ValueError, match="t loses precision"):
        interp(torch.randn(2, 6, 1), t.tolist())
    assert torch.equal(interp(torch.randn(2, 6, 1, dtype=torch.float64), t).knots - 1.7e9,
                       1000.0 * torch.arange(6, dtype=torch.float64))
    path = interp(torch.randn(2, 6, 1), torch.linspace(0, 1, 6, dtype=torch.float64))
    assert path.knots.dtype == torch.float32


def test_control_path_checks_its_knots_and_accepts_a_list():
    coeffs = torch.randn(3, 2, 4, 1)
    path = ControlPath([0.0, 0.5, 1.5], coeffs)
    assert path.knots.dtype == torch.float32 and path.evaluate(1.0).shape == (3, 1)
    for knots in ([0.0, 1.5, 0.5], [0.0, float("nan"), 1.0], [0.0, 1.0, 1.0]):
        with pytest.raises(ValueError, match="knots must be finite and strictly increasing"):
            ControlPath(torch.tensor(knots), coeffs)
    with pytest.raises(TypeError, match="coeffs must"):
        ControlPath([0.0, 1.0], [[1.0]])


def test_control_path_casts_float_knots_of_another_dtype_to_the_coefficients():
    """float64 knots with float32 coefficients were kept: X(t) and dX/dt came out float64, and cdeint
    with a float32 state failed in the field's product."""
    coeffs = torch.randn(2, 3, 4, 2)
    path = ControlPath(torch.tensor([0.0, 0.5, 1.5, 2.0], dtype=torch.float64), coeffs)
    same = ControlPath(torch.tensor([0.0, 0.5, 1.5, 2.0]), coeffs)
    assert path.knots.dtype == torch.float32
    for t in (0.7, torch.tensor([0.2, 1.9])):
        assert torch.equal(path.evaluate(t), same.evaluate(t)) and torch.equal(path.derivative(t), same.derivative(t))
    assert cdeint(path, MLPCDEField(2, 3, width=8), torch.zeros(2, 3), path.interval, method="rk4",
                  step_size=0.5).dtype == torch.float32
    with pytest.raises(ValueError, match="knots loses precision"):
        ControlPath(1.7e9 + 1000.0 * torch.arange(4, dtype=torch.float64), coeffs)


def test_rectilinear_rejects_a_time_channel_that_goes_back():
    x = torch.randn(2, 5, 2)
    x[..., 0] = torch.tensor([0.0, 1.0, 3.0, 2.0, 4.0])
    with pytest.raises(ValueError, match=r"time channel of x \(channel 0\) must be non-decreasing"):
        rectilinear_interpolation(x, time_channel=0)
    x[..., 0] = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    assert rectilinear_interpolation(x, time_channel=0, lengths=torch.tensor([5, 3])).knots.shape == (9,)


def test_rectilinear_rejects_a_nan_time_within_the_lengths():
    """With ``lengths``, only NaN at or beyond a sample's length is padding; a NaN time before it was
    forward-filled silently (a time channel that stalls), where without ``lengths`` it raises."""
    x = torch.randn(2, 5, 2)
    x[..., 0] = torch.arange(5.0)
    x[1, 3:, 0] = float("nan")
    assert rectilinear_interpolation(x, time_channel=0, lengths=torch.tensor([5, 3])).knots.shape == (9,)
    for lengths in ([5, 4], [5, 5]):
        with pytest.raises(ValueError, match="time channel of x contains NaN"):
            rectilinear_interpolation(x, time_channel=0, lengths=torch.tensor(lengths))
    x[1, 3:, 0] = 3.0
    x[0, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="time channel of x contains NaN"):
        rectilinear_interpolation(x, time_channel=0, lengths=torch.tensor([5, 5]))


@pytest.mark.gpu
def test_derivative_has_no_host_sync_on_cuda():
    x, t = _data()
    path = natural_cubic_spline(x.cuda(), t.cuda())
    tq = torch.tensor(1.3, dtype=torch.float64, device="cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        path.derivative(tq)
        path.evaluate(tq)
    finally:
        torch.cuda.set_sync_debug_mode("default")
