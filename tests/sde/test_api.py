"""API edge: every bad input gets a clear error; adaptive steps; Solution contents; names."""
import warnings

import pytest
import torch
import torchsde

import nde
from nde.sde import BrownianGrid, BrownianPath, BrownianTree, sdeint, sdeint_adjoint, solve_sde
from nde.sde.integrate import fixed_grid
from tests.sde.models import GBM, NeuralSDE

Y0 = torch.ones(3, 1, dtype=torch.float64)
TS = [0.0, 0.5, 1.0]


class Bare:
    """A non-Module sde with configurable attributes."""
    def __init__(self, noise_type="diagonal", sde_type="ito", g_shape=None, f=True, nan_g=False):
        self.noise_type, self.sde_type, self._g_shape = noise_type, sde_type, g_shape
        self._g_value = float("nan") if nan_g else 1.0
        if f:
            self.f = lambda t, y: -y

    def g(self, t, y):
        shape = self._g_shape or y.shape
        return torch.full(shape, self._g_value, dtype=y.dtype)


class _PathOn:
    """A torchsde-protocol path that says it lives on ``device`` (``shape``, ``dtype``, ``device``)."""
    shape, dtype = (3, 1), torch.float64

    def __init__(self, device):
        self.device = torch.device(device)

    def __call__(self, ta, tb):
        return torch.zeros(self.shape, dtype=self.dtype, device=self.device)


@pytest.mark.parametrize("sde,match", [
    (Bare(noise_type="colored"), "noise_type"),
    (Bare(sde_type="levy"), "sde_type"),
    (Bare(f=False), "define `f` and `g`"),
    (Bare(g_shape=(3, 1, 1)), "noise_type='diagonal' needs g"),
    (Bare(noise_type="general", g_shape=(3, 1)), "noise_type='general' needs g"),
    (Bare(noise_type="scalar", g_shape=(3, 1, 2)), "noise_type='scalar' needs g"),
])
def test_bad_sde_objects(sde, match):
    with pytest.raises(ValueError, match=match):
        sdeint(sde, Y0, TS, dt=0.1)


def test_missing_noise_type_attribute():
    class NoType:
        sde_type = "ito"
        def f(self, t, y): return y
        def g(self, t, y): return y
    with pytest.raises(ValueError, match="noise_type"):
        sdeint(NoType(), Y0, TS)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(y0=torch.ones(3)), ValueError, "y0 must have shape"),
    (dict(y0=[[1.0]]), TypeError, "y0 must be a torch.Tensor"),
    (dict(y0=torch.ones(3, 1, dtype=torch.long)), TypeError, "floating-point"),
    (dict(y0=torch.tensor([[float("nan")]], dtype=torch.float64)), ValueError, "non-finite"),
    (dict(y0=torch.ones(0, 1, dtype=torch.float64)), ValueError, r"batch, d >= 1, got \(0, 1\)"),
    (dict(sde=Bare(g_shape=None, nan_g=True)), ValueError, r"diffusion g\(t, y\) returned non-finite values"),
    (dict(ts=[0.0, 1.0, 0.5]), ValueError, "strictly increasing"),
    (dict(ts=torch.tensor([0.0, 1.0], requires_grad=True)), ValueError, "ts must not require"),
    (dict(ts="0 1"), TypeError, "ts must be"),
    (dict(dt=0.0), ValueError, "dt must be > 0"),
    (dict(dt=-1.0), ValueError, "dt must be > 0"),
    (dict(rtol=-1.0), ValueError, "rtol"),
    (dict(method="rk4"), ValueError, "method must be one of"),
    (dict(method="heun"), ValueError, "solves stratonovich SDEs"),
    (dict(method="milstein", options={"grad_free": True, "foo": 1}), ValueError, "unknown keys"),
    (dict(method="euler", options={"grad_free": True}), ValueError, "grad_free"),
    (dict(options={"max_steps": 0}), ValueError, r"options\['max_steps'\] must be a positive integer"),
    (dict(options={"max_steps": 1.5}), ValueError, r"options\['max_steps'\]"),
    (dict(bm=BrownianPath(0.0, 1.0, (3, 2))), ValueError, "bm has shape"),
    (dict(bm=BrownianPath(0.0, 0.5, (3, 1))), ValueError, "bm covers"),
    (dict(bm=torchsde.BrownianPath(0.0, torch.zeros(3, 1, dtype=torch.float64)), ts=[0.0, 1.0, 2.0]), ValueError,
     r"bm covers \[0.0, 1.0\]"),   # torchsde's BrownianPath answers on [t0, t0 + 1] only
    (dict(bm=torchsde.BrownianTree(0.0, torch.zeros(3, 1, dtype=torch.float64), t1=0.5)), ValueError, "bm covers"),
    (dict(bm=torchsde.BrownianInterval(0.0, 1.0, size=(3, 1)), method="srk"), ValueError, "Lévy area"),
    (dict(bm=3), TypeError, "bm must be callable"),
    (dict(adaptive="yes"), TypeError, "adaptive"),
    (dict(adaptive=True, rtol=0.0, atol=0.0), ValueError, "below the resolution"),
    (dict(options="grad_free"), TypeError, "options must be a dict"),
    (dict(method="milstein", options={"grad_free": "no"}), TypeError, r"options\['grad_free'\] must be True"),
    (dict(logqp="no"), TypeError, "logqp must be True or False"),
    (dict(extra="no"), TypeError, "extra must be True or False"),
    (dict(bm=BrownianPath(0.0, 1.0, (3, 1), dtype=torch.float32), method="euler"), TypeError, "bm has dtype"),
    (dict(bm=lambda ta, tb: torch.tensor(0.0, dtype=torch.float64)), ValueError, "bm has shape"),
    (dict(bm=lambda ta, tb: 0.0), TypeError, "bm\\(ta, tb\\) must return a tensor"),
    # a path on another device than y0 failed deep inside a step with torch's device error, naming no argument
    (dict(bm=lambda ta, tb: torch.zeros(3, 1, dtype=torch.float64, device="meta"), method="euler"), ValueError,
     "bm is on device meta but y0 is on cpu"),
    (dict(bm=_PathOn("meta"), method="euler"), ValueError, "bm is on device meta but y0 is on cpu"),
    (dict(method="reversible_heun", sde=GBM("stratonovich"), extra_solver_state=(torch.ones(2),)), ValueError,
     "extra_solver_state for method 'reversible_heun' must be a tuple of 3"),
    (dict(names={"drift2": "f"}), ValueError, "unknown keys"),
    (dict(unknown_argument=1), TypeError, "unexpected keyword"),
])
def test_bad_arguments(kwargs, error, match):
    args = dict(sde=GBM("ito"), y0=Y0, ts=TS, dt=0.1)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        sdeint(**args)


def test_unsupported_noise_for_method():
    with pytest.raises(ValueError, match="supports noise types"):
        sdeint(NeuralSDE("ito", "general"), torch.zeros(2, 3, dtype=torch.float64), TS, method="milstein")


def test_adjoint_argument_errors():
    sde = GBM("stratonovich")
    with pytest.raises(ValueError, match="adjoint_adaptive"):
        sdeint_adjoint(sde, Y0, TS, adjoint_adaptive=True)
    with pytest.raises(ValueError, match="adjoint_method must be one of"):
        sdeint_adjoint(sde, Y0, TS, method="midpoint", adjoint_method="euler")
    with pytest.raises(ValueError, match="needs method='reversible_heun'"):
        sdeint_adjoint(sde, Y0, TS, method="midpoint", adjoint_method="adjoint_reversible_heun")
    with pytest.raises(ValueError, match="nn.Module"):
        sdeint_adjoint(Bare(sde_type="stratonovich"), Y0, TS)
    with pytest.raises(ValueError, match="Itô SDE needs commutative noise"):
        sdeint_adjoint(NeuralSDE("ito", "general"), torch.zeros(2, 3, dtype=torch.float64), TS)
    with pytest.raises(ValueError, match="gradient='reversible' needs"):
        solve_sde(sde, Y0, TS, method="heun", gradient="reversible")
    with pytest.raises(ValueError, match="gradient must be one of"):
        solve_sde(sde, Y0, TS, gradient="adjoint")


@pytest.mark.parametrize("gradient,method", [("backsolve", "midpoint"), ("reversible", "reversible_heun")])
def test_solve_sde_adjoint_of_a_non_module_sde_needs_adjoint_params(gradient, method):
    """A tensor captured by a non-Module sde got no gradient in the adjoint modes, silently (sdeint_adjoint refuses);
    with adjoint_params it gets the direct mode's gradient."""
    rate = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)

    class Captured(Bare):
        def __init__(self):
            super().__init__(sde_type="stratonovich")
            self.f = lambda t, y: -rate * y
    path = BrownianPath(0.0, 1.0, size=(3, 1), dtype=torch.float64, entropy=0)
    with pytest.raises(ValueError, match="adjoint_params: the sde is not an nn.Module"):
        solve_sde(Captured(), Y0, TS, bm=path, method=method, dt=0.1, gradient=gradient)
    grads = [torch.autograd.grad(solve_sde(Captured(), Y0, TS, bm=path, method=method, dt=0.1, gradient=mode,
                                           **kwargs).ys[-1].sum(), rate)[0]
             for mode, kwargs in (("direct", {}), (gradient, {"adjoint_params": (rate,)}))]
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-2, atol=0)


@pytest.mark.parametrize("method", ["reversible_heun", "midpoint"])
def test_sdeint_adjoint_with_a_single_tensor_as_adjoint_params_raises(method):
    """adjoint_params=sde.sigma (a tensor, not a sequence) was split into its rows, which f and g never use:
    sigma's gradient came out as zeros, silently (direct autograd gives W_T y_T)."""
    sde = GBM("stratonovich", mu=0.3, sigma=0.5)
    sde.sigma = torch.nn.Parameter(torch.tensor([0.5], dtype=torch.float64))
    path = BrownianPath(0.0, 1.0, size=(3, 1), dtype=torch.float64, entropy=0)
    with pytest.raises(TypeError, match="adjoint_params must be a sequence of tensors"):
        sdeint_adjoint(sde, Y0, TS, bm=path, method=method, dt=0.1, adjoint_params=sde.sigma)
    with pytest.raises(TypeError, match="adjoint_params must be a sequence of tensors"):
        solve_sde(sde, Y0, TS, bm=path, method=method, dt=0.1, gradient="backsolve", adjoint_params=sde.sigma)


def test_nonfinite_solution_raises_solver_error_with_time():
    class Explode(GBM):
        def f(self, t, y):
            return 1e200 * y * y

    with pytest.raises(nde.SolverError, match="non-finite"):
        sdeint(Explode("ito"), Y0, TS, method="euler", dt=0.1)


def test_tiny_fixed_dt_is_a_solver_error_before_any_step():
    # 10^12 steps: the grid would not fit in memory; the check must come before it is built.
    class Counting(GBM):
        calls = 0

        def f(self, t, y):
            Counting.calls += 1
            return super().f(t, y)

    with pytest.raises(nde.SolverError, match=r"needs about 1000000000000 steps, max_steps=1000000"):
        sdeint(Counting("ito"), Y0, [0.0, 1.0], method="euler", dt=1e-12)
    assert Counting.calls <= 1  # the argument check's one evaluation of f, no step


def test_fixed_dt_below_the_float_spacing_of_t_is_an_error_not_a_hang():
    """At t = 1.7e9 floats are 2.4e-7 apart, so t + 1e-8 == t: the grid never advanced (1000 steps by count)."""
    import signal

    def hung(signum, frame):
        raise TimeoutError("fixed_grid did not return: t + dt == t never advances")

    assert 1.7e9 + 1e-8 == 1.7e9
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(5)
    try:
        with pytest.raises(nde.SolverError, match=r"t \+ dt == t"):
            fixed_grid([1.7e9, 1.7e9 + 1e-5], 1e-8)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("adaptive", [False, True])
def test_max_steps_option_bounds_fixed_and_adaptive_solves(adaptive):
    sde = GBM("ito")
    args = dict(method="euler", dt=0.01, adaptive=adaptive, rtol=1e-2, atol=1e-2)
    with pytest.raises(nde.SolverError, match="max_steps=20") as info:
        sdeint(sde, Y0, TS, options={"max_steps": 20}, **args)
    assert "throw=False" not in str(info.value)  # sdeint has no throw argument
    assert sdeint(sde, Y0, TS, options={"max_steps": 10 ** 5}, **args).shape == (3, 3, 1)


def test_names_rename_methods_and_f_and_g_is_used():
    class Renamed(torch.nn.Module):
        noise_type, sde_type = "diagonal", "ito"
        def drift(self, t, y): return 0.5 * y
        def diff(self, t, y): return 0.3 * y

    class Fused(torch.nn.Module):
        noise_type, sde_type = "diagonal", "ito"
        def f_and_g(self, t, y): return 0.5 * y, 0.3 * y

    bm = BrownianPath(0.0, 1.0, (3, 1), dtype=torch.float64, entropy=1)
    reference = sdeint(GBM("ito", 0.5, 0.3), Y0, TS, bm=bm, method="euler", dt=0.1)
    renamed = sdeint(Renamed(), Y0, TS, bm=bm, method="euler", dt=0.1, names={"drift": "drift", "diffusion": "diff"})
    fused = sdeint(Fused(), Y0, TS, bm=bm, method="euler", dt=0.1)
    torch.testing.assert_close(renamed, reference)
    torch.testing.assert_close(fused, reference)


def test_solve_sde_returns_core_solution_with_stats():
    sol = solve_sde(GBM("stratonovich"), Y0, TS, method="midpoint", dt=0.125, entropy=3)
    assert isinstance(sol, nde.Solution) and sol.success
    assert sol.ys.shape == (3, 3, 1)
    assert int(sol.stats["n_accepted"]) == 8 and int(sol.stats["nfe"]) == 16
    torch.testing.assert_close(sol.ts, torch.tensor(TS, dtype=torch.float64))


def test_default_path_is_reproducible_with_entropy():
    a = solve_sde(GBM("ito"), Y0, TS, dt=0.1, entropy=5).ys
    b = solve_sde(GBM("ito"), Y0, TS, dt=0.1, entropy=5).ys
    c = solve_sde(GBM("ito"), Y0, TS, dt=0.1, entropy=6).ys
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_default_fixed_step_path_is_a_grid_path_on_the_step_nodes():
    """Fixed steps without ``bm``: a BrownianGrid on torchsde's step nodes, seeded with ``entropy``
    (srk also gets its space-time area); adaptive steps keep a BrownianPath."""
    for method, area in (("euler", "none"), ("srk", "space-time")):
        bm = BrownianGrid(fixed_grid(TS, 0.1).times, (3, 1), dtype=torch.float64, entropy=5,
                          levy_area_approximation=area)
        explicit = solve_sde(GBM("ito"), Y0, TS, bm=bm, method=method, dt=0.1).ys
        default = solve_sde(GBM("ito"), Y0, TS, method=method, dt=0.1, entropy=5).ys
        assert torch.equal(default, explicit)
    adaptive = solve_sde(GBM("ito"), Y0, TS, method="euler", dt=0.1, adaptive=True, rtol=1e-3, atol=1e-3,
                        entropy=5).ys
    path = BrownianPath(0.0, 1.0, (3, 1), dtype=torch.float64, entropy=5)
    torch.testing.assert_close(adaptive, solve_sde(GBM("ito"), Y0, TS, bm=path, method="euler", dt=0.1, rtol=1e-3, atol=1e-3,
                                                   adaptive=True).ys, rtol=0, atol=0)


@pytest.mark.parametrize("path", [BrownianPath, BrownianTree])
def test_adaptive_steps_meet_tolerance_and_expose_error_ratios(path):
    """Step doubling + PI control: error against the exact GBM path falls with the tolerance."""
    sde = GBM("stratonovich", mu=0.5, sigma=0.5)
    y0 = torch.ones(64, 1, dtype=torch.float64)
    errors, steps = [], []
    for tol in (1e-2, 1e-4):
        bm = path(0.0, 1.0, (64, 1), dtype=torch.float64, entropy=2)
        sol = solve_sde(sde, y0, [0.0, 1.0], bm=bm, method="heun", dt=0.1, adaptive=True, rtol=tol, atol=tol)
        truth = sde.exact(y0, 1.0, bm(0.0, 1.0))
        errors.append(float((sol.ys[-1] - truth).abs().max().detach()))
        steps.append(int(sol.stats["n_accepted"]))
        ratios = sol.heuristics["error_ratio"]
        assert ratios.shape == (steps[-1],) and bool((ratios <= 1).all())
        torch.testing.assert_close(sol.heuristics["dt"].sum(), torch.tensor(1.0, dtype=torch.float64))
    assert steps[1] > steps[0]
    assert errors[1] < errors[0] / 10, errors


def test_adaptive_rejects_a_non_finite_trial_step_and_shrinks():
    """dy = 10 (1 − √y) dt + 0.01 dW from y = 4: a first trial step of 1 takes the half step to y < 0, where
    √y is NaN. That step is rejected and shrunk, as in the ODE core (it raised at once, with a message that
    claimed step-size reduction had been tried); the solve ends near the noise-free y(1) = 1.036 (scipy; the
    noise's spread is about 0.01 / √10 = 3e-3, Euler's error at this tolerance about 7e-3)."""
    from scipy.integrate import solve_ivp

    class Sqrt(torch.nn.Module):
        noise_type, sde_type = "additive", "ito"

        def f(self, t, y):
            return 10 * (1 - y.sqrt())

        def g(self, t, y):
            return torch.full((*y.shape, 1), 0.01, dtype=y.dtype)

    y0 = torch.full((2, 1), 4.0, dtype=torch.float64)
    bm = BrownianPath(0.0, 1.0, (2, 1), dtype=torch.float64, entropy=0)
    sol = solve_sde(Sqrt(), y0, [0.0, 1.0], bm=bm, method="euler", dt=1.0, adaptive=True, rtol=1e-3, atol=1e-3)
    assert int(sol.stats["n_rejected"]) >= 1 and bool(torch.isfinite(sol.ys).all())
    ode = solve_ivp(lambda t, y: 10 * (1 - y ** 0.5), (0.0, 1.0), [4.0], rtol=1e-10, atol=1e-10).y[0, -1]
    assert float((sol.ys[-1] - ode).abs().max()) < 0.03
    # a drift that is NaN whatever the step still fails, at dt_min, naming where
    class Nan(Sqrt):
        def f(self, t, y):
            return torch.where(t > 0.5, y * float("nan"), -y)

    with pytest.raises(nde.SolverError, match="non-finite.*dt_min"):
        solve_sde(Nan(), y0, [0.0, 1.0], method="euler", dt=0.1, adaptive=True, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("path", [BrownianPath, BrownianTree])
def test_adaptive_reversible_adjoint_gradient_equals_adaptive_direct(path):
    """The adjoint modes replay the accepted steps of the adaptive forward pass (the tree recomputes
    the noise it does not keep)."""
    torch.manual_seed(0)
    sde = NeuralSDE("stratonovich")
    y0 = torch.randn(4, 3, dtype=torch.float64)
    grads = []
    for fn in (sdeint, sdeint_adjoint):
        bm = path(0.0, 1.0, (4, 3), dtype=torch.float64, entropy=1)
        ys = fn(sde, y0, TS, bm=bm, method="reversible_heun", dt=0.1, adaptive=True, rtol=1e-3, atol=1e-3)
        grads.append(torch.autograd.grad(ys.pow(2).sum(), list(sde.parameters())))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("gradient", ["direct", "reversible"])
@pytest.mark.parametrize("adaptive", [False, True])
def test_nfe_counts_every_drift_evaluation(gradient, adaptive):
    """stats['nfe'] equals the number of drift calls, reversible Heun's initial evaluation included, but not the
    one evaluation that checks the shapes of f and g before solving."""
    class Counting(GBM):
        calls = 0

        def f(self, t, y):
            Counting.calls += 1
            return super().f(t, y)

    sol = solve_sde(Counting("stratonovich"), Y0, TS, method="reversible_heun", dt=0.125, entropy=3,
                    gradient=gradient, adaptive=adaptive)
    assert int(sol.stats["nfe"]) == Counting.calls - 1


def test_drift_dtype_and_entropy_with_bm_are_errors():
    class Complex(GBM):
        def f(self, t, y):
            return super().f(t, y).to(torch.complex128)
    with pytest.raises(TypeError, match="drift f\\(t, y\\) returned dtype torch.complex128"):
        sdeint(Complex("ito"), Y0, TS, dt=0.1)
    with pytest.raises(ValueError, match="entropy seeds the default Brownian path"):
        solve_sde(GBM("ito"), Y0, TS, dt=0.1, entropy=3, method="euler",
                  bm=BrownianPath(0.0, 1.0, (3, 1), dtype=torch.float64))
    with pytest.raises(ValueError, match="entropy must be an int"):
        solve_sde(GBM("ito"), Y0, TS, dt=0.1, entropy=1.7)


def test_half_precision_adaptive_tolerance_is_checked_up_front():
    """float16 cannot resolve the default rtol=1e-5/atol=1e-4: a clear error instead of 10^5 rejected steps."""
    with pytest.raises(ValueError, match="below the resolution of torch.float16"):
        sdeint(GBM("ito"), Y0.half(), TS, dt=0.1, adaptive=True)


def test_unused_adjoint_tolerances_are_still_checked():
    with pytest.raises(ValueError, match="adjoint_rtol must be >= 0"):
        sdeint_adjoint(GBM("ito"), Y0, TS, dt=0.1, adjoint_rtol=-5.0)


def test_additive_noise_that_depends_on_the_state_is_refused():
    """SRK and Milstein drop the derivative terms of additive noise; a g that depends on y would be solved
    with the wrong correction."""
    class NotAdditive(Bare):
        def g(self, t, y):
            return y.unsqueeze(-1)
    with pytest.raises(ValueError, match="noise_type='additive' needs a diffusion g\\(t, y\\) independent of y"):
        sdeint(NotAdditive(noise_type="additive"), Y0, TS, dt=0.1)


class CoupledDiagonal(Bare):
    """Diagonal noise whose g_i depends on every y_j (a dense network would do this)."""
    def g(self, t, y):
        return 0.2 * torch.sin(y.sum(1, keepdim=True)).expand_as(y)


@pytest.mark.parametrize("method,sde_type", [("milstein", "ito"), ("milstein", "stratonovich"), ("srk", "ito")])
def test_diagonal_noise_coupled_across_components_warns_with_derivative_methods(method, sde_type):
    """Milstein and SRK use dg_i/dy_i only, which is the whole derivative only if g_i depends on y_i alone.
    torchsde runs such SDEs silently, so (drop-in) nde warns instead of refusing."""
    y0 = torch.ones(3, 2, dtype=torch.float64)
    with pytest.warns(UserWarning, match=f"method '{method}' with noise_type='diagonal' assumes g_i"):
        sdeint(CoupledDiagonal(sde_type=sde_type), y0, TS, dt=0.1, method=method)


@pytest.mark.parametrize("method,sde_type", [("euler", "ito"), ("heun", "stratonovich"),
                                             ("midpoint", "stratonovich"), ("euler_heun", "stratonovich")])
def test_diagonal_noise_coupled_across_components_runs_with_derivative_free_methods(method, sde_type):
    y0 = torch.ones(3, 2, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ys = sdeint(CoupledDiagonal(sde_type=sde_type), y0, TS, dt=0.1, method=method)
    assert ys.shape == (3, 3, 2) and torch.isfinite(ys).all()


def test_diagonal_noise_with_componentwise_g_passes_the_check():
    class Componentwise(Bare):
        def g(self, t, y):
            return 0.2 * torch.sin(y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ys = sdeint(Componentwise(), torch.ones(3, 2, dtype=torch.float64), TS, dt=0.1, method="milstein")
    assert torch.isfinite(ys).all()


def test_ito_backsolve_adjoint_probes_the_diagonal_contract():
    """The Itô adjoint's Stratonovich correction uses dg_i/dy_i too; the Stratonovich adjoint does not."""
    y0 = torch.ones(3, 2, dtype=torch.float64)
    with pytest.warns(UserWarning, match="the Itô backsolve adjoint with noise_type='diagonal' assumes g_i"):
        sdeint_adjoint(CoupledDiagonal(sde_type="ito"), y0, TS, dt=0.1, method="euler", adjoint_params=())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sdeint_adjoint(CoupledDiagonal(sde_type="stratonovich"), y0, TS, dt=0.1, method="midpoint",
                       adjoint_params=())


def test_steps_forced_at_dt_min_warn():
    """A step at dt_min is accepted whatever its error (as torchsde); the solve says so, as torchsde and the ODE
    core do, exactly when some accepted step's error ratio is above 1 (it returned such solutions silently)."""
    stiff = GBM("ito", mu=-100.0, sigma=0.1)
    kw = dict(method="euler", adaptive=True, dt=0.1, rtol=1e-3, atol=1e-3)
    with pytest.warns(UserWarning, match="dt_min=0.01"):
        sol = solve_sde(stiff, Y0, [0.0, 0.1], dt_min=1e-2, **kw)
    assert bool((sol.heuristics["error_ratio"] > 1).any())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sol = solve_sde(stiff, Y0, [0.0, 0.1], dt_min=1e-5, **kw)
    assert bool((sol.heuristics["error_ratio"] <= 1).all())


@pytest.mark.parametrize("ts", [[0.0, 0.1], [0.0, 0.07, 0.1]])
def test_adaptive_steps_do_not_leave_a_rounding_sliver_before_an_output_time(ts):
    """Steps pinned at dt_min = 0.01 sum to 0.09999999999999999, one float short of 0.1: the sliver left was too
    small to halve and the solve raised DT_UNDERFLOW. The last step now absorbs it; the result is Euler–Maruyama
    written out on the same Brownian path, two half steps per accepted step."""
    sde = GBM("ito", mu=-400.0, sigma=0.1)
    bm = BrownianPath(0.0, 0.1, (3, 1), dtype=torch.float64, entropy=0)
    with pytest.warns(UserWarning, match="dt_min"):
        sol = solve_sde(sde, Y0, ts, bm=bm, method="euler", adaptive=True, dt=0.01, dt_min=0.01, rtol=1e-6, atol=1e-6)
    starts, dts = sol.heuristics["t"].tolist(), sol.heuristics["dt"].tolist()
    assert len(dts) == 10 and min(dts) > 0.0099 and starts[-1] + dts[-1] == pytest.approx(0.1, abs=1e-15)
    y = Y0
    with torch.no_grad():
        for t, h in zip(starts, dts):
            for a, b in ((t, t + h / 2), (t + h / 2, t + h)):
                y = y * (1 + sde.mu * (b - a) + sde.sigma * bm(a, b))
    torch.testing.assert_close(sol.ys[-1].detach(), y, rtol=1e-12, atol=1e-14)
