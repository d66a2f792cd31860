"""Benchmark of the sim environments: smoke-grid throughput and backward/forward ratio, and
per task the Adam (expanding window) loss ratio within 200 iterations against CEM at an equal
simulator-step budget.

    python -m benchmarks.sim_envs [--device cpu|cuda] [--quick] [--tasks a,b] [--part smoke|tasks|all]

Writes ``benchmarks/results/sim_envs_<device>.{json,md}``. With ``--tasks`` or ``--part``
the rows of the parts that were run replace those rows in an existing results file.
"""
import json
import time

import torch

from benchmarks._common import parse_args, results_path, time_calls, write_results
from sim.engine.smoke import SmokeConfig, SmokeGrid
from sim.engine.smoke3d import Smoke3DConfig, SmokeGrid3D
from sim.envs import TASKS
from sim.optim import ExpandingWindow, cem, optimize_actions


def _extra(parser):
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated task names")
    parser.add_argument("--part", default="all",
                        choices=["smoke", "smoke3d", "step", "tasks", "freeze", "window", "all"])
    parser.add_argument("--iterations", type=int, default=200)


def smoke_rows(device: str, quick: bool, repeats: int, dim: int = 2) -> list[dict]:
    """Cell-steps/s forward (no tape), forward with tape, and backward/forward time ratio of the
    2-D (``dim=2``: 20 steps, 30 Jacobi sweeps) or 3-D grid (``dim=3``: 10 steps, 20 sweeps)."""
    if dim == 2:
        sizes = [(32, 1), (64, 1)] if quick else [(32, 1), (64, 1), (128, 1), (64, 8)]
        if device == "cuda" and not quick:
            sizes += [(256, 1), (512, 1), (256, 16)]
        steps, iters, section = 20, 30, "smoke"
    else:
        sizes = [(16, 1), (32, 1)] if quick else [(16, 1), (32, 1), (48, 1), (16, 8)]
        if device == "cuda" and not quick:
            sizes += [(64, 1), (128, 1), (64, 8)]
        steps, iters, section = 10, 20, "smoke3d"
    rows = []
    for n, batch in sizes:
        shape = (batch,) + (n,) * dim
        if dim == 2:
            grid = SmokeGrid(SmokeConfig(resolution=n, jacobi_iters=iters))
        else:
            grid = SmokeGrid3D(Smoke3DConfig(resolution=n, jacobi_iters=iters))
        v0 = 0.1 * torch.randn(*shape, dim, device=device)
        q0 = torch.rand(*shape, device=device)
        actions = (0.3 * torch.randn(batch, steps, dim, device=device)).requires_grad_()

        def forward():
            with torch.no_grad():
                grid.simulate(v0, q0, actions)

        def forward_tape():
            return grid.simulate(v0, q0, actions)

        def forward_backward():
            frames, _ = grid.simulate(v0, q0, actions)
            frames.sum().backward()

        t = time_calls({"fwd": forward, "fwd_tape": forward_tape, "fwd_bwd": forward_backward}, device,
                       repeats=repeats, warmup=1)
        fwd, fwd_tape, both = (t[k]["median_ms"] for k in ("fwd", "fwd_tape", "fwd_bwd"))
        rows.append({"section": section, "case": f"N={n}{'' if dim == 2 else '^3'} B={batch} T={steps} jacobi={iters}",
                     "fwd_ms": fwd, "fwd_tape_ms": fwd_tape, "bwd_ms": both - fwd_tape,
                     "Mcell_steps_per_s": batch * n ** dim * steps / fwd / 1e3,
                     "bwd_over_fwd": (both - fwd_tape) / fwd})
    return rows


def step_rows(device: str, repeats: int) -> list[dict]:
    """Cost of ``env.step`` early and late in an episode (O(1) continuation from the kept engine
    state) against replaying the history up to the last step (what a replaying step costs there)."""
    rows = []
    for name in ("gathering", "pouring"):
        env = TASKS[name](device=device)
        actions = 0.3 * env.config.action_bound * torch.randn(env.horizon, env.action_dim, device=device)
        times = torch.zeros(repeats, env.horizon)
        for r in range(repeats):
            env.reset()
            for t in range(env.horizon):
                start = time.perf_counter()
                env.step(actions[t])
                times[r, t] = time.perf_counter() - start
        per_step = times.median(dim=0).values * 1e3
        replay = time_calls({"replay": lambda: env.step_losses(actions[None]).detach()}, device,
                            repeats=repeats, warmup=1)["replay"]["median_ms"]
        rows.append({"section": "step", "case": name, "horizon": env.horizon,
                     "step_ms_first5": float(per_step[:5].median()), "step_ms_last5": float(per_step[-5:].median()),
                     "replay_ms_at_T": replay, "replay_over_step_at_T": replay / float(per_step[-5:].median())})
        print(rows[-1], flush=True)
    return rows


def task_row(name: str, device: str, iterations: int) -> dict:
    """Adam with the expanding window for ``iterations``; CEM with the same simulator steps (at least one
    CEM population, 16 x horizon, when Adam took fewer: ``cem_budget``)."""
    env = TASKS[name](device=device)
    window = ExpandingWindow(env.horizon, patience=3)
    start = time.perf_counter()
    adam = optimize_actions(env, iterations=iterations, lr=env.default_lr, window=window)
    adam_s = time.perf_counter() - start
    start = time.perf_counter()
    cem_budget = max(adam.sim_steps, 16 * env.horizon)
    baseline = cem(env, step_budget=cem_budget, population=16, seed=0)
    cem_s = time.perf_counter() - start
    return {"section": "task", "case": name, "horizon": env.horizon, "initial_loss": adam.initial_loss,
            "adam_iters": len(adam.losses), "adam_ratio": adam.ratio, "target_le_0.20": adam.ratio <= 0.2,
            "sim_steps": adam.sim_steps, "cem_budget": cem_budget, "cem_iters": len(baseline.losses),
            "cem_ratio": baseline.ratio,
            "adam_better": adam.best_loss < baseline.best_loss, "adam_s": adam_s, "cem_s": cem_s,
            "s_per_adam_iter": adam_s / len(adam.losses)}


def freeze_rows(device: str, iterations: int) -> list[dict]:
    """Adam + expanding window with and without FluidLab's action freezing (smoke tasks)."""
    rows = []
    for name in ("smoke_art", "transport", "circulation"):
        env = TASKS[name](device=device)
        row = {"section": "freeze", "case": name, "adam_iters": iterations}
        for label, lag in (("no_freeze", None), ("freeze", env.horizon // 10)):
            window = ExpandingWindow(env.horizon, patience=3, freeze_lag=lag)
            result = optimize_actions(env, iterations=iterations, lr=env.default_lr, window=window)
            row[f"{label}_ratio"] = result.ratio
        rows.append(row)
        print(row, flush=True)
    return rows


def window_rows(device: str, iterations: int) -> list[dict]:
    """Adam on the full-horizon loss against Adam with the expanding window (smoke tasks)."""
    rows = []
    for name in ("smoke_art", "transport", "circulation"):
        env = TASKS[name](device=device)
        row = {"section": "window", "case": name, "adam_iters": iterations}
        for label, window in (("full_horizon", None), ("expanding", ExpandingWindow(env.horizon, patience=3))):
            result = optimize_actions(env, iterations=iterations, lr=env.default_lr, window=window)
            row[f"{label}_ratio"] = result.ratio
            row[f"{label}_sim_steps"] = result.sim_steps
        rows.append(row)
        print(row, flush=True)
    return rows


def _merge(device: str, rows: list[dict]) -> list[dict]:
    """Keep rows of an existing results file that this run did not recompute."""
    path = results_path(f"sim_envs_{device}.json")
    if not path.exists():
        return rows
    done = {(r["section"], r["case"]) for r in rows}
    old = [r for r in json.loads(path.read_text())["rows"] if (r["section"], r["case"]) not in done]
    order = {"smoke": 0, "smoke3d": 1, "step": 2, "task": 3, "freeze": 4, "window": 5}
    return sorted(old + rows, key=lambda r: order[r["section"]])


NOTES = """Smoke: 2-D grid, 20 steps, 30 Jacobi sweeps (smoke3d: 3-D grid, 10 steps, 20 sweeps), float32; fwd =
forward without tape, fwd_tape = forward recording the tape, bwd = (forward+backward) - fwd_tape;
medians of warm calls. Mcell_steps_per_s = B*N^d*T / fwd. Tasks: default (small CPU) configs,
float32, Adam (torch.optim, beta2 0.99, task default lr) with FluidLab's expanding window (start
T/5, +T/5 after 3 iterations with < 1% improvement), --iterations (default 200; column adam_iters);
adam_ratio = best full-horizon loss / loss of the zero actions. sim_steps counts a gradient rollout
of W steps as 2W (forward + backward); CEM (population 16, 25% elites, mean kept in the population)
gets exactly that many forward steps (at least one population, 16 T). Freeze: the same Adam run (100
iterations; --quick: 20) without and with action freezing (freeze_lag = T/10: on each window
expansion the actions before old_end - T/10 are frozen). Window: the same Adam run (100 iterations;
--quick: 20) on the full-horizon loss throughout against the expanding window. Step: wall time of
env.step (batch 1, no gradient) over the first and last 5 steps of an episode (medians over
repeats), and of replaying the whole action history once (a no-gradient rollout of T steps: the cost
of the last step when step() replayed the history). Rows of each section may come from separate
invocations (--part/--tasks). CPU Warp kernels run single-threaded; the machine was shared with
other jobs (wall times vary 2-3x)."""


def main(argv=None):
    args = parse_args("sim environments benchmark", argv, extra=_extra)
    repeats = args.repeats or (3 if args.quick else 5)
    rows = []
    if args.part in ("smoke", "all"):
        rows += smoke_rows(args.device, args.quick, repeats)
    if args.part in ("smoke3d", "all"):
        rows += smoke_rows(args.device, args.quick, repeats, dim=3)
    if args.part in ("step", "all"):
        rows += step_rows(args.device, repeats)
    if args.part in ("tasks", "all"):
        iterations = 20 if args.quick else args.iterations
        for name in args.tasks.split(","):
            if name not in TASKS:
                raise ValueError(f"unknown task {name!r}; choose from {sorted(TASKS)}")
            rows.append(task_row(name, args.device, iterations))
            print(rows[-1], flush=True)
    if args.part in ("freeze", "all"):
        rows += freeze_rows(args.device, 20 if args.quick else 100)
    if args.part in ("window", "all"):
        rows += window_rows(args.device, 20 if args.quick else 100)
    rows = _merge(args.device, rows)
    print(write_results("sim_envs", args.device, rows, NOTES).read_text())


if __name__ == "__main__":
    main()
