"""Reproduce solver-heuristic regularisation (Pal et al. 2021, 2023) on a time-series task.

Task ``spiral`` (default): the cubic spiral of Chen et al. (2018) and TayNODE, ``dz/dt = A z³`` with
``A = [[-0.1, 2.0], [-2.0, -0.1]]``, ``z(0) = (2, 0)``, t ∈ [0, 25]. The data are sub-windows of that
trajectory (like the papers' PhysioNet samples and Chen's ``ode_demo`` batches): every window starts at a
random time, is observed at the same irregular offsets ``τ_0 = 0 < τ_1 < … < τ_{K−1} ≤ Δ`` (drawn once),
and training windows carry Gaussian noise. The model is the papers' spiral model
``f(z) = W2 tanh(W1 z³ + b1) + b2`` (hidden 50; Pal et al.'s spiral-SDE drift, Chen's demo), integrated
from each window's first (noisy) observation; loss = MSE of the predicted trajectory at the observation
times. Test loss = MSE against the noise-free truth on held-out windows started from their true state.

Task ``latent``: a small latent ODE on the same windows: a GRU recognition network read backwards over
the noisy observations (with the time gaps as input, Pal et al.'s "GRU-like" PhysioNet encoder) gives
``q(z0)``; a 4-d latent ODE (MLP 4→32→32→4, tanh) is decoded linearly; loss = negative ELBO (Gaussian
likelihood, σ = 0.05). Only the latent ODE is regularised and counted.

Every variant trains with backprop through tsit5 (as the papers' discrete sensitivities), float32 by default
(``--dtype float64`` for the paper's local variants, whose Hairer-step error is partly round-off in float32).
Variants and λ (chosen for this task's scale, see ``docs/regularization.md``): vanilla; steer (every
output time t_i drawn from U[t_i ± min(gaps)/2], Pal et al.'s PhysioNet STEER); rnode; ernode (mean
EEst·dt, annealed 10:1 as the paper); srnode (max |ρ|/S); local_unbiased / local_biased (annealed 2.5:1
as the paper); nde_density; nde_local_density; nde_local_per_sample; nde_adaptive (dual ascent on a
target testing NFE = ``--target-ratio`` × the NFE of the true field on the probe windows).

Metrics: test MSE (and its change vs vanilla in %), testing NFE (unregularised tsit5 solve of all test
windows in one batch at the training tolerance), prediction time (median of ``--repeats`` warm solves),
training time. Writes ``results/regularization_timeseries[_<task>]_<device>.{json,md}``, the per-run rows in
``..._runs.json`` and a Pareto plot (testing NFE vs test MSE over λ) ``..._pareto.png``.

Run: ``python -m benchmarks.regularization_timeseries [--quick] [--task spiral|latent] [--steps N]
[--seeds 0 1 2]``.
"""
from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import nde
from nde import regularize as R
from benchmarks._common import parse_args, results_path, scatter_variants, summarise_variants, time_calls, write_results
from benchmarks.regularization import VARIANTS as DIGITS_VARIANTS, exp_anneal

SPIRAL_A = ((-0.1, 2.0), (-2.0, -0.1))

# λ (start, end) per variant for this task (regulariser constructors are the digits benchmark's).
# Chosen so that λ·R at a converged vanilla model is about half the final task loss (~3e-3), then
# checked by a one-seed sweep over ×0.1, ×1, ×10 (seed 100, not one of the table's seeds).
LAMBDAS = {
    "spiral": {"rnode": (1e-4, 1e-4), "ernode": (1.0, 0.1), "srnode": (1e-3, 1e-3),
               "local_unbiased": (100.0, 40.0), "local_biased": (100.0, 40.0), "nde_density": (1.5e-4, 1.5e-4),
               "nde_local_density": (1.5e-4, 1.5e-4), "nde_local_per_sample": (100.0, 40.0),
               "nde_adaptive": (1.5e-4, 1.5e-4)},
}
# The latent task's loss (Gaussian NLL per value, σ = 0.05) has 1/(2σ²) = 200 times the MSE's gradient scale.
LAMBDAS["latent"] = {name: (200 * a, 200 * b) for name, (a, b) in LAMBDAS["spiral"].items()}
VARIANT_NAMES = list(DIGITS_VARIANTS)


def regularizer_spec(variant: str, task: str) -> dict:
    """The digits benchmark's regulariser for ``variant`` with this task's λ schedule."""
    if variant not in DIGITS_VARIANTS:
        raise ValueError(f"`variant` must be one of {VARIANT_NAMES}, got {variant!r}")
    spec = dict(DIGITS_VARIANTS[variant])
    spec.pop("steer", None)
    if "reg" in spec:
        spec["lam"] = LAMBDAS[task][variant]
    return spec


@dataclass
class Windows:
    """Sub-windows of the spiral: ``tau`` (K,) shared offsets; ``train`` (n_train, K, 2) noisy;
    ``test`` (n_test, K, 2) noise-free."""

    tau: torch.Tensor
    train: torch.Tensor
    test: torch.Tensor


def spiral_windows(n_train: int, n_test: int, length: int, span: float, noise: float,
                   t_end: float = 25.0, seed: int = 1234) -> Windows:
    """Windows of ``dz/dt = A z³`` from ``z(0) = (2, 0)``; the truth is scipy's DOP853 at rtol 1e-10."""
    from scipy.integrate import solve_ivp
    a = np.array(SPIRAL_A)
    truth = solve_ivp(lambda t, z: (z ** 3) @ a, (0.0, t_end), [2.0, 0.0], method="DOP853", rtol=1e-10,
                      atol=1e-12, dense_output=True)
    gen = np.random.default_rng(seed)
    tau = np.concatenate([[0.0], np.sort(gen.uniform(0.0, span, length - 1))])

    def draw(n, sigma):
        starts = gen.uniform(0.0, t_end - span, n)
        z = np.stack([truth.sol(s + tau).T for s in starts])
        return torch.tensor(z + sigma * gen.standard_normal(z.shape), dtype=torch.float32)

    return Windows(torch.tensor(tau, dtype=torch.float32), draw(n_train, noise), draw(n_test, 0.0))


class CubicField(torch.nn.Module):
    """``f(z) = W2 tanh(W1 z³ + b1) + b2`` (Chen et al. 2018 spiral demo; Pal et al. 2021 spiral drift)."""

    def __init__(self, dim: int = 2, hidden: int = 50):
        super().__init__()
        self.l1, self.l2 = torch.nn.Linear(dim, hidden), torch.nn.Linear(hidden, dim)

    def forward(self, t, z):
        return self.l2(torch.tanh(self.l1(z ** 3)))


class TrueSpiral(torch.nn.Module):
    """The data-generating field ``A z³`` (reference NFE for the adaptive target)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("a", torch.tensor(SPIRAL_A))

    def forward(self, t, z):
        return (z ** 3) @ self.a.to(z)


def steer_times(t: torch.Tensor, rng: random.Random) -> torch.Tensor:
    """STEER for trajectories (Pal et al.'s PhysioNet form): each output time after the first drawn from
    U[t_i − w_i, t_i + w_i], ``w_i`` half the smaller neighbouring gap, so the grid stays increasing."""
    gaps = t[1:] - t[:-1]
    width = 0.5 * torch.minimum(gaps, torch.cat([gaps[1:], gaps[-1:]]))
    shift = torch.tensor([2 * rng.random() - 1 for _ in range(len(gaps))], dtype=t.dtype, device=t.device)
    return torch.cat([t[:1], t[1:] + shift * width])


class GRUEncoder(torch.nn.Module):
    """Recognition network: a GRU read backwards over ``[x_i, τ_{i+1} − τ_i]`` → mean and log-std of
    ``q(z0)`` (Pal et al.'s PhysioNet "GRU-like" encoder, without an ODE between observations)."""

    def __init__(self, data_dim: int, latent_dim: int, hidden: int = 32):
        super().__init__()
        self.gru = torch.nn.GRU(data_dim + 1, hidden, batch_first=True)
        self.out = torch.nn.Linear(hidden, 2 * latent_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (batch, K, data_dim), ``t`` (K,) -> mean, std each (batch, latent_dim)."""
        gaps = torch.cat([t[1:] - t[:-1], t.new_zeros(1)]).expand(x.shape[0], -1).unsqueeze(-1)
        _, h = self.gru(torch.cat([x, gaps], -1).flip(1))
        mean, raw = self.out(h[-1]).chunk(2, -1)
        return mean, torch.nn.functional.softplus(raw) + 1e-4


class LatentSpiral(torch.nn.Module):
    """GRU encoder -> z0 -> latent ODE ``dz/dt = MLP(z)`` -> linear decoder (Chen et al. 2018 §5.1)."""

    def __init__(self, latent_dim: int = 4, width: int = 32, obs_std: float = 0.05):
        super().__init__()
        self.encoder = GRUEncoder(2, latent_dim)
        self.field = torch.nn.Sequential(torch.nn.Linear(latent_dim, width), torch.nn.Tanh(),
                                         torch.nn.Linear(width, width), torch.nn.Tanh(),
                                         torch.nn.Linear(width, latent_dim))
        self.project = torch.nn.Linear(latent_dim, 2)
        self.obs_std = obs_std

    def vector_field(self, t, z):
        return self.field(z)


class SpiralTask:
    """Neural ODE on the observed state: predicts a window from its first observation."""

    def __init__(self, data: Windows):
        self.data = data

    def make_model(self) -> torch.nn.Module:
        return CubicField()

    def field(self, model):
        return model

    def encode(self, model, x: torch.Tensor, sample: bool):
        """Initial state = the window's first observation; no auxiliary output."""
        return x[:, 0], None

    def task_loss(self, model, x: torch.Tensor, z: torch.Tensor, aux) -> torch.Tensor:
        """``x``, ``z`` (batch, K, 2) observed and predicted states -> MSE."""
        return ((z - x) ** 2).mean()

    def predict(self, model, z: torch.Tensor) -> torch.Tensor:
        return z


class LatentTask:
    """Latent ODE: encode the (noisy) window, solve the latent ODE, decode; negative ELBO."""

    def __init__(self, data: Windows):
        self.data = data

    def make_model(self) -> torch.nn.Module:
        return LatentSpiral()

    def field(self, model):
        return model.vector_field

    def encode(self, model, x: torch.Tensor, sample: bool):
        """z0 (a reparameterised sample of q(z0 | x) in training, its mean otherwise) and (mean, std)."""
        mean, std = model.encoder(x, self.data.tau)
        return (mean + std * torch.randn_like(std) if sample else mean), (mean, std)

    def task_loss(self, model, x, z, aux):
        """Negative ELBO per observed value (Gaussian likelihood, KL to N(0, I); Chen et al. 2018 eq. 11).
        ``z`` (batch, K, latent) latent states, ``aux`` the posterior (mean, std)."""
        mean, std = aux
        err = (x - model.project(z)) / model.obs_std
        nll = 0.5 * err ** 2 + math.log(model.obs_std) + 0.5 * math.log(2 * math.pi)
        kl = (-torch.log(std) + 0.5 * (std ** 2 + mean ** 2) - 0.5).sum(-1)
        return (nll.sum((1, 2)) + kl).mean() / (x.shape[1] * x.shape[2])

    def predict(self, model, z):
        return model.project(z)


TASKS = {"spiral": SpiralTask, "latent": LatentTask}


def _solve(task, model, x, t, tol, reg=None, rng=None, sample=False):
    """Solve the task's ODE from ``x``'s encoding; returns (Solution, states batch-first (batch, K, d), aux)."""
    z0, aux = task.encode(model, x, sample)
    sol = nde.solve_ode(task.field(model), z0, t, method="tsit5", rtol=tol, atol=tol, regularize=reg,
                        generator=rng, heuristics=False, dense=False)
    return sol, sol.ys.movedim(0, 1), aux


def evaluate(task, model, args) -> dict:
    """Test MSE vs the noise-free truth, testing NFE (unregularised solve of all test windows), prediction
    time (median of warm repeats)."""
    x, t = task.data.test, task.data.tau
    with torch.no_grad():
        sol, z, _ = _solve(task, model, x, t, args.tol)
        mse = ((task.predict(model, z) - x) ** 2).mean().item()
        timing = time_calls({"predict": lambda: task.predict(model, _solve(task, model, x, t, args.tol)[1])},
                            args.device, repeats=args.repeats, warmup=1)
    return {"test_mse": mse, "testing_nfe": int(sol.stats["nfe"]), "predict_ms": timing["predict"]["median_ms"]}


def _probe_nfe(task, model, probe, tol) -> int:
    with torch.no_grad():
        return int(_solve(task, model, probe, task.data.tau, tol)[0].stats["nfe"])


def _reference_nfe(task, probe, tol) -> int:
    """NFE of the true dynamics on the probe windows (spiral) — the scale of the adaptive target."""
    with torch.no_grad():
        sol = nde.solve_ode(TrueSpiral().to(probe), probe[:, 0], task.data.tau, method="tsit5", rtol=tol,
                            atol=tol, heuristics=False, dense=False)
    return int(sol.stats["nfe"])


def run(variant: str, seed: int, args, task, lam_scale: float = 1.0) -> dict:
    """Train one variant from ``seed`` and evaluate it."""
    spec = regularizer_spec(variant, args.task)
    xtr, tau = task.data.train, task.data.tau
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = task.make_model().to(xtr)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    reg = spec["reg"]() if "reg" in spec else None
    lam0, lam1 = spec.get("lam", (0.0, 0.0))
    probe = xtr[:128]
    adaptive = None
    if spec.get("adaptive"):
        target = args.target_ratio * _reference_nfe(task, probe, args.tol)
        adaptive = R.AdaptiveCoefficient(target_nfe=target, value=lam0 * lam_scale)
    started = time.perf_counter()
    for step in range(args.steps):
        idx = torch.randint(0, len(xtr), (args.batch,), device=xtr.device)
        t = steer_times(tau, rng) if variant == "steer" else tau
        sol, z, aux = _solve(task, model, xtr[idx], t, args.tol, reg, rng, sample=True)
        loss = task.task_loss(model, xtr[idx], z, aux)
        if reg is not None:
            lam = adaptive.value if adaptive else lam_scale * exp_anneal(lam0, lam1, step, args.steps)
            loss = loss + lam * sol.regularization
        opt.zero_grad()
        loss.backward()
        opt.step()
        if adaptive is not None and step % 10 == 9:
            adaptive.update(_probe_nfe(task, model, probe, args.tol))
    train_s = time.perf_counter() - started
    return {"variant": variant, "seed": seed, "lam_scale": lam_scale, **evaluate(task, model, args),
            "train_s": train_s}


METRICS = ("test_mse", "testing_nfe", "predict_ms", "train_s")


def summarise(rows: list[dict]) -> list[dict]:
    """Mean ± std over seeds per variant (λ scale 1), with ratios to vanilla's means."""
    return summarise_variants(rows, VARIANT_NAMES, METRICS, lambda a, b: {
        "mse_change_pct": 100 * (a["test_mse"] / b["test_mse"] - 1), "nfe_ratio": a["testing_nfe"] / b["testing_nfe"],
        "predict_speedup": b["predict_ms"] / a["predict_ms"], "train_time_ratio": a["train_s"] / b["train_s"]})


def pareto_plot(rows: list[dict], path: Path, title: str) -> None:
    """Testing NFE vs test MSE, one point per run (seeds and λ scales)."""
    scatter_variants(rows, VARIANT_NAMES, "test_mse", path, "test MSE (lower is better)", title, log_y=True)


def _arguments(p):
    p.add_argument("--task", choices=list(TASKS), default="spiral")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--tol", type=float, default=1e-6)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                   help="float64 for the paper's local variants: in float32 their Hairer-step error is part round-off")
    p.add_argument("--window", type=float, default=2.0, help="window length Δ (time units)")
    p.add_argument("--points", type=int, default=16, help="observations per window K")
    p.add_argument("--noise", type=float, default=0.02, help="std of the training observations' noise")
    p.add_argument("--n-train", type=int, default=512)
    p.add_argument("--n-test", type=int, default=256)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=VARIANT_NAMES, choices=VARIANT_NAMES)
    p.add_argument("--sweep", nargs="*", default=["local_unbiased", "ernode", "nde_local_density"],
                   choices=VARIANT_NAMES, help="variants also run at the --scales multiples of λ")
    p.add_argument("--scales", type=float, nargs="+", default=[0.1, 10.0, 100.0])
    p.add_argument("--sweep-seed", type=int, default=None, help="seed of the λ sweep (default: first seed)")
    p.add_argument("--target-ratio", type=float, default=0.75,
                   help="nde_adaptive's target NFE as a fraction of the true field's NFE on the probe")
    p.add_argument("--tag", default="", help="suffix of the results files")
    p.add_argument("--combine", nargs="+", default=None,
                   help="no training: summarise these _runs.json files (a run split over processes; pass the "
                        "same settings as the runs had so that the notes are right)")


def _write(rows: list[dict], args, area: str, total: int) -> Path:
    """Summary table, per-run rows and (except quick runs) the Pareto plot of ``rows``."""
    sweep_seed = args.seeds[0] if args.sweep_seed is None else args.sweep_seed
    notes = (f"{args.task} task: windows of dz/dt = A z^3 (Δ={args.window}, K={args.points} irregular points, "
             f"noise {args.noise}, {args.n_train} train / {args.n_test} test windows); tsit5 rtol=atol={args.tol}, "
             f"{args.dtype}, {args.steps} Adam steps (lr {args.lr}), batch {args.batch}, seeds {args.seeds}; mean over "
             f"seeds; ratios vs vanilla; {len(rows)}/{total} runs done. Per-run rows and the λ sweep "
             f"({', '.join(args.sweep) or 'none'}; seed {sweep_seed}, λ × {args.scales}) are in the _runs.json file.")
    path = write_results(area, args.device, summarise(rows), notes)
    results_path(f"{area}_{args.device}_runs.json").write_text(json.dumps(rows, indent=1))
    if not args.quick:
        pareto_plot(rows, results_path(f"{area}_pareto.png"),
                    f"{args.task}: testing NFE vs test MSE over seeds and λ scales")
    return path


def main(argv=None):
    args = parse_args(__doc__.splitlines()[0], argv, _arguments)
    if args.quick:
        args.steps, args.seeds, args.sweep, args.n_train, args.n_test = 4, [0], [], 64, 32
    args.repeats = args.repeats or (2 if args.quick else 7)
    area = "regularization_timeseries" + ("" if args.task == "spiral" else f"_{args.task}") + \
        (f"_{args.tag}" if args.tag else "")
    torch.set_num_threads(1 if args.device == "cpu" else torch.get_num_threads())
    if args.combine:
        rows = [row for f in args.combine for row in json.loads(Path(f).read_text())]
        print(_write(rows, args, area, len(rows)).read_text())
        return rows
    data = spiral_windows(args.n_train, args.n_test, args.points, args.window, args.noise)
    dtype = getattr(torch, args.dtype)
    data = Windows(*(v.to(args.device, dtype) for v in (data.tau, data.train, data.test)))
    task = TASKS[args.task](data)
    sweep_seed = args.seeds[0] if args.sweep_seed is None else args.sweep_seed
    jobs = [(v, seed, 1.0) for seed in args.seeds for v in args.variants]
    jobs += [(v, sweep_seed, scale) for v in args.sweep for scale in args.scales]
    rows = []
    for variant, seed, scale in jobs:
        rows.append(run(variant, seed, args, task, lam_scale=scale))
        print(rows[-1], flush=True)
        path = _write(rows, args, area, len(jobs))
    print(path.read_text())
    return rows


if __name__ == "__main__":
    main()
