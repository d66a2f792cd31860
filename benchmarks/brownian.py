"""Brownian paths for solves whose step times are not known in advance: time against memory.

Paths: ``BrownianPath`` (exact, stores every queried point), ``BrownianTree`` (virtual Brownian tree,
keeps one root-to-leaf path, tol 1e-6) and torchsde's ``BrownianInterval`` (its default, with an LRU
cache), all of size 512 x 16, float32, on [0, 1].

* ``queries``: 1000 consecutive intervals of length 1e-3 asked forward, then the same intervals
  backward (what a solve and its adjoint do): milliseconds per query, and for each pass the peak
  tensor memory above what was allocated before.
* ``adaptive``: ``solve_sde`` of the neural SDE of ``benchmarks.sde`` (state 16, hidden 64, batch
  512, Stratonovich) by adaptive reversible Heun (step doubling, rtol = atol = tol, initial dt 0.05)
  with ``gradient="reversible"``: forward+backward wall time and peak tensor memory, per path.

The three paths are different samples, so the adaptive solves take slightly different steps.

Run: ``python -m benchmarks.brownian [--device cpu|cuda] [--quick] [--repeats N]``.
"""
from __future__ import annotations

import torch
import torchsde

from benchmarks._common import peak_bytes, time_calls, timing_setup, write_results
from benchmarks.sde import NeuralSDE
from nde.sde import BrownianPath, BrownianTree, solve_sde

SIZE = (512, 16)
PATHS = ("BrownianPath", "BrownianTree", "torchsde BrownianInterval")


def make_path(name: str, device: str):
    kwargs = dict(dtype=torch.float32, device=device, entropy=3)
    if name == "BrownianPath":
        return BrownianPath(0.0, 1.0, SIZE, **kwargs)
    if name == "BrownianTree":
        return BrownianTree(0.0, 1.0, SIZE, **kwargs)
    return torchsde.BrownianInterval(0.0, 1.0, size=SIZE, dtype=torch.float32, device=device, entropy=3)


def _median_ms(fn, device: str, repeats: int) -> float:
    return time_calls({"fn": fn}, device, repeats=repeats, warmup=1)["fn"]["median_ms"]


def query_rows(device: str, repeats: int, n: int = 1000) -> list[dict]:
    intervals = [(k / n, (k + 1) / n) for k in range(n)]
    rows = []
    for name in PATHS:
        def forward_then_backward(name=name):
            bm = make_path(name, device)
            for a, b in intervals:
                bm(a, b)
            for a, b in reversed(intervals):
                bm(a, b)
        ms = _median_ms(forward_then_backward, device, repeats)
        rows.append({"case": "queries", "path": name, "tol": None, "accepted_steps": None,
                     "ms": ms, "ms_per_query": ms / (2 * n),
                     "peak_MB": peak_bytes(forward_then_backward, device) / 2 ** 20})
    return rows


def adaptive_rows(device: str, repeats: int, tols) -> list[dict]:
    torch.manual_seed(0)
    sde = NeuralSDE("stratonovich").to(device)
    y0 = torch.randn(SIZE[0], 16, device=device)
    rows = []
    for tol in tols:
        for name in PATHS:
            steps = []

            def forward_backward(name=name, tol=tol):
                sde.zero_grad(set_to_none=True)
                sol = solve_sde(sde, y0, [0.0, 1.0], bm=make_path(name, device), method="reversible_heun",
                                dt=0.05, adaptive=True, rtol=tol, atol=tol, gradient="reversible")
                sol.ys[-1].pow(2).mean().backward()
                steps.append(int(sol.stats["n_accepted"]))

            ms = _median_ms(forward_backward, device, repeats)
            rows.append({"case": "adaptive reversible_heun fwd+bwd", "path": name, "tol": tol,
                         "accepted_steps": steps[-1], "ms": ms, "ms_per_query": None,
                         "peak_MB": peak_bytes(forward_backward, device) / 2 ** 20})
            print(rows[-1], flush=True)
    return rows


def main(argv=None):
    args, repeats = timing_setup(__doc__.splitlines()[0], argv, quick_repeats=1, repeats=3)
    rows = query_rows(args.device, repeats)
    rows += adaptive_rows(args.device, repeats, (1e-3,) if args.quick else (1e-3, 1e-4, 1e-5))
    notes = ("Paths of size 512 x 16, float32, on [0, 1] (BrownianTree tol 1e-6; torchsde's BrownianInterval "
             f"with its defaults). Medians of {repeats} warm calls. queries: 1000 intervals of 1e-3 forward then "
             "backward, ms per query. adaptive: solve_sde(neural SDE state 16 hidden 64, reversible_heun, "
             "adaptive, rtol=atol=tol, gradient='reversible') forward+backward. peak_MB: peak tensor memory "
             "above the starting allocation (CUDA allocator or CPU profiler memory events).")
    print(write_results("brownian", args.device, rows, notes))


if __name__ == "__main__":
    main()
