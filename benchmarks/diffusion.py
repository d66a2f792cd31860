"""Diffusion samplers and AdjointDPM on analytic Gaussian mixtures.

Part 1: error of every sampler against the adaptive PF-ODE reference (nde dopri8, rtol=atol=1e-9) vs NFE
(5, 6, 8, 10, 12, 15, 20, 25) on random Gaussian mixtures of several dimensions (VP linear schedule,
logSNR steps, t from 1 to 1e-3, float64). Metric: MSE ||x - x_ref||^2 / D over the batch, from the same x_T.
DPM-Solver-v3 uses empirical model statistics estimated here (N grid intervals, K data samples).

Part 2: AdjointDPM (backsolve) vs backprop (direct) vs the discrete adjoint as the number of RK4 steps
grows: saved-tensor bytes, median forward+backward time, and gradient error against backprop through
400 RK4 steps, on an exact ring mixture plus a small MLP (gradients w.r.t. x_T and the MLP weights).

Part 3 (``--stochastic``, written to diffusion_stochastic_<device>): stochastic samplers vs NFE on an 8-mode
ring (D = 2) and a random 6-component mixture (D = 8), exact scores, VP linear, logSNR steps. Stochastic samples
have no pointwise reference, so the metrics are distributional: total variation between the mode masses of the
samples and of 200k exact samples (samples assigned to the most responsible component), and the unbiased MMD^2
(Gaussian kernel, bandwidth = median distance between exact samples of the same mode) to 4000 fresh exact
samples; a row "exact samples" gives the Monte Carlo floor of both. Samplers: SDE-DPM-Solver++(1) (closed form),
the reverse SDE on the nde SDE core (euler, heun, srk; fixed and adaptive steps), EDM Eq. 6 on the core (heun,
churn 1), EDM Algorithm 2 (s_churn equivalent to churn 1 on logSNR steps), both also on EDM's own step spacing,
and DPM-Solver++(3M) on the PF-ODE for context. NFE counts every model call (the SDE core makes one extra call to
validate the SDE). A timing row compares nde.solve_sde with torchsde.sdeint on the same SDE object.

Run: python -m benchmarks.diffusion [--device cpu|cuda] [--quick] [--stochastic]
"""
from __future__ import annotations

import time

import torch

from benchmarks._common import parse_args, saved_tensor_bytes, time_calls, write_results
from nde.diffusion import (DPMSolverV3, GaussianMixtureNoisePredictor, ReverseSDE, SamplingClock, TimeMLP, VPLinear,
                           adjoint_sample, ddim, dpm_solver_pp, edm_churn_equivalent, edm_sampler, edm_sde,
                           estimate_statistics, probability_flow_reference, random_mixture, reverse_sde,
                           ring_mixture, unipc)
from nde.sde import BrownianPath, solve_sde

NFES = (5, 6, 8, 10, 12, 15, 20, 25)


def samplers(stats, schedule):
    """name -> sampler(model, x_T, nfe); every entry spends exactly ``nfe`` model evaluations, except EDM-Heun:
    nfe // 2 steps of two evaluations, one evaluation fewer at odd ``nfe``."""
    def v3(nfe, **options):
        return lambda m, x: DPMSolverV3(stats, schedule, nfe).sample(m, x, **options)
    return {
        "DDIM": lambda m, x, n: ddim(m, x, schedule, n),
        "DPM++2M": lambda m, x, n: dpm_solver_pp(m, x, schedule, n, order=2),
        "DPM++3M": lambda m, x, n: dpm_solver_pp(m, x, schedule, n, order=3),
        "UniPC-bh1": lambda m, x, n: unipc(m, x, schedule, n, order=3, variant="bh1"),
        "UniPC-bh2": lambda m, x, n: unipc(m, x, schedule, n, order=3, variant="bh2"),
        "EDM-Heun": lambda m, x, n: edm_sampler(m, x, schedule, n // 2, skip_type="logSNR"),
        "v3-1": lambda m, x, n: v3(n, order=1, use_corrector=False)(m, x),
        "v3": lambda m, x, n: v3(n, order=3)(m, x),
        "v3-pseudo": lambda m, x, n: v3(n, order=3, predictor_pseudo=True, lower_order_final=False)(m, x),
    }


def error_vs_nfe(dims, n_grid, data_per_dim, batch, device):
    rows = []
    schedule = VPLinear()
    for dim in dims:
        gen = torch.Generator().manual_seed(dim)
        gmm = random_mixture(dim, 6, gen).to(device=device)
        model = GaussianMixtureNoisePredictor(gmm, schedule)
        x_T = torch.randn(batch, dim, generator=gen, dtype=torch.float64).to(device)
        ref = probability_flow_reference(model, x_T, schedule)
        start = time.perf_counter()
        n_data = max(2048, data_per_dim * dim)  # EMS noise is per dimension: more data in higher D
        stats = estimate_statistics(model, gmm.sample(n_data, gen), schedule, n_grid=n_grid, generator=gen,
                                    progress=False)
        ems_s = time.perf_counter() - start
        for name, sampler in samplers(stats, schedule).items():
            row = {"part": "error", "dim": dim, "sampler": name}
            for nfe in NFES:
                row[f"nfe{nfe}"] = (sampler(model, x_T, nfe) - ref).pow(2).mean().item()
            rows.append(row)
        rows.append({"part": "error", "dim": dim, "sampler": f"(EMS N={n_grid} K={n_data}: {ems_s:.0f} s)"})
    return rows


class PerturbedMixture(torch.nn.Module):
    """Exact ring-mixture eps plus 0.1 * a small MLP (the trainable part)."""

    def __init__(self, schedule):
        super().__init__()
        self.exact = GaussianMixtureNoisePredictor(ring_mixture(variance=0.05), schedule)
        self.net = TimeMLP(2, schedule, hidden=32, depth=2).double()

    def forward(self, x, t):
        return self.exact(x, t) + 0.1 * self.net(x, t)


def adjoint_vs_backprop(steps_list, batch, device, repeats):
    torch.manual_seed(0)
    schedule = VPLinear()
    model = PerturbedMixture(schedule).to(device)
    x_T = torch.randn(batch, 2, dtype=torch.float64, device=device)
    target = torch.tensor([3.0, 0.0], dtype=torch.float64, device=device)
    weight = model.net.body[0].weight

    def grads(gradient, steps):
        x = x_T.clone().requires_grad_(True)
        model.zero_grad()
        out = adjoint_sample(model, x, schedule, steps=steps, gradient=gradient, variable="lambda")
        (out - target).pow(2).sum().backward()
        return torch.cat([x.grad.flatten(), weight.grad.flatten()])

    fine = grads("direct", 400)
    rows = []
    for steps in steps_list:
        x = x_T.clone().requires_grad_(True)
        row = {"part": "adjoint", "rk4_steps": steps, "nfe": 4 * steps}
        for mode in ("backsolve", "discrete", "direct"):
            g = grads(mode, steps)
            row[f"{mode}_rel_err"] = ((g - fine).norm() / fine.norm()).item()
            if mode != "discrete":  # its per-step checkpoints live on the autograd ctx, invisible to the hooks
                row[f"{mode}_saved_bytes"] = saved_tensor_bytes(
                    lambda: adjoint_sample(model, x, schedule, steps=steps, gradient=mode, variable="lambda"))
        modes = ("backsolve", "discrete", "direct")
        timing = time_calls({mode: (lambda mode=mode: grads(mode, steps)) for mode in modes}, device,
                            repeats=repeats, warmup=1)
        for mode, stats in timing.items():
            row[f"{mode}_ms"] = stats["median_ms"]
        rows.append(row)
    return rows


STOCHASTIC_NFES = (10, 20, 40, 80, 160)


class CountingModel(torch.nn.Module):
    """Wraps a model and counts its calls (the NFE actually spent)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, x, t):
        self.calls += 1
        return self.model(x, t)


def stochastic_samplers(schedule):
    """name -> (sampler(model, x_T, nfe, generator), model evaluations per step)."""
    s_churn = 1.0 / edm_churn_equivalent(1.0, schedule)  # Algorithm 2 ~ Eq. 6 with churn 1 on logSNR steps
    return {
        "SDE-DPM-Solver++(1)": (lambda m, x, n, g: reverse_sde(m, x, schedule, n, generator=g), 1),
        "core euler": (lambda m, x, n, g: reverse_sde(m, x, schedule, n, method="euler", generator=g), 1),
        "core heun": (lambda m, x, n, g: reverse_sde(m, x, schedule, n, method="heun", generator=g), 2),
        "core srk": (lambda m, x, n, g: reverse_sde(m, x, schedule, n, method="srk", generator=g), 4),
        "core EDM Eq.6 heun c=1": (lambda m, x, n, g: edm_sde(m, x, schedule, n, churn=1.0, skip_type="logSNR",
                                                              generator=g), 2),
        f"EDM Alg.2 s_churn={s_churn:.2f}": (lambda m, x, n, g: edm_sampler(m, x, schedule, n, s_churn=s_churn,
                                                                            skip_type="logSNR", generator=g), 2),
        "core EDM Eq.6 heun c=1 (edm steps)": (lambda m, x, n, g: edm_sde(m, x, schedule, n, churn=1.0,
                                                                          skip_type="edm", generator=g), 2),
        f"EDM Alg.2 s_churn={s_churn:.2f} (edm steps)": (lambda m, x, n, g: edm_sampler(
            m, x, schedule, n, s_churn=s_churn, skip_type="edm", generator=g), 2),
        "DPM++3M (ODE)": (lambda m, x, n, g: dpm_solver_pp(m, x, schedule, n, order=3), 1),
    }


def mmd2(x, y, bandwidth):
    """Unbiased MMD^2 between samples x (n, D) and y (m, D) with a Gaussian kernel (Gretton et al. 2012)."""
    def mean_kernel(a, b, same):
        k = torch.exp(-torch.cdist(a, b).pow(2) / (2 * bandwidth**2))
        if same:
            return (k.sum() - k.diagonal().sum()) / (a.shape[0] * (a.shape[0] - 1))
        return k.mean()
    return (mean_kernel(x, x, True) + mean_kernel(y, y, True) - 2 * mean_kernel(x, y, False)).item()


def _within_mode_bandwidth(gmm, samples):
    """Median distance between samples of the same mode: a kernel scale that sees the shape of each mode."""
    labels = gmm.nearest_component(samples)
    dist = torch.cdist(samples, samples)
    same = (labels[:, None] == labels[None, :]) & ~torch.eye(samples.shape[0], dtype=torch.bool)
    return dist[same].median().item()


def stochastic_vs_nfe(problems, batch, nfes, tolerances, device):
    rows = []
    schedule = VPLinear()
    for dim, gmm in problems:
        gen = torch.Generator().manual_seed(100 + dim)
        gmm = gmm.to(device=device)
        model = CountingModel(GaussianMixtureNoisePredictor(gmm, schedule))
        n_modes = gmm.means.shape[0]
        masses = torch.bincount(gmm.nearest_component(gmm.sample(200_000, gen)), minlength=n_modes).double() / 200_000
        exact = gmm.sample(batch, gen)
        bandwidth = _within_mode_bandwidth(gmm, exact[:1000])

        def metrics(x):
            tv = 0.5 * (torch.bincount(gmm.nearest_component(x), minlength=n_modes).double() / x.shape[0]
                        - masses).abs().sum().item()
            return tv, mmd2(x, exact, bandwidth)

        floor = metrics(gmm.sample(batch, gen))
        rows.append({"part": "stochastic", "dim": dim, "sampler": "exact samples", "metric": "mode_tv",
                     **{f"nfe{n}": floor[0] for n in nfes}})
        rows.append({"part": "stochastic", "dim": dim, "sampler": "exact samples", "metric": "mmd2",
                     **{f"nfe{n}": floor[1] for n in nfes}})
        x_T = torch.randn(batch, dim, generator=gen, dtype=torch.float64).to(device)
        for name, (sampler, per_step) in stochastic_samplers(schedule).items():
            tv_row = {"part": "stochastic", "dim": dim, "sampler": name, "metric": "mode_tv"}
            mmd_row = {"part": "stochastic", "dim": dim, "sampler": name, "metric": "mmd2"}
            calls_row = {"part": "stochastic", "dim": dim, "sampler": name, "metric": "model_calls"}
            for nfe in nfes:
                model.calls = 0
                x = sampler(model, x_T, nfe // per_step, torch.Generator(device=device).manual_seed(nfe))
                tv_row[f"nfe{nfe}"], mmd_row[f"nfe{nfe}"] = metrics(x)
                calls_row[f"nfe{nfe}"] = model.calls
            rows += [tv_row, mmd_row, calls_row]
        for tol in tolerances:
            model.calls = 0
            x = reverse_sde(model, x_T, schedule, 10, method="heun", adaptive=True, rtol=tol, atol=tol,
                            generator=torch.Generator(device=device).manual_seed(1))
            tv, mmd = metrics(x)
            rows.append({"part": "stochastic-adaptive", "dim": dim, "sampler": "core heun adaptive", "tol": tol,
                         "model_calls": model.calls, "mode_tv": tv, "mmd2": mmd})
    return rows


def core_vs_torchsde_timing(batch, steps, device, repeats):
    """Same ReverseSDE object, same kind of Brownian path, Heun, fixed steps: nde.solve_sde vs torchsde.sdeint."""
    import torchsde
    schedule = VPLinear()
    model = GaussianMixtureNoisePredictor(ring_mixture().to(device=device), schedule)
    sde = ReverseSDE(model, schedule, (2,), SamplingClock(schedule), sde_type="stratonovich")
    y0 = torch.randn(batch, 2, dtype=torch.float64, device=device)
    dt = (1 + 1e-12) / steps

    def path():
        return BrownianPath(0.0, 1.0, (batch, 2), dtype=torch.float64, device=device, entropy=0)

    runs = {"nde.solve_sde": lambda: solve_sde(sde, y0, [0.0, 1.0], bm=path(), method="heun", dt=dt).ys[-1],
            "torchsde.sdeint": lambda: torchsde.sdeint(sde, y0, torch.tensor([0.0, 1.0], dtype=torch.float64,
                                                                             device=device),
                                                       bm=path(), method="heun", dt=dt)[-1]}
    gap = (runs["nde.solve_sde"]() - runs["torchsde.sdeint"]()).abs().max().item()
    timing = time_calls(runs, device, repeats=repeats, warmup=1)
    return [{"part": "timing", "sampler": name, "steps": steps, "batch": batch, "ms": stats["median_ms"],
             "max_abs_diff": gap} for name, stats in timing.items()]


def main_stochastic(args):
    if args.quick:
        problems, batch, nfes, tolerances, repeats = [(2, ring_mixture())], 1000, (10, 40), (1e-1,), 2
    else:
        problems = [(2, ring_mixture()), (8, random_mixture(8, 6, torch.Generator().manual_seed(8)))]
        batch, nfes, tolerances, repeats = 4000, STOCHASTIC_NFES, (1e-1, 3e-2, 1e-2), args.repeats or 5
    rows = stochastic_vs_nfe(problems, batch, nfes, tolerances, args.device)
    rows += core_vs_torchsde_timing(batch, 40, args.device, repeats)
    notes = (f"Part 'stochastic': distribution error vs NFE (model-call budget; steps = NFE // calls per step; the "
             f"row 'model_calls' has the calls actually made, incl. the SDE core's one validation call); VP linear, "
             f"logSNR steps (rows marked 'edm steps': EDM's rho^(1/7) spacing), t 1 -> 1e-3, float64, "
             f"batch {batch}, exact mixture scores. mode_tv = total variation between sample mode masses and those "
             f"of 200k exact samples; mmd2 = unbiased MMD^2 to {batch} fresh exact samples (Gaussian kernel, "
             f"bandwidth = median within-mode distance); 'exact samples' = Monte Carlo floor. One noise seed per "
             f"cell. Part 'stochastic-adaptive': heun with step doubling at rtol = atol = tol. Part 'timing': the "
             f"same ReverseSDE object, Heun, 40 steps, fresh BrownianPath per call (median ms); max_abs_diff "
             f"between the two libraries' samples on the same path. torch threads = 1 on CPU.")
    path = write_results("diffusion_stochastic", args.device, rows, notes)
    print(path.read_text())


def main(argv=None):
    args = parse_args(__doc__.splitlines()[0], argv, extra=lambda p: p.add_argument(
        "--stochastic", action="store_true", help="run only part 3 (stochastic samplers)"))
    torch.set_num_threads(1) if args.device == "cpu" else None
    if args.stochastic:
        return main_stochastic(args)
    if args.quick:
        dims, n_grid, data_per_dim, batch, steps_list, repeats = (2,), 100, 256, 100, (10, 20), 2
    else:
        dims, n_grid, data_per_dim, batch = (2, 8, 16), 300, 512, 500
        steps_list, repeats = (20, 40, 80, 160), args.repeats or 3
    rows = error_vs_nfe(dims, n_grid, data_per_dim, batch, args.device)
    rows += adjoint_vs_backprop(steps_list, 16, args.device, repeats)
    notes = (f"Part 'error': MSE to the adaptive reference per NFE; random 6-component GMMs, VP linear, logSNR steps, "
             f"t 1 -> 1e-3, float64, batch {batch}; EMS N={n_grid}, K=max(2048, {data_per_dim} D). "
             f"v3 = order 3 + corrector (true-order), v3-pseudo = pseudo-order predictor without "
             f"lower_order_final. EDM-Heun takes nfe // 2 steps of 2 calls (nfe - 1 calls at odd nfe). "
             f"Part 'adjoint': RK4 on the lambda-form PF-ODE, batch 16, gradient w.r.t. x_T and first-layer weights; "
             f"rel_err vs "
             f"backprop through 400 RK4 steps; saved_bytes = autograd saved tensors (the discrete adjoint keeps "
             f"O(steps) checkpoints outside them, so it is not listed); torch threads = 1 on CPU.")
    path = write_results("diffusion", args.device, rows, notes)
    print(path.read_text())


if __name__ == "__main__":
    main()
