"""nde.sde vs torchsde 0.2.6 on a neural SDE: wall time and saved-tensor memory.

Problem: diagonal-noise neural SDE, state 16, hidden 64 (drift MLP tanh, diffusion MLP
tanh + sigmoid), batch 512, t in [0, 1], 100 and 1000 fixed steps (plus a small,
overhead-bound one: state 4, hidden 16, batch 16, same path, 1000 steps); methods euler and
milstein (Itô, gradients by autograd through the solver: ``sdeint``) and reversible_heun
(Stratonovich, ``sdeint_adjoint`` with torchsde's ``adjoint_reversible_heun`` vs nde's exact
reversible backward).

Brownian paths:
* ``same path``: both libraries get a fresh ``nde.sde.BrownianPath`` with the same seed in
  every call (it follows torchsde's ``bm(ta, tb)`` protocol), so the noise is identical; the
  column ``max_abs_diff_f64`` shows the two solutions agree (checked in float64, because
  torchsde accumulates its step times in the dtype of ``y0``, which drifts in float32).
* ``default``: each library with its own default path (torchsde's ``BrownianInterval`` vs
  nde's ``BrownianGrid``, which stores nothing), ``bm=None``: what a user gets without passing
  ``bm``. Measured at 100 steps, and for reversible Heun also at 1000, with half the repeats
  (torchsde's BrownianInterval makes these calls slow).

Floor (Euler and Milstein rows, same path): ``floor_*_ms`` times the method written out by hand on
increments drawn once before timing: Euler–Maruyama y ← y + f(y)·dt + g(y)⊙ΔW in two fused tensor
operations per step, and Milstein the same plus the one vjp of g that its correction term needs. It is
the cost of the user's f and g (and that vjp) under the same autograd, so ``max_speedup_fwd_bwd`` =
torchsde / floor bounds what any solver could show.

Memory: ``saved_MB``, the autograd saved tensors of one forward; ``peak_MB``, the peak tensor
memory of one forward+backward above what was allocated before (CUDA allocator statistics, or the
CPU profiler's memory events), which also counts the noise a path keeps.

Run: ``python -m benchmarks.sde [--device cpu|cuda] [--quick] [--repeats N] [--threads T]``.
"""
from __future__ import annotations

import copy

import torch
import torchsde

from benchmarks._common import parse_args, peak_bytes, saved_tensor_bytes, time_calls, write_results
from nde.sde import BrownianPath, sdeint, sdeint_adjoint

STATE, HIDDEN, BATCH = 16, 64, 512
SMALL = (4, 16, 16)     # overhead-bound problem: state, hidden, batch
CASES = (("euler", "ito", False), ("milstein", "ito", False), ("reversible_heun", "stratonovich", True))


class NeuralSDE(torch.nn.Module):
    """``dy = f(y) dt + g(y) dW`` with MLP drift and element-wise MLP diffusion (diagonal noise)."""
    noise_type = "diagonal"

    def __init__(self, sde_type: str, state: int = STATE, hidden: int = HIDDEN):
        super().__init__()
        self.sde_type = sde_type
        self.drift = torch.nn.Sequential(torch.nn.Linear(state, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, state))
        self.diffusion = torch.nn.Sequential(torch.nn.Linear(state, hidden), torch.nn.Tanh(),
                                             torch.nn.Linear(hidden, state), torch.nn.Sigmoid())

    def f(self, t, y):
        return self.drift(y)

    def g(self, t, y):
        return self.diffusion(y)


def _solver(library: str, adjoint: bool):
    if library == "nde":
        return sdeint_adjoint if adjoint else sdeint
    return torchsde.sdeint_adjoint if adjoint else torchsde.sdeint


def _make_bm(kind: str, y0: torch.Tensor):
    """A fresh path per call: the same seeded BrownianPath for both ('same path'), or None (each library's default)."""
    if kind == "default":
        return None
    return BrownianPath(0.0, 1.0, y0.shape, dtype=y0.dtype, device=y0.device, entropy=7)


def _calls(sde, y0, method, adjoint, steps, library, kind, device):
    ts = torch.tensor([0.0, 1.0], dtype=y0.dtype, device=device)
    solve = _solver(library, adjoint)

    def forward():
        return solve(sde, y0, ts, bm=_make_bm(kind, y0), method=method, dt=1.0 / steps)

    def inference():
        with torch.no_grad():
            return forward()

    def forward_backward():
        forward()[-1].pow(2).mean().backward()

    return forward, inference, forward_backward


def _floor_calls(sde, y0, method, steps):
    """The method written out by hand on pre-drawn increments: (forward, inference, forward_backward).

    euler: y <- y + f dt + g dW. milstein (Ito, diagonal noise): the same plus the vjp
    J_g^T (g * (dW^2 - dt) / 2), which is g_i dg_i/dy_i (dW_i^2 - dt) / 2 for element-wise g.
    """
    dt = 1.0 / steps
    bm = _make_bm("same path", y0)
    increments = [bm(k * dt, (k + 1) * dt) for k in range(steps)]
    halves = [0.5 * (dw * dw - dt) for dw in increments]

    def euler_step(y, dw, _):
        return torch.addcmul(torch.add(y, sde.f(None, y), alpha=dt), sde.g(None, y), dw)

    def milstein_step(y, dw, half):
        create = torch.is_grad_enabled()
        with torch.enable_grad():
            y_ = y if y.requires_grad else y.detach().requires_grad_(True)
            g = sde.g(None, y_)
            gdg, = torch.autograd.grad(g, y_, g * half, create_graph=create)
        return torch.addcmul(torch.add(y, sde.f(None, y), alpha=dt), g, dw).add_(gdg)

    step = {"euler": euler_step, "milstein": milstein_step}[method]

    def forward():
        y = y0
        for dw, half in zip(increments, halves):
            y = step(y, dw, half)
        return y

    def inference():
        with torch.no_grad():
            return forward()

    def forward_backward():
        forward().pow(2).mean().backward()

    return forward, inference, forward_backward


def _agreement(sde, y0, method, adjoint, steps, device) -> float:
    """max |ys_nde - ys_torchsde| in float64 on the same path (float32 times drift in torchsde's loop)."""
    sde64, y64 = copy.deepcopy(sde).double(), y0.double()
    with torch.no_grad():
        out = [c[0]() for c in (_calls(sde64, y64, method, adjoint, steps, lib, "same path", device)
                                for lib in ("nde", "torchsde"))]
    return float((out[0] - out[1]).abs().max())


def run_case(method, sde_type, adjoint, steps, kind, device, repeats, size=(STATE, HIDDEN, BATCH)) -> dict:
    state, hidden, batch = size
    torch.manual_seed(0)
    sde = NeuralSDE(sde_type, state, hidden).to(device)
    y0 = torch.randn(batch, state, device=device)
    calls = {lib: _calls(sde, y0, method, adjoint, steps, lib, kind, device) for lib in ("nde", "torchsde")}
    if method in ("euler", "milstein") and kind == "same path":
        calls["floor"] = _floor_calls(sde, y0, method, steps)
    diff = _agreement(sde, y0, method, adjoint, steps, device) if kind == "same path" else None
    reps = repeats if kind == "same path" else max(1, repeats // 2)
    fwd = time_calls({lib: c[1] for lib, c in calls.items()}, device, repeats=reps, warmup=1)
    fwd_bwd = time_calls({lib: c[2] for lib, c in calls.items()}, device, repeats=reps, warmup=1)
    row = {"problem": f"state {state}, hidden {hidden}, batch {batch}", "method": method,
           "gradient": "adjoint" if adjoint else "autograd", "steps": steps, "brownian": kind,
           "repeats": reps, "max_abs_diff_f64": diff}
    for lib in ("nde", "torchsde"):
        row[f"{lib}_fwd_ms"] = fwd[lib]["median_ms"]
        row[f"{lib}_fwd_bwd_ms"] = fwd_bwd[lib]["median_ms"]
    row["speedup_fwd"] = row["torchsde_fwd_ms"] / row["nde_fwd_ms"]
    row["speedup_fwd_bwd"] = row["torchsde_fwd_bwd_ms"] / row["nde_fwd_bwd_ms"]
    floor = "floor" in calls
    row["floor_fwd_ms"] = fwd["floor"]["median_ms"] if floor else None
    row["floor_fwd_bwd_ms"] = fwd_bwd["floor"]["median_ms"] if floor else None
    row["max_speedup_fwd_bwd"] = row["torchsde_fwd_bwd_ms"] / row["floor_fwd_bwd_ms"] if floor else None
    for lib in ("nde", "torchsde"):
        row[f"{lib}_saved_MB"] = saved_tensor_bytes(calls[lib][0]) / 2 ** 20
        row[f"{lib}_peak_MB"] = peak_bytes(calls[lib][2], device) / 2 ** 20
    return row


def main(argv=None):
    args = parse_args(__doc__.splitlines()[0], argv, extra=lambda p: p.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: the machine is shared)"))
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 5)
    step_counts = (100,) if args.quick else (100, 1000)
    rows = []
    for method, sde_type, adjoint in CASES:
        for steps in step_counts:
            kinds = ("same path", "default") if steps == 100 or adjoint else ("same path",)
            for kind in kinds:
                row = run_case(method, sde_type, adjoint, steps, kind, args.device, repeats)
                print(row, flush=True)
                rows.append(row)
    for method, sde_type, adjoint in CASES:   # overhead-bound: where the solver's own cost shows
        row = run_case(method, sde_type, adjoint, step_counts[-1], "same path", args.device, repeats, SMALL)
        print(row, flush=True)
        rows.append(row)
    notes = (f"Neural SDE: state {STATE}, hidden {HIDDEN}, batch {BATCH} (the target problem), plus an "
             f"overhead-bound small one (state {SMALL[0]}, hidden {SMALL[1]}, batch {SMALL[2]}); t in [0, 1], dt = 1/steps. "
             f"Medians of {repeats} round-robin warm calls ('default' rows: half as many, column repeats). fwd = no-grad solve; fwd_bwd = solve + backward of "
             "mean(y_T^2). speedup = torchsde / nde. saved_MB = autograd saved tensors of one forward; peak_MB = peak "
             "tensor memory of one forward+backward (CUDA allocator or CPU profiler memory events), noise included. "
             "'same path': both libraries on the same BrownianPath (max_abs_diff_f64 = max|ys_nde - ys_torchsde| "
             "of the same case in float64); 'default': each library's default Brownian motion (bm=None). floor (Euler and "
             "Milstein, same path): the method written out by hand on pre-drawn increments (Milstein: plus the one vjp "
             "of g its correction needs), the user functions' own cost; "
             "max_speedup_fwd_bwd = torchsde / floor, the most any solver could gain.")
    print(write_results("sde", args.device, rows, notes))


if __name__ == "__main__":
    main()
