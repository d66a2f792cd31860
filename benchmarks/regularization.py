"""Reproduce solver-heuristic regularisation (Pal et al. 2021, 2023) on a neural-ODE digit classifier.

Task: scikit-learn's bundled 8×8 digits (1797 images, offline), 64-d state, the papers' MNIST model
``f(x, t) = tanh(W2 [tanh(W1 [x; t] + b1); t] + b2)`` (hidden 100) on t ∈ [0, 1], linear head 64 → 10,
cross-entropy, Adam. Every variant trains with backprop through the solver (tsit5, as the papers).

Variants (λ schedules as in the papers' code, see shared/research/regularization.md):
  vanilla; steer (T ~ U[0.5, 1.5]); rnode (kinetic + Jacobian, 0.01 each);
  ernode (global mean EEst·dt, λ 100 → 10); srnode (max |ρ|/S, λ 0.1);
  local_unbiased / local_biased (EEst·dt at one sampled time, Hairer dt, λ 2.5 → 1);
  nde_density (global Σ EEst^(1/5), λ 0.05); nde_local_density (importance-weighted, 2 samples,
  solver dt, λ 0.05); nde_local_per_sample (per-sample norms, λ 2.5 → 1);
  nde_adaptive (local density, λ by dual ascent holding testing NFE at its initial level).

Metrics: test accuracy, testing NFE (unregularised solve of the whole test set at the training
tolerance), prediction time (median of 5), training time. Writes results/regularization_<device>.{json,md}
and a Pareto plot (testing NFE vs accuracy over λ) to results/regularization_pareto.png.

Run: ``python -m benchmarks.regularization [--quick] [--steps N] [--seeds 0 1 2]``.
"""
from __future__ import annotations

import json
import math
import random
import statistics
import time
from pathlib import Path

import torch

import nde
from nde import regularize as R
from benchmarks._common import RESULTS_DIR, parse_args, write_results


def load_digits(device, dtype):
    from sklearn.datasets import load_digits as sk_digits
    data = sk_digits()
    x = torch.tensor(data.data, dtype=dtype, device=device) / 16.0
    y = torch.tensor(data.target, device=device)
    g = torch.Generator().manual_seed(1234)
    perm = torch.randperm(len(y), generator=g).to(device)
    n_train = 1437
    return (x[perm[:n_train]], y[perm[:n_train]]), (x[perm[n_train:]], y[perm[n_train:]])


class PaperField(torch.nn.Module):
    """f(x, t) = tanh(W2 [tanh(W1 [x; t] + b1); t] + b2) (Pal et al. 2021, MNIST model)."""

    def __init__(self, dim=64, hidden=100):
        super().__init__()
        self.l1 = torch.nn.Linear(dim + 1, hidden)
        self.l2 = torch.nn.Linear(hidden + 1, dim)

    def forward(self, t, x):
        tt = t.expand(x.shape[0], 1).to(x.dtype)
        h = torch.tanh(self.l1(torch.cat([x, tt], 1)))
        return torch.tanh(self.l2(torch.cat([h, tt], 1)))


def exp_anneal(start, end, step, total):
    """λ(s) = λ0·exp(−s·ln(λ0/λ1)/total), the papers' ExponentialDecay."""
    return start * math.exp(-step * math.log(start / end) / total)


VARIANTS = {
    "vanilla": dict(),
    "steer": dict(steer=0.5),
    "rnode": dict(reg=lambda: R.RNODE(0.01, 0.01), lam=(1.0, 1.0)),
    "ernode": dict(reg=lambda: R.ErrorEstimate("mean"), lam=(100.0, 10.0)),
    "srnode": dict(reg=lambda: R.StiffnessEstimate("abs", "max"), lam=(0.1, 0.1)),
    "local_unbiased": dict(reg=lambda: R.LocalErrorEstimate("unbiased"), lam=(2.5, 1.0)),
    "local_biased": dict(reg=lambda: R.LocalErrorEstimate("biased"), lam=(2.5, 1.0)),
    "nde_density": dict(reg=lambda: R.StepDensity(), lam=(0.05, 0.05)),
    "nde_local_density": dict(reg=lambda: R.LocalErrorEstimate("mixture", 2, "density", "solver", None),
                              lam=(0.05, 0.05)),
    "nde_local_per_sample": dict(reg=lambda: R.LocalErrorEstimate("unbiased", norm="per_sample"), lam=(2.5, 1.0)),
    "nde_adaptive": dict(reg=lambda: R.LocalErrorEstimate("mixture", 2, "density", "solver", None),
                         lam=(0.05, 0.05), adaptive=True),
}


def testing_nfe(field, x, tol):
    with torch.no_grad():
        sol = nde.solve_ode(field, x, torch.tensor([0.0, 1.0], dtype=x.dtype, device=x.device), method="tsit5",
                            rtol=tol, atol=tol, heuristics=False, dense=False)
    return int(sol.stats["nfe"]), sol.ys[-1]


def run(variant: str, seed: int, args, data, lam_scale: float = 1.0) -> dict:
    spec = VARIANTS[variant]
    (xtr, ytr), (xte, yte) = data
    torch.manual_seed(seed)
    rng = random.Random(seed)
    field, head = PaperField().to(xtr), torch.nn.Linear(64, 10).to(xtr)
    opt = torch.optim.Adam(list(field.parameters()) + list(head.parameters()), lr=args.lr)
    reg = spec["reg"]() if "reg" in spec else None
    lam0, lam1 = spec.get("lam", (0.0, 0.0))
    probe = xtr[:256]  # the adaptive coefficient holds this batch's NFE at its initial level
    adaptive = R.AdaptiveCoefficient(target_nfe=testing_nfe(field, probe, args.tol)[0], value=lam0 * lam_scale) \
        if spec.get("adaptive") else None
    t_span = torch.tensor([0.0, 1.0], dtype=xtr.dtype, device=xtr.device)
    started = time.perf_counter()
    for step in range(args.steps):
        idx = torch.randint(0, len(ytr), (args.batch,), device=xtr.device)
        t = R.steer_end_time(t_span, spec["steer"]) if "steer" in spec else t_span
        sol = nde.solve_ode(field, xtr[idx], t, method="tsit5", rtol=args.tol, atol=args.tol, regularize=reg,
                            generator=rng, heuristics=False, dense=False)
        loss = torch.nn.functional.cross_entropy(head(sol.ys[-1]), ytr[idx])
        if reg is not None:
            lam = adaptive.value if adaptive else lam_scale * exp_anneal(lam0, lam1, step, args.steps)
            loss = loss + lam * sol.regularization
        opt.zero_grad()
        loss.backward()
        opt.step()
        if adaptive is not None and step % 10 == 9:
            adaptive.update(testing_nfe(field, probe, args.tol)[0])
    train_s = time.perf_counter() - started
    nfe, z = testing_nfe(field, xte, args.tol)
    with torch.no_grad():
        acc = (head(z).argmax(1) == yte).float().mean().item()
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            head(nde.odeint(field, xte, t_span, rtol=args.tol, atol=args.tol, method="tsit5")[-1])
            times.append(time.perf_counter() - t0)
    return {"variant": variant, "seed": seed, "lam_scale": lam_scale, "test_acc": 100 * acc, "testing_nfe": nfe,
            "predict_ms": 1e3 * statistics.median(times), "train_s": train_s}


def summarise(rows: list[dict]) -> list[dict]:
    """Mean ± std over seeds per variant (λ scale 1), with ratios to vanilla."""
    out, base = [], None
    for variant in VARIANTS:
        sel = [r for r in rows if r["variant"] == variant and r["lam_scale"] == 1.0]
        if not sel:
            continue
        agg = {"variant": variant, "seeds": len(sel)}
        for key in ("test_acc", "testing_nfe", "predict_ms", "train_s"):
            vals = [r[key] for r in sel]
            agg[key] = statistics.mean(vals)
            agg[key + "_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
        if variant == "vanilla":
            base = agg
        if base is not None:
            agg["nfe_ratio"] = agg["testing_nfe"] / base["testing_nfe"]
            agg["acc_change_pts"] = agg["test_acc"] - base["test_acc"]
            agg["predict_speedup"] = base["predict_ms"] / agg["predict_ms"]
            agg["train_time_ratio"] = agg["train_s"] / base["train_s"]
        out.append(agg)
    return out


def pareto_plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for variant in VARIANTS:
        sel = [r for r in rows if r["variant"] == variant]
        if sel:
            ax.scatter([r["testing_nfe"] for r in sel], [r["test_acc"] for r in sel], label=variant, s=18)
    ax.set_xlabel("testing NFE (lower is cheaper)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Neural ODE on digits: cost vs accuracy over λ and seeds")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    def extra(p):
        p.add_argument("--steps", type=int, default=300)
        p.add_argument("--batch", type=int, default=128)
        p.add_argument("--lr", type=float, default=1e-2)
        p.add_argument("--tol", type=float, default=1e-6)
        p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
        p.add_argument("--variants", nargs="+", default=list(VARIANTS))
        p.add_argument("--sweep", nargs="*", default=["local_unbiased", "nde_local_density", "ernode"],
                       help="variants whose λ is also run at 0.3x and 3x (seed 0) for the Pareto plot")
    args = parse_args(__doc__.splitlines()[0], argv, extra)
    if args.quick:
        args.steps, args.seeds, args.sweep = 20, [0], []
    torch.set_num_threads(1 if args.device == "cpu" else torch.get_num_threads())
    data = load_digits(args.device, torch.float32)
    rows = []
    jobs = [(v, seed, 1.0) for seed in args.seeds for v in args.variants]
    jobs += [(v, args.seeds[0], scale) for v in args.sweep for scale in (0.3, 3.0)]
    for done, (variant, seed, scale) in enumerate(jobs, 1):
        rows.append(run(variant, seed, args, data, lam_scale=scale))
        print(rows[-1], flush=True)
        notes = (f"digits neural ODE, tsit5 rtol=atol={args.tol}, float32, {args.steps} Adam steps (lr {args.lr}), "
                 f"batch {args.batch}, seeds {args.seeds}; mean over seeds; ratios vs vanilla; {done}/{len(jobs)} "
                 "runs done. Per-run rows (and any λ sweep) are in the _runs.json file.")
        path = write_results("regularization", args.device, summarise(rows), notes)
        (RESULTS_DIR / f"regularization_{args.device}_runs.json").write_text(json.dumps(rows, indent=1))
        if not args.quick:
            pareto_plot(rows, RESULTS_DIR / "regularization_pareto.png")
    print(path.read_text())


if __name__ == "__main__":
    main()
