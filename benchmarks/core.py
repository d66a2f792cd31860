"""ODE core benchmark: nde vs torchdiffeq (and torchode when installed).

Problems:
  * ``mlp``: dy/dt = Linear(d,64)·tanh·Linear(64,d), batch B, dopri5 at rtol=atol=1e-6 on [0, 1],
    float32; forward, and forward+backward of mean(y(1)²) in every gradient mode.
  * ``sweep``: the same for dims 2–64 and batch 1–4096 (forward and direct forward+backward).
  * ``vdp``: a batch of Van der Pol oscillators with mixed stiffness μ, per-sample vs shared steps.
  * ``overhead``: wall time ÷ (NFE × one field call); ``floor``: the NFE field calls alone, chained by
    one add each, so torchdiffeq / floor (``max_speedup_*``) bounds what any solver could gain; and dopri5
    written out by hand (the method's arithmetic and nothing else), which bounds what nde could gain
    without dropping what the method itself needs.

Run: ``python -m benchmarks.core [--device cpu|cuda] [--quick]``.
Reports medians of warm, round-robin repeats; NFE; saved-tensor bytes (and CUDA peak memory).
"""
from __future__ import annotations

import importlib.util
import itertools
import time

import torch

import nde
from nde._integrate import rms_norm_host
from nde._rk import Coefficients, _dense_terms, _sum_terms
from nde.controller import IController, initial_step_scalar
from nde.tableaus import DOPRI5
from benchmarks._common import cuda_peak_bytes, parse_args, saved_tensor_bytes, time_calls, write_results

HAVE_TDQ = importlib.util.find_spec("torchdiffeq") is not None
HAVE_TORCHODE = importlib.util.find_spec("torchode") is not None


class MLPField(torch.nn.Module):
    def __init__(self, dim: int = 2, hidden: int = 64):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, dim))
        self.nfe = 0

    def forward(self, t, y):
        self.nfe += 1
        return self.net(y)


def _cases(field, y0, t, tol):
    """name -> (forward fn returning y(1), gradient-mode label)."""
    cases = {
        "nde odeint (direct)": lambda: nde.odeint(field, y0, t, rtol=tol, atol=tol, method="dopri5")[-1],
        "nde solve_ode (direct)": lambda: nde.solve_ode(field, y0, t, rtol=tol, atol=tol, heuristics=False,
                                                        dense=False, controller=nde.IController()).ys[-1],
        "nde discrete": lambda: nde.odeint(field, y0, t, rtol=tol, atol=tol, adjoint="discrete")[-1],
        "nde backsolve (seminorm)": lambda: nde.odeint_adjoint(
            field, y0, t, rtol=tol, atol=tol, adjoint_options=dict(norm="seminorm"))[-1],
    }
    if HAVE_TDQ:
        import torchdiffeq
        cases["torchdiffeq odeint (direct)"] = lambda: torchdiffeq.odeint(field, y0, t, rtol=tol, atol=tol)[-1]
        cases["torchdiffeq odeint_adjoint (seminorm)"] = lambda: torchdiffeq.odeint_adjoint(
            field, y0, t, rtol=tol, atol=tol, adjoint_options=dict(norm="seminorm"))[-1]
    if HAVE_TORCHODE:
        cases.update(_torchode_cases(field, y0, t, tol))
    return cases


def _torchode_cases(field, y0, t, tol):
    import torchode as to
    term = to.ODETerm(field)
    step = to.Dopri5(term=term)
    ctrl = to.IntegralController(atol=tol, rtol=tol, term=term)
    direct = to.AutoDiffAdjoint(step, ctrl)
    joint = to.JointBacksolveAdjoint(term, step, ctrl)
    t_eval = t.unsqueeze(0).repeat(y0.shape[0], 1)

    def solve(solver):
        return solver.solve(to.InitialValueProblem(y0=y0, t_eval=t_eval)).ys[:, -1]

    return {"torchode AutoDiff (direct, per-sample)": lambda: solve(direct),
            "torchode JointBacksolve": lambda: solve(joint)}


def _fwd_bwd(fn, params):
    def run():
        for p in params:
            p.grad = None
        fn().pow(2).mean().backward()
    return run


def bench_mlp(device, dim, batch, tol, repeats, modes=None):
    torch.manual_seed(0)
    field = MLPField(dim).to(device)
    y0 = torch.randn(batch, dim, device=device)
    t = torch.tensor([0.0, 1.0], device=device)
    cases = _cases(field, y0, t, tol)
    if modes is not None:
        cases = {k: v for k, v in cases.items() if k in modes}
    params = list(field.parameters())
    rows = []
    with torch.no_grad():
        fwd = time_calls(cases, device, repeats=repeats)
    both = time_calls({k: _fwd_bwd(v, params) for k, v in cases.items()}, device, repeats=repeats)
    for name, fn in cases.items():
        field.nfe = 0
        with torch.no_grad():
            fn()
        nfe_fwd = field.nfe
        field.nfe = 0
        _fwd_bwd(fn, params)()
        nfe_total = field.nfe
        rows.append({"problem": f"mlp d={dim} B={batch}", "case": name, "fwd_ms": fwd[name]["median_ms"],
                     "fwd_bwd_ms": both[name]["median_ms"], "nfe_fwd": nfe_fwd, "nfe_fwd_bwd": nfe_total,
                     "saved_bytes": saved_tensor_bytes(fn),
                     "cuda_peak_bytes": cuda_peak_bytes(_fwd_bwd(fn, params), device)})
    return rows


def _target_problem(device):
    """The MLP 2-64-2 field, batch 256, t = [0, 1], a 0-d time, and nde odeint's NFE at 1e-6."""
    torch.manual_seed(0)
    field = MLPField(2).to(device)
    y0 = torch.randn(256, 2, device=device)
    t = torch.tensor([0.0, 1.0], device=device)
    with torch.no_grad():
        nde.odeint(field, y0, t, rtol=1e-6, atol=1e-6)
    return field, y0, t, torch.tensor(0.0, device=device), field.nfe


class HandDopri5:
    """dopri5 written out by hand for one problem: torchdiffeq's algorithm (Hairer's initial step, the I
    controller min(10, max(0.2, 0.9·r^(−1/5))) that never shrinks after an accepted step, FSAL, the RMS error
    ratio ‖err / (atol + rtol·max(|y0|, |y1|))‖, the dense output at the last time) with nothing else: no
    input checks, no options, no step limit or failure handling, one host read per step. It bounds what nde
    could gain by removing everything that is not the method's own arithmetic (benchmark row "dopri5 by hand").

    ``__call__(t0, t1)`` returns y(t1) for the ``field`` and ``y0`` given at construction (floats t0 < t1).
    The nonzero tableau terms, stage sums, RMS norm, dense weights, initial step and I controller are nde's own
    helpers (the same tensor operations nde issues); the tests compare the result with torchdiffeq as well as
    with nde."""

    def __init__(self, field, y0: torch.Tensor, rtol: float, atol: float):
        self.field, self.y0, self.rtol, self.atol, self.tab = field, y0, rtol, atol, DOPRI5
        coeffs = Coefficients.build(DOPRI5, y0.dtype, y0.dtype, y0.device)
        self.rows, self.err = coeffs.a_terms, coeffs.err_terms
        self.atol_t = torch.tensor(atol, dtype=y0.dtype, device=y0.device)
        self.controller = IController()

    def _times(self, values: float | list[float]) -> torch.Tensor:
        """Times as a tensor on the state's device, built on the host (as nde does: no blocking copy)."""
        host = torch.tensor(values, dtype=self.y0.dtype)
        return host if self.y0.is_cpu else host.to(self.y0.device, non_blocking=True)

    def __call__(self, t0: float, t1: float) -> torch.Tensor:
        y, tab = self.y0, self.tab
        t0_t = self._times(t0)
        k1 = self.field(t0_t, y)
        with torch.no_grad():
            dt = initial_step_scalar(self.field, t0, t0_t, y, k1, tab.error_order, self.rtol, self.atol, rms_norm_host)
        t, abs_y = t0, y.abs()
        while True:
            times = self._times([t + c * dt for c in tab.c]).unbind(0)
            ks = [k1]
            for i, row in enumerate(self.rows):
                g = _sum_terms(y, ks, row, dt)
                ks.append(self.field(times[i + 1], g))
            with torch.no_grad():
                abs_g = g.abs()
                scale = torch.add(self.atol_t, torch.maximum(abs_y, abs_g), alpha=self.rtol)
                ratio = rms_norm_host(_sum_terms(None, ks, self.err, dt) / scale)
            if ratio <= 1.0:
                if t + dt >= t1:
                    return _sum_terms(y, ks, _dense_terms(tab.dense, (t1 - t) / dt), dt)
                y, k1, abs_y, t = g, ks[-1], abs_g, t + dt
            dt *= self.controller.factor(ratio, 1.0, ratio <= 1.0, tab.error_order + 1)


def solver_overhead(device, repeats):
    """Wall time ÷ (NFE × time of one func call) for the target problem (nde odeint, forward), and for
    torchdiffeq and :class:`HandDopri5` (the part of the overhead that is the method's own arithmetic).

    One func call is timed as NFE consecutive calls ÷ NFE: warm, as the calls inside a solve are. (A
    single call timed between solves runs on caches the solve has just filled with its own data, and
    came out 1.6x slower, which made the overhead look smaller than it is.)"""
    field, y0, t, t0, nfe = _target_problem(device)
    by_hand = HandDopri5(field, y0, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        calls = {"func": lambda: [field(t0, y0) for _ in range(nfe)],
                 "nde": lambda: nde.odeint(field, y0, t, rtol=1e-6, atol=1e-6),
                 "dopri5 by hand": lambda: by_hand(0.0, 1.0)}
        if HAVE_TDQ:
            import torchdiffeq
            calls["torchdiffeq"] = lambda: torchdiffeq.odeint(field, y0, t, rtol=1e-6, atol=1e-6)
        times = time_calls(calls, device, repeats=repeats * 5)
    func_ms = times["func"]["median_ms"] / nfe
    rows = []
    for name in [k for k in calls if k != "func"]:
        rows.append({"problem": "overhead mlp d=2 B=256", "case": name, "fwd_ms": times[name]["median_ms"],
                     "nfe_fwd": nfe, "func_ms": func_ms, "overhead": times[name]["median_ms"] / (nfe * func_ms)})
    return rows


def function_floor(device, repeats):
    """What any solver must spend on the target problem: its NFE evaluations of the field, chained by
    one fused add each (y <- y0 + 0.05 f(y)), forward and forward+backward, timed round-robin with
    torchdiffeq's solve; torchdiffeq / floor bounds the speed-up any solver could show. Also dopri5 by hand
    (:class:`HandDopri5`), the bound for a solver that does nothing but the method's own arithmetic."""
    field, y0, t, t0, nfe = _target_problem(device)

    def floor():
        y = y0
        for _ in range(nfe):
            y = torch.add(y0, field(t0, y), alpha=0.05)
        return y

    by_hand = HandDopri5(field, y0, rtol=1e-6, atol=1e-6)
    cases = {"floor": floor, "by hand": lambda: by_hand(0.0, 1.0)}
    if HAVE_TDQ:
        import torchdiffeq
        cases["torchdiffeq"] = lambda: torchdiffeq.odeint(field, y0, t, rtol=1e-6, atol=1e-6)[-1]
    params = list(field.parameters())
    with torch.no_grad():
        fwd = time_calls(cases, device, repeats=repeats * 3)
    both = time_calls({k: _fwd_bwd(v, params) for k, v in cases.items()}, device, repeats=repeats * 3)
    labels = {"floor": f"{nfe} chained field calls", "by hand": "dopri5 by hand (the method's arithmetic only)"}
    rows = []
    for name, label in labels.items():
        row = {"problem": "floor mlp d=2 B=256", "case": label, "fwd_ms": fwd[name]["median_ms"],
               "fwd_bwd_ms": both[name]["median_ms"], "nfe_fwd": nfe, "nfe_fwd_bwd": nfe}
        if HAVE_TDQ:
            row["max_speedup_fwd"] = fwd["torchdiffeq"]["median_ms"] / fwd[name]["median_ms"]
            row["max_speedup_fwd_bwd"] = both["torchdiffeq"]["median_ms"] / both[name]["median_ms"]
        rows.append(row)
    return rows


def nfe_by_method(device, methods=("bosh3", "dopri5", "dopri8", "fehlberg2", "adaptive_heun"),
                  tols=(1e-4, 1e-7), outputs=(2, 20)):
    """Function evaluations of nde.odeint and torchdiffeq.odeint for each adaptive method both have, at the
    same tolerances, on the target problem's field in float64 (batch 256, t = ``outputs`` times in [0, 1]),
    and each one's largest error over the outputs against torchdiffeq's dopri8 at 1e-12 landing on every
    output (``step_t``: no interpolation)."""
    if not HAVE_TDQ:
        return []
    import torchdiffeq
    torch.manual_seed(0)
    field = MLPField(2).to(device).double()
    y0 = torch.randn(256, 2, device=device, dtype=torch.float64)
    rows = []
    with torch.no_grad():
        for n_out, tol, method in itertools.product(outputs, tols, methods):
            t = torch.linspace(0.0, 1.0, n_out, device=device, dtype=torch.float64)
            ref = torchdiffeq.odeint(field, y0, t, rtol=1e-12, atol=1e-12, method="dopri8", options={"step_t": t})
            field.nfe = 0
            ours = nde.odeint(field, y0, t, rtol=tol, atol=tol, method=method)
            nfe, field.nfe = field.nfe, 0
            theirs = torchdiffeq.odeint(field, y0, t, rtol=tol, atol=tol, method=method)
            rows.append({"problem": f"nfe mlp d=2 B=256 float64 {n_out} outputs tol={tol:g}", "case": method,
                         "nfe_fwd": nfe, "nfe_torchdiffeq": field.nfe, "err_nde": (ours - ref).abs().max().item(),
                         "err_torchdiffeq": (theirs - ref).abs().max().item()})
    return rows


def vdp_field(t, y):
    """Van der Pol with μ carried as a constant third component: rows are independent problems."""
    x, v, mu = y[..., :1], y[..., 1:2], y[..., 2:]
    return torch.cat([v, mu * (1 - x * x) * v - x, torch.zeros_like(mu)], dim=-1)


def bench_vdp(device, batch, repeats):
    """Per-sample vs shared steps on Van der Pol with μ log-spaced in [0.1, 20]."""
    mu = torch.logspace(-1, 1.3, batch, device=device, dtype=torch.float64)
    y0 = torch.cat([torch.full((batch, 1), 2.0, device=device, dtype=torch.float64),
                    torch.zeros(batch, 1, device=device, dtype=torch.float64), mu.unsqueeze(1)], 1)
    t = torch.tensor([0.0, 10.0], device=device, dtype=torch.float64)
    rows_evaluated = [0]

    def counted(t, y):
        rows_evaluated[0] += y.shape[0]
        return vdp_field(t, y)

    cases = {"nde shared": lambda: nde.solve_ode(counted, y0, t, rtol=1e-6, atol=1e-6, heuristics=False),
             "nde per-sample": lambda: nde.solve_ode(counted, y0, t, rtol=1e-6, atol=1e-6, per_sample=True,
                                                     heuristics=False)}
    if HAVE_TDQ:
        import torchdiffeq
        cases["torchdiffeq (shared)"] = lambda: torchdiffeq.odeint(counted, y0, t, rtol=1e-6, atol=1e-6)
    if HAVE_TORCHODE:
        import torchode as to
        term = to.ODETerm(counted)
        solver = to.AutoDiffAdjoint(to.Dopri5(term=term), to.IntegralController(atol=1e-6, rtol=1e-6, term=term))
        t_eval = t.unsqueeze(0).repeat(batch, 1)
        cases["torchode (per-sample)"] = lambda: solver.solve(to.InitialValueProblem(y0=y0, t_eval=t_eval))
    with torch.no_grad():
        times = time_calls(cases, device, repeats=repeats, warmup=1)
        rows = []
        for name, fn in cases.items():
            rows_evaluated[0] = 0
            fn()
            rows.append({"problem": f"vdp B={batch} mu=0.1..20", "case": name,
                         "fwd_ms": times[name]["median_ms"], "row_evaluations": rows_evaluated[0]})
    return rows


def main(argv=None):
    args = parse_args(__doc__.splitlines()[0], argv)
    repeats = args.repeats or (3 if args.quick else 30)
    torch.set_num_threads(1 if args.device == "cpu" else torch.get_num_threads())
    started = time.time()
    rows = bench_mlp(args.device, 2, 256, 1e-6, repeats)
    rows += solver_overhead(args.device, repeats)
    rows += function_floor(args.device, repeats)
    sweep = [(2, 1), (2, 4096), (16, 256), (64, 256), (64, 4096)] if not args.quick else [(64, 256)]
    modes = {"nde odeint (direct)", "torchdiffeq odeint (direct)"}
    for dim, batch in sweep:
        rows += bench_mlp(args.device, dim, batch, 1e-6, max(3, repeats // 2), modes=modes)
    rows += bench_vdp(args.device, 16 if args.quick else 64, max(3, repeats // 3))
    rows += nfe_by_method(args.device)
    notes = (f"dopri5, rtol=atol=1e-6, float32 (VdP float64), median of {repeats} warm round-robin repeats "
             "(each a fresh random order of the cases); overhead rows 5x the repeats; the other sizes (d, B) "
             "half the repeats and the VdP rows a third (at least 3 each); "
             f"torch threads={torch.get_num_threads()}; total {time.time() - started:.0f} s. floor: the NFE field "
             "calls alone chained by one add each, and dopri5 by hand (benchmarks.core.HandDopri5: the method's "
             "arithmetic only); 3x the repeats, round-robin with torchdiffeq; max_speedup = torchdiffeq / that "
             "row. nfe rows: each adaptive method both libraries have, NFE of one solve each.")
    path = write_results("core", args.device, rows, notes)
    print(path.read_text())


if __name__ == "__main__":
    main()
