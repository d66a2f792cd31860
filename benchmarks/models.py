"""Model benchmarks: NeuralCDE vs torchcde (forward and forward+backward time, same path,
same vector field, same solver and tolerance); LatentSDE training-step throughput vs torchsde.

    python -m benchmarks.models [--device cpu|cuda] [--quick] [--threads N]

Writes benchmarks/results/models_<device>.{json,md}.
"""
from __future__ import annotations

import warnings

import torch
import torchcde
from torch import nn

import nde
from benchmarks._common import parse_args, time_calls, write_results
from nde.interpolation import hermite_cubic_backward
from nde.models import MLPCDEField, cdeint


class _TorchcdeField(nn.Module):
    """The same vector field object, seen by torchcde."""

    def __init__(self, field: nn.Module):
        super().__init__()
        self.field = field

    def forward(self, t, z):
        return self.field(t, z)


def _cde_cases(batch: int, length: int, channels: int, hidden: int, device: str):
    torch.manual_seed(0)
    t = torch.linspace(0, 1, length, device=device)
    x = torch.randn(batch, length, channels, device=device).cumsum(1) / length ** 0.5
    field = MLPCDEField(channels, hidden, width=64).to(device)
    z0 = torch.randn(batch, hidden, device=device)
    ours = hermite_cubic_backward(x, t)
    theirs = torchcde.CubicSpline(torchcde.hermite_cubic_coefficients_with_backward_differences(x, t), t)
    step = float(t[1] - t[0])
    configs = {
        "dopri5 rtol=atol=1e-4": (dict(method="dopri5", rtol=1e-4, atol=1e-4), dict(method="dopri5", rtol=1e-4,
                                                                                    atol=1e-4)),
        "rk4 step=grid": (dict(method="rk4", step_size=step), dict(method="rk4", options=dict(step_size=step))),
    }
    return t, field, z0, ours, theirs, configs


def _run_nde(X, field, z0, t, kwargs, backward: bool):
    zs = cdeint(X, field, z0, t[[0, -1]], **kwargs)
    if backward:
        zs[:, -1].sum().backward()
    return zs


def _run_torchcde(X, field, z0, t, kwargs, adjoint: bool, backward: bool):
    zs = torchcde.cdeint(X=X, func=field, z0=z0, t=t[[0, -1]], adjoint=adjoint, **kwargs)
    if backward:
        zs[:, -1].sum().backward()
    return zs


def _nfe_nde(X, field, z0, t, kwargs) -> int:
    """Evaluations of the solve ``cdeint`` makes (its default controller unless ``kwargs`` names one)."""
    kwargs = {"controller": nde.IController(), **kwargs}
    sol = nde.solve_ode(nde.models.CDEVectorField(field, X), z0, t[[0, -1]], **kwargs)
    return int(torch.as_tensor(sol.stats["nfe"]).max())


def _nfe_torchcde(X, field, z0, t, kwargs) -> int:
    count = [0]

    class Counting(nn.Module):
        def forward(self, t_, z):
            count[0] += 1
            return field(t_, z)

    torchcde.cdeint(X=X, func=Counting(), z0=z0, t=t[[0, -1]], adjoint=False, **kwargs)
    return count[0]


def cde_rows(device: str, quick: bool, repeats: int) -> list[dict]:
    rows = []
    sizes = [(32, 32)] if quick else [(32, 32), (128, 32)]
    for batch, length in sizes:
        t, field, z0, ours, theirs, configs = _cde_cases(batch, length, 3, 16, device)
        tc_field = _TorchcdeField(field)
        for name, (nde_kw, tc_kw) in configs.items():
            backsolve = [("backsolve", True)] if batch <= 32 or not name.startswith("dopri5") else []
            for backward, modes in ((False, [("direct", False)]), (True, [("direct", False), *backsolve])):
                for nde_mode, tc_adjoint in modes:
                    fns = {
                        "nde": lambda: _run_nde(ours, field, z0, t, {**nde_kw, "adjoint": nde_mode}, backward),
                        "torchcde": lambda: _run_torchcde(theirs, tc_field, z0, t, tc_kw, tc_adjoint, backward),
                    }
                    if name.startswith("dopri5") and not backward:
                        fns["nde (PI controller)"] = lambda: _run_nde(
                            ours, field, z0, t, {**nde_kw, "controller": nde.PIController()}, backward)
                    if nde_mode == "direct":
                        fns["nde (no heuristics)"] = lambda: _run_nde(
                            ours, field, z0, t, {**nde_kw, "heuristics": False, "dense": False}, backward)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        timing = time_calls(fns, device, repeats=repeats, warmup=2)
                    row = {"case": "NeuralCDE", "solver": name, "batch": batch, "length": length,
                           "pass": f"forward+backward ({nde_mode} / adjoint={tc_adjoint})" if backward else "forward",
                           "nde_ms": timing["nde"]["median_ms"], "torchcde_ms": timing["torchcde"]["median_ms"],
                           "torchcde/nde": timing["torchcde"]["median_ms"] / timing["nde"]["median_ms"]}
                    if "nde (no heuristics)" in timing:
                        row["nde_no_heuristics_ms"] = timing["nde (no heuristics)"]["median_ms"]
                    if "nde (PI controller)" in timing:
                        row["nde_PIcontroller_ms"] = timing["nde (PI controller)"]["median_ms"]
                    if not backward:
                        row["nde_nfe"] = _nfe_nde(ours, field, z0, t, nde_kw)
                        if name.startswith("dopri5"):
                            row["nde_PI_nfe"] = _nfe_nde(ours, field, z0, t, {**nde_kw, "controller": nde.PIController()})
                        row["torchcde_nfe"] = _nfe_torchcde(theirs, tc_field, z0, t, tc_kw)
                    rows.append(row)
                    print(row)
    return rows


def _latent_sde_pair(batch: int, length: int, dt: float, device: str):
    """The same LatentSDE (same weights) solved by nde.sde and by torchsde."""
    import torchsde

    from nde.models import LatentSDE

    class TorchsdeLatentSDE(LatentSDE):
        def _sdeint(self, z0, ts, **kwargs):
            return torchsde.sdeint(self, z0, ts, dt=self.dt, method=self.method, **kwargs)

    torch.manual_seed(0)
    ours = LatentSDE(2, latent_dim=4, context_dim=16, width=64, dt=dt).to(device)
    theirs = TorchsdeLatentSDE(2, latent_dim=4, context_dim=16, width=64, dt=dt).to(device)
    theirs.load_state_dict(ours.state_dict())
    ts = torch.linspace(0, 1, length, device=device)
    xs = torch.randn(batch, length, 2, device=device).cumsum(1) * 0.1
    return ours, theirs, xs, ts


def _elbo_step(model, xs, ts):
    log_px, kl = model(xs, ts)
    (kl - log_px).backward()


def latent_sde_rows(device: str, quick: bool, repeats: int) -> list[dict]:
    try:
        import nde.sde  # noqa: F401
    except ImportError:
        print("nde.sde not available: LatentSDE rows skipped")
        return []
    rows = []
    for batch in ([64] if quick else [64, 512]):
        dt = 0.01
        ours, theirs, xs, ts = _latent_sde_pair(batch, 21, dt, device)
        steps = round(1 / dt)
        fns = {"nde": lambda: _elbo_step(ours, xs, ts), "torchsde": lambda: _elbo_step(theirs, xs, ts)}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            timing = time_calls(fns, device, repeats=repeats, warmup=2)
        nde_ms, tsde_ms = timing["nde"]["median_ms"], timing["torchsde"]["median_ms"]
        row = {"case": "LatentSDE ELBO step (forward+backward)", "solver": f"euler dt={dt}, logqp", "batch": batch,
               "length": steps, "pass": "forward+backward (direct)", "nde_ms": nde_ms, "torchsde_ms": tsde_ms,
               "torchsde/nde": tsde_ms / nde_ms,
               "nde_steps_per_s": steps / (nde_ms / 1e3), "torchsde_steps_per_s": steps / (tsde_ms / 1e3)}
        rows.append(row)
        print(row)
    return rows


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv,
                      extra=lambda p: p.add_argument("--threads", type=int, default=1,
                                                     help="torch CPU threads (default 1: small models)"))
    torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 7)
    rows = cde_rows(args.device, args.quick, repeats) + latent_sde_rows(args.device, args.quick, repeats)
    notes = ("NeuralCDE: same Hermite (backward differences) path data, same MLP vector field (3 channels, hidden 16, "
             "width 64), same solver and tolerance; integrated over the whole path, loss = sum of final state. "
             "dopri5: cdeint defaults to torchdiffeq's I controller, as torchcde (the step counts still differ "
             "somewhat: nfe columns); the 'nde (PI controller)' columns take the core's default PI controller, "
             "which takes more steps at the knots. rk4: identical grids. "
             "'nde (no heuristics)': solve_ode(heuristics=False, dense=False), i.e. without the per-step error/"
             "stiffness records and dense-output storage that nde keeps by default and torchcde does not. "
             "The dopri5 backsolve comparison runs at batch 32 only (torchcde's adjoint takes ~20 s per call there). "
             "LatentSDE: the same model and weights (latent 4, context 16, width 64, data 2, 21 observation times on "
             "[0, 1]), one ELBO step (posterior SDE with logqp + backward by autograd through the steps), Euler "
             "dt = 0.01 (100 steps); torchsde with its default Brownian motion, nde with its default (BrownianGrid). "
             f"Medians of {repeats} warm round-robin repeats, torch threads = {args.threads}.")
    path = write_results("models", args.device, rows, notes)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
