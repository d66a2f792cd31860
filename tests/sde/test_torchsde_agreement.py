"""nde.sdeint agrees with torchsde.sdeint to round-off on the same Brownian path and method."""
import pytest
import torch
import torchsde

from nde.sde import BrownianPath, sdeint

from tests.sde.models import GBM, OU, NeuralSDE

TS = torch.tensor([0.0, 0.3, 0.55, 1.0], dtype=torch.float64)   # 0.55 is off the dt grid: interpolated
CASES = [
    ("ito", "diagonal", "euler"), ("ito", "diagonal", "milstein"), ("ito", "diagonal", "srk"),
    ("ito", "general", "euler"), ("ito", "additive", "srk"), ("ito", "additive", "milstein"),
    ("ito", "scalar", "euler"), ("ito", "scalar", "milstein"), ("ito", "scalar", "srk"),
    ("stratonovich", "scalar", "midpoint"), ("stratonovich", "additive", "reversible_heun"),
    ("stratonovich", "diagonal", "euler_heun"), ("stratonovich", "diagonal", "heun"),
    ("stratonovich", "diagonal", "midpoint"), ("stratonovich", "diagonal", "milstein"),
    ("stratonovich", "diagonal", "reversible_heun"), ("stratonovich", "general", "midpoint"),
    ("stratonovich", "general", "reversible_heun"), ("stratonovich", "general", "heun"),
]


def _sde(sde_type, noise_type):
    torch.manual_seed(0)
    if noise_type == "additive":
        return OU(sde_type), 1
    if noise_type == "scalar":
        return GBM(sde_type, noise_type="scalar"), 1
    model = NeuralSDE(sde_type, noise_type)
    return model, model.m


# The diagonal-noise network couples the components, as in torchsde's own tests: Milstein and SRK then drop
# the cross-derivatives in both libraries alike (nde warns about it).
@pytest.mark.filterwarnings("ignore:method .* with noise_type='diagonal' assumes")
@pytest.mark.parametrize("sde_type,noise_type,method", CASES)
def test_same_path_same_result(sde_type, noise_type, method):
    sde, m = _sde(sde_type, noise_type)
    d = 1 if noise_type in ("additive", "scalar") else sde.d
    y0 = torch.rand(4, d, dtype=torch.float64) + 0.5
    area = "space-time" if method == "srk" else "none"
    bm = torchsde.BrownianInterval(0.0, 1.0, size=(4, m), dtype=torch.float64, entropy=5,
                                   levy_area_approximation=area)
    with torch.no_grad():
        expected = torchsde.sdeint(sde, y0, TS, bm=bm, method=method, dt=0.05)
        got = sdeint(sde, y0, TS, bm=bm, method=method, dt=0.05)
    assert got.shape == expected.shape == (len(TS), 4, d)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_grad_free_milstein_and_default_method_agree():
    sde = GBM("ito")
    y0 = torch.rand(4, 1, dtype=torch.float64) + 0.5
    bm = BrownianPath(0.0, 1.0, (4, 1), dtype=torch.float64, entropy=2, levy_area_approximation="space-time")
    for kwargs in (dict(method="milstein", options={"grad_free": True}), dict()):   # default: srk
        with torch.no_grad():
            expected = torchsde.sdeint(sde, y0, TS, bm=bm, dt=0.05, **kwargs)
            got = sdeint(sde, y0, TS, bm=bm, dt=0.05, **kwargs)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_logqp_and_extra_match_torchsde():
    class Prior(GBM):
        def h(self, t, y):
            return -y

    sde = Prior("stratonovich")
    y0 = torch.rand(3, 1, dtype=torch.float64) + 0.5
    # torchsde's logqp augments the state by one channel; with diagonal noise the path has d + 1 channels.
    bm = BrownianPath(0.0, 1.0, (3, 2), dtype=torch.float64, entropy=4)
    with torch.no_grad():
        ys_t, logqp_t, extra_t = torchsde.sdeint(sde, y0, TS, bm=bm, method="reversible_heun", dt=0.05,
                                                 logqp=True, extra=True)
        ys, logqp, extra = sdeint(sde, y0, TS, bm=bm, method="reversible_heun", dt=0.05, logqp=True, extra=True)
    assert logqp.shape == logqp_t.shape == (len(TS) - 1, 3)
    torch.testing.assert_close(ys, ys_t, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logqp, logqp_t, rtol=1e-12, atol=1e-12)
    for a, b in zip(extra, extra_t):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_torchsde_accepts_nde_brownian_path():
    sde = GBM("ito")
    y0 = torch.ones(2, 1, dtype=torch.float64)
    bm = BrownianPath(0.0, 1.0, (2, 1), dtype=torch.float64, entropy=9)
    with torch.no_grad():
        ys = torchsde.sdeint(sde, y0, TS, bm=bm, method="euler", dt=0.05)
    torch.testing.assert_close(ys, sdeint(sde, y0, TS, bm=bm, method="euler", dt=0.05).detach(),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["euler", "srk"])
def test_torchsde_on_a_brownian_grid_agrees(method):
    """torchsde queries a BrownianGrid interval by interval, nde by cell index: the same noise. dt = 0.1 on
    [0, 1] leaves a last cell of ~1e-16 (0.9999999999999999 -> 1.0) whose two nodes must not be merged."""
    from nde.sde import BrownianGrid
    from nde.sde.integrate import fixed_grid
    ts = [0.0, 0.5, 1.0]
    area = "space-time" if method == "srk" else "none"
    bm = BrownianGrid(fixed_grid(ts, 0.1).times, (4, 1), dtype=torch.float64, entropy=3,
                      levy_area_approximation=area)
    y0 = torch.rand(4, 1, dtype=torch.float64) + 0.5
    with torch.no_grad():
        expected = torchsde.sdeint(GBM("ito"), y0, torch.tensor(ts, dtype=torch.float64), bm=bm, method=method,
                                   dt=0.1)
        got = sdeint(GBM("ito"), y0, ts, bm=bm, method=method, dt=0.1)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_base_classes_like_torchsde():
    """An SDE written against torchsde.SDEIto / SDEStratonovich runs unchanged on nde's base classes and
    gives torchsde's result; bad noise or SDE types name the argument."""
    import nde.sde

    def make(base):
        class Geometric(base):
            def __init__(self):
                super().__init__(noise_type="diagonal")
                self.mu = torch.nn.Parameter(torch.tensor(0.3, dtype=torch.float64))

            def f(self, t, y):
                return self.mu * y

            def g(self, t, y):
                return 0.5 * y
        return Geometric()
    y0 = torch.full((3, 2), 1.0, dtype=torch.float64)
    for ours_base, their_base in ((nde.sde.SDEIto, torchsde.SDEIto),
                                  (nde.sde.SDEStratonovich, torchsde.SDEStratonovich)):
        ours, theirs = make(ours_base), make(their_base)
        assert isinstance(ours, torch.nn.Module) and ours.sde_type == theirs.sde_type
        bm = BrownianPath(0.0, 1.0, (3, 2), dtype=torch.float64, entropy=1)
        method = "milstein"
        ys = sdeint(ours, y0, TS, bm=bm, method=method, dt=0.05)
        ref = torchsde.sdeint(theirs, y0, TS, bm=bm, method=method, dt=0.05)
        torch.testing.assert_close(ys, ref, atol=1e-12, rtol=0)
        assert len(list(ours.parameters())) == 1
    with pytest.raises(ValueError, match="`noise_type` must be one of"):
        nde.sde.SDEIto("diag")
    with pytest.raises(ValueError, match="`sde_type` must be one of"):
        nde.sde.BaseSDE("diagonal", "itoh")


def test_brownian_path_with_a_last_step_of_1e_16_agrees_with_torchsde():
    """dt = 0.1 on [0, 1] ends with a cell 0.9999999999999999 -> 1.0 shorter than BrownianPath's snapping distance.
    torchsde asks for it alone, and its end snaps to its start (increment 0); nde drew the grid at once and gave it
    a normal increment of ~1e-8, so the two differed by 1e-9 on the same path."""
    from nde.sde.integrate import fixed_grid
    assert fixed_grid([0.0, 1.0], 0.1).times[-1] - fixed_grid([0.0, 1.0], 0.1).times[-2] < 1e-15
    sde = GBM("stratonovich")
    y0 = torch.rand(4, 1, dtype=torch.float64) + 0.5
    ts = torch.tensor([0.0, 0.55, 1.0], dtype=torch.float64)
    with torch.no_grad():
        expected = torchsde.sdeint(sde, y0, ts, bm=BrownianPath(0.0, 1.0, (4, 1), dtype=torch.float64, entropy=6),
                                   method="midpoint", dt=0.1)
        got = sdeint(sde, y0, ts, bm=BrownianPath(0.0, 1.0, (4, 1), dtype=torch.float64, entropy=6),
                     method="midpoint", dt=0.1)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
