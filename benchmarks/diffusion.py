"""Diffusion samplers and AdjointDPM on analytic Gaussian mixtures.

Part 1: error of every sampler against the adaptive PF-ODE reference (nde dopri8, rtol=atol=1e-9) vs NFE
(5, 6, 8, 10, 12, 15, 20, 25) on random Gaussian mixtures of several dimensions (VP linear schedule,
logSNR steps, t from 1 to 1e-3, float64). Metric: MSE ||x - x_ref||^2 / D over the batch, from the same x_T.
DPM-Solver-v3 uses empirical model statistics estimated here (N grid intervals, K data samples).

Part 2: AdjointDPM (backsolve) vs backprop (direct) vs the discrete adjoint as the number of RK4 steps
grows: saved-tensor bytes, median forward+backward time, and gradient error against backprop through
400 RK4 steps, on an exact ring mixture plus a small MLP (gradients w.r.t. x_T and the MLP weights).

Run: python -m benchmarks.diffusion [--device cpu|cuda] [--quick]
"""
from __future__ import annotations

import time

import torch

from benchmarks._common import parse_args, saved_tensor_bytes, time_calls, write_results
from nde.diffusion import (DPMSolverV3, GaussianMixtureNoisePredictor, TimeMLP, VPLinear, adjoint_sample, ddim,
                           dpm_solver_pp, edm_sampler, estimate_statistics, probability_flow_reference,
                           random_mixture, ring_mixture, unipc)

NFES = (5, 6, 8, 10, 12, 15, 20, 25)


def samplers(stats, schedule):
    """name -> sampler(model, x_T, nfe); every entry spends exactly ``nfe`` model evaluations (Heun: nfe // 2 steps)."""
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


def main(argv=None):
    args = parse_args(__doc__.splitlines()[0], argv)
    torch.set_num_threads(1) if args.device == "cpu" else None
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
             f"lower_order_final. Part 'adjoint': RK4 on the lambda-form PF-ODE, batch 16, gradient w.r.t. "
             f"x_T and first-layer weights; rel_err vs "
             f"backprop through 400 RK4 steps; saved_bytes = autograd saved tensors (the discrete adjoint keeps "
             f"O(steps) checkpoints outside them, so it is not listed); torch threads = 1 on CPU.")
    path = write_results("diffusion", args.device, rows, notes)
    print(path.read_text())


if __name__ == "__main__":
    main()
