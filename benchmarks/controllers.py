"""Step-size controllers: function evaluations of the same solve under each controller.

``python -m benchmarks.controllers [--device cpu|cuda]`` solves a set of problems with nde's default
PI controller (Hairer's stabilised gains 0.85 / 0.2), torchdiffeq's I controller (``nde.IController``,
what ``nde.odeint`` uses) and Gustafsson's PI gains (0.7 / 0.4), and counts function evaluations and
rejected steps; torchdiffeq's own count of the same solve is the check on the I controller. Counts
do not depend on timing, so one run suffices. Writes ``benchmarks/results/controllers_<device>.{md,json}``.
"""
from __future__ import annotations

import importlib.util

import torch

import nde
from benchmarks._common import parse_args, write_results
from benchmarks.core import MLPField

CONTROLLERS = {
    "PI 0.85/0.2 (solve_ode default)": nde.PIController(),
    "I (torchdiffeq, odeint)": nde.IController(),
    "PI 0.7/0.4 (Gustafsson)": nde.PIController(beta1=0.7, beta2=0.4),
}


def van_der_pol(mu: float):
    def field(t, y):
        x, v = y[..., 0], y[..., 1]
        return torch.stack([v, mu * (1 - x ** 2) * v - x], -1)
    return field


def lorenz(t, y):
    x, w, z = y[..., 0], y[..., 1], y[..., 2]
    return torch.stack([10 * (w - x), x * (28 - z) - w, x * w - 8 / 3 * z], -1)


def problems(device: str) -> list[tuple]:
    """(name, func, y0, t, method, tol) of every problem."""
    f64 = dict(dtype=torch.float64, device=device)
    torch.manual_seed(0)
    mlp, y_mlp = MLPField(2).to(device), torch.randn(256, 2, device=device)
    unit = torch.tensor([0.0, 1.0], device=device)
    rows = [(f"MLP 2-64-2, batch 256, [0, 1], tol {tol:g}", mlp, y_mlp, unit, "dopri5", tol)
            for tol in (1e-3, 1e-6, 1e-8)]
    vdp_t = torch.tensor([0.0, 20.0], **f64)
    vdp_y = torch.tensor([[2.0, 0.0]], **f64)
    rows += [(f"Van der Pol mu={mu:g}, [0, 20], tol 1e-6", van_der_pol(mu), vdp_y, vdp_t, "dopri5", 1e-6)
             for mu in (1.0, 10.0)]
    rows.append(("Van der Pol mu=5, [0, 20], tol 1e-6", van_der_pol(5.0), vdp_y, vdp_t, "bosh3", 1e-6))
    rows.append(("Lorenz, [0, 10], tol 1e-8", lorenz, torch.ones(1, 3, **f64), torch.tensor([0.0, 10.0], **f64),
                 "dopri5", 1e-8))
    if importlib.util.find_spec("torchcde") is not None:
        from benchmarks.models import _cde_cases   # noqa: PLC0415 (needs torchcde)
        for batch in (32, 128):
            t, field, z0, path, _, _ = _cde_cases(batch, 32, 3, 16, device)
            rows.append((f"NeuralCDE field, 32 knots, batch {batch}, tol 1e-4", nde.models.CDEVectorField(field, path),
                         z0, t[[0, -1]], "dopri5", 1e-4))
    return rows


def torchdiffeq_nfe(func, y0, t, method, tol) -> int | None:
    if importlib.util.find_spec("torchdiffeq") is None:
        return None
    import torchdiffeq  # noqa: PLC0415 (peer library, optional)
    count = [0]

    def counted(t_, y):
        count[0] += 1
        return func(t_, y)

    with torch.no_grad():
        torchdiffeq.odeint(counted, y0, t, rtol=tol, atol=tol, method=method)
    return count[0]


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv)
    rows = []
    for name, func, y0, t, method, tol in problems(args.device):
        row = {"problem": name, "method": method, "torchdiffeq_nfe": torchdiffeq_nfe(func, y0, t, method, tol)}
        for label, controller in CONTROLLERS.items():
            with torch.no_grad():
                sol = nde.solve_ode(func, y0, t, method=method, rtol=tol, atol=tol, controller=controller,
                                    heuristics=False, dense=False)
            row[f"{label}: nfe"] = int(sol.stats["nfe"])
            row[f"{label}: rejected"] = int(sol.stats["n_rejected"])
        print(row, flush=True)
        rows.append(row)
    notes = ("Function evaluations (and rejected steps) of nde.solve_ode under each controller, shared steps, "
             "rtol = atol = tol; torchdiffeq_nfe: torchdiffeq.odeint's count of the same solve (its I controller). "
             "MLP: the core benchmark's untrained 2-64-2 tanh field, float32; Van der Pol and Lorenz in float64; "
             "NeuralCDE field: benchmarks/models.py's vector field on a cubic Hermite path with 32 knots, float32.")
    print(write_results("controllers", args.device, rows, notes).read_text())


if __name__ == "__main__":
    main()
