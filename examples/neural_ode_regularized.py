"""Flagship example: a neural ODE that learns to be cheap to solve.

Trains the same neural-ODE digit classifier (scikit-learn's bundled 8×8 digits, offline) twice:
once plainly, once with nde's local solver-heuristic regulariser (Pal et al. 2023, with nde's
step-density estimate), then compares test accuracy, the number of function evaluations an
unregularised adaptive solve needs at test time, and prediction time. Writes a plot to
``examples/out/neural_ode_regularized.png``.

    python examples/neural_ode_regularized.py            # under a minute on a laptop CPU
    python examples/neural_ode_regularized.py --steps 2000 --device cuda
"""
from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
from tqdm import tqdm

import nde
from nde import regularize as R


class Field(torch.nn.Module):
    """f(x, t) = tanh(W2 [tanh(W1 [x; t] + b1); t] + b2), the model of Pal et al.'s MNIST experiments."""

    def __init__(self, dim: int = 64, hidden: int = 100):
        super().__init__()
        self.l1, self.l2 = torch.nn.Linear(dim + 1, hidden), torch.nn.Linear(hidden + 1, dim)

    def forward(self, t, x):
        tt = t.expand(x.shape[0], 1).to(x.dtype)
        return torch.tanh(self.l2(torch.cat([torch.tanh(self.l1(torch.cat([x, tt], 1))), tt], 1)))


def digits(device):
    from sklearn.datasets import load_digits
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32, device=device) / 16.0
    y = torch.tensor(data.target, device=device)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0)).to(device)
    return (x[perm[:1437]], y[perm[:1437]]), (x[perm[1437:]], y[perm[1437:]])


def train(data, regularizer, lam, args, label):
    (xtr, ytr), _ = data
    torch.manual_seed(args.seed)
    field, head = Field().to(args.device), torch.nn.Linear(64, 10).to(args.device)
    opt = torch.optim.Adam([*field.parameters(), *head.parameters()], lr=args.lr)
    t = torch.tensor([0.0, 1.0], device=args.device)
    rng, history = random.Random(args.seed), []
    for _ in tqdm(range(args.steps), desc=label, leave=False):
        idx = torch.randint(0, len(ytr), (args.batch,), device=args.device)
        sol = nde.solve_ode(field, xtr[idx], t, method="tsit5", rtol=args.tol, atol=args.tol,
                            regularize=regularizer, generator=rng, heuristics=False, dense=False)
        loss = torch.nn.functional.cross_entropy(head(sol.ys[-1]), ytr[idx])
        if regularizer is not None:
            loss = loss + lam * sol.regularization
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(int(sol.stats["nfe"]))
    return field, head, history


def evaluate(field, head, data, args):
    _, (xte, yte) = data
    t = torch.tensor([0.0, 1.0], device=args.device)
    with torch.no_grad():
        sol = nde.solve_ode(field, xte, t, method="tsit5", rtol=args.tol, atol=args.tol)
        acc = (head(sol.ys[-1]).argmax(1) == yte).float().mean().item() * 100
        times = []
        for _ in range(5):
            start = time.perf_counter()
            nde.odeint(field, xte, t, method="tsit5", rtol=args.tol, atol=args.tol)
            times.append(time.perf_counter() - start)
    return acc, int(sol.stats["nfe"]), 1e3 * sorted(times)[2]


def main(argv=None) -> dict:
    """Run the comparison; returns ``{label: {"accuracy", "nfe", "ms", "history"}}`` for vanilla and regularised."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--tol", type=float, default=1e-6)
    parser.add_argument("--lam", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=str(Path(__file__).parent / "out" / "neural_ode_regularized.png"))
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    data = digits(args.device)
    reg = R.LocalErrorEstimate(sampling="mixture", n_samples=2, quantity="density", step="solver", method=None)
    results = {}
    for label, regularizer in (("vanilla", None), ("regularised", reg)):
        field, head, history = train(data, regularizer, args.lam, args, label)
        results[label] = (*evaluate(field, head, data, args), history)
        acc, nfe, ms, _ = results[label]
        print(f"{label:12s} test accuracy {acc:5.1f}%   testing NFE {nfe:4d}   prediction {ms:6.1f} ms")
    (acc0, nfe0, ms0, _), (acc1, nfe1, ms1, _) = results["vanilla"], results["regularised"]
    print(f"regularised / vanilla: NFE {nfe1 / nfe0:.2f}x, prediction {ms0 / ms1:.2f}x faster, "
          f"accuracy {acc1 - acc0:+.1f} points")
    if not args.no_plot:
        _plot(results, args.out)
    return {label: dict(zip(("accuracy", "nfe", "ms", "history"), values)) for label, values in results.items()}


def _plot(results, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, (_, _, _, history) in results.items():
        ax.plot(history, label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel("function evaluations per forward solve")
    ax.set_title("A regularised neural ODE stays cheap to solve")
    ax.legend()
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"plot written to {out}")


if __name__ == "__main__":
    main()
