"""Per-sample events: a batch of bouncing balls, each stopped at its own impact.

Falling balls with quadratic air drag, dv/dt = −g − k·v·|v|, from random heights in [1, 10] m and
vertical speeds in [−2, 2] m/s; the event is the height reaching 0. dopri5 at rtol = atol = 1e-6.

* ``nde solve_ode per-sample``: one batched solve, ``solve_ode(..., per_sample=True, event_fn=...)``;
  every row stops at its own impact (nde's per-sample events).
* ``torchdiffeq odeint_event loop`` and ``nde odeint_event loop``: what a user of a library without
  per-sample events writes: one event solve per ball (a shared-step batched solve would stop the whole
  batch at the first impact).

fwd: the impact times; fwd_bwd: also the gradient of Σ(event time + impact speed) with respect to the
initial states (implicit function theorem in all three). max_dt_vs_reference: largest error of an
impact time against torchdiffeq's loop at rtol = atol = 1e-11 (the per-sample solve uses solve_ode's
PI controller and takes other steps than the I-controlled loops). Medians of warm round-robin calls.

Run: ``python -m benchmarks.events [--device cpu|cuda] [--quick] [--repeats N]``.
"""
from __future__ import annotations

import torch
import torchdiffeq

import nde
from benchmarks._common import time_calls, timing_setup, write_results

GRAVITY, DRAG, TOL = 9.81, 0.05, 1e-6


def field(t, y):
    """(n, 2) rows of (height, velocity) -> their derivatives."""
    v = y[..., 1]
    return torch.stack([v, -GRAVITY - DRAG * v * v.abs()], dim=-1)


def height(t, y):
    return y[..., 0]


def initial_states(batch: int, device: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    h0 = 1 + 9 * torch.rand(batch, generator=generator, dtype=torch.float64)
    v0 = -2 + 4 * torch.rand(batch, generator=generator, dtype=torch.float64)
    return torch.stack([h0, v0], dim=1).to(device)


def per_sample(y0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Impact times (batch,) and states (batch, 2) of one batched per-sample event solve."""
    t = torch.tensor([0.0, 100.0], dtype=y0.dtype, device=y0.device)
    sol = nde.solve_ode(field, y0, t, per_sample=True, event_fn=height, rtol=TOL, atol=TOL)
    return sol.event_t, sol.ys[-1]


def loop(odeint_event, y0: torch.Tensor, tol: float = TOL) -> tuple[torch.Tensor, torch.Tensor]:
    """Impact times and states of one event solve per row."""
    t0 = torch.tensor(0.0, dtype=y0.dtype, device=y0.device)
    times, states = [], []
    for row in y0:
        event_t, sol = odeint_event(field, row, t0, event_fn=height, rtol=tol, atol=tol)
        times.append(event_t.reshape(()))
        states.append(sol[-1])
    return torch.stack(times), torch.stack(states)


CASES = {
    "nde solve_ode per-sample": per_sample,
    "nde odeint_event loop": lambda y0: loop(nde.odeint_event, y0),
    "torchdiffeq odeint_event loop": lambda y0: loop(torchdiffeq.odeint_event, y0),
}


def fwd_bwd(solve, y0: torch.Tensor) -> torch.Tensor:
    y0 = y0.clone().requires_grad_(True)
    times, states = solve(y0)
    (grad,) = torch.autograd.grad(times.sum() + states[:, 1].abs().sum(), y0)
    return grad


def rows_for(batch: int, device: str, repeats: int) -> list[dict]:
    y0 = initial_states(batch, device)
    with torch.no_grad():
        reference = loop(torchdiffeq.odeint_event, y0, tol=1e-11)[0]
    grad_ref = fwd_bwd(CASES["torchdiffeq odeint_event loop"], y0)
    fwd = time_calls({name: (lambda s=solve: s(y0)) for name, solve in CASES.items()}, device, repeats, warmup=1)
    both = time_calls({name: (lambda s=solve: fwd_bwd(s, y0)) for name, solve in CASES.items()}, device, repeats,
                      warmup=1)
    rows = []
    for name, solve in CASES.items():
        times = solve(y0)[0].detach()
        rows.append({"batch": batch, "case": name, "fwd_ms": fwd[name]["median_ms"],
                     "fwd_bwd_ms": both[name]["median_ms"],
                     "fwd_speedup_vs_torchdiffeq": fwd["torchdiffeq odeint_event loop"]["median_ms"]
                     / fwd[name]["median_ms"],
                     "fwd_bwd_speedup_vs_torchdiffeq": both["torchdiffeq odeint_event loop"]["median_ms"]
                     / both[name]["median_ms"],
                     "max_dt_vs_reference": float((times - reference).abs().max()),
                     "max_grad_diff_vs_torchdiffeq": float((fwd_bwd(solve, y0) - grad_ref).abs().max())})
        print(rows[-1], flush=True)
    return rows


def main(argv=None):
    args, repeats = timing_setup(__doc__.splitlines()[0], argv, quick_repeats=1, repeats=3)
    rows = []
    for batch in ((16,) if args.quick else (16, 256)):
        rows += rows_for(batch, args.device, repeats)
    notes = (f"Falling balls with quadratic drag (g = {GRAVITY}, k = {DRAG}), float64, dopri5 rtol = atol = {TOL}; "
             "event: height 0. per-sample: one solve_ode(per_sample=True, event_fn=...); loops: one "
             "odeint_event per ball. fwd_bwd: gradient of sum(event time + impact speed) w.r.t. y0. "
             f"Medians of {repeats} warm round-robin calls.")
    print(write_results("events", args.device, rows, notes))


if __name__ == "__main__":
    main()
