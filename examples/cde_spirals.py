"""Irregular time-series classification with a neural CDE.

Spirals of two orientations (clockwise / anticlockwise), 30% of each sample's observations
dropped at random (marked NaN), so every sample is irregularly sampled. The control path is
the causal cubic Hermite interpolation of (time, x, y); a NeuralCDE reads it and classifies.

    python examples/cde_spirals.py            # CPU, < 2 min
    python examples/cde_spirals.py --large    # more data and a bigger model (GPU if available)

Writes examples/out/cde_spirals.png: test spirals coloured by predicted class, and the loss.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from nde.interpolation import hermite_cubic_backward
from nde.models import MLPCDEField, NeuralCDE

OUT = Path(__file__).resolve().parent / "out"


def make_spirals(n: int, length: int, drop: float, generator: torch.Generator):
    """``n`` noisy spirals ``(n, length, 3)`` channels (t, x, y) with a fraction ``drop`` of rows
    set to NaN (never the first), and labels ``(n,)``: 1 = anticlockwise."""
    t = torch.linspace(0, 4 * math.pi, length)
    labels = torch.randint(0, 2, (n,), generator=generator)
    start = torch.rand(n, 1, generator=generator) * 2 * math.pi
    sign = (2 * labels - 1).unsqueeze(-1).float()
    radius = 1 + t / (4 * math.pi)
    angle = start + sign * t
    x = torch.stack([t.expand(n, -1) / (4 * math.pi), radius * torch.cos(angle), radius * torch.sin(angle)], -1)
    x[..., 1:] += 0.05 * torch.randn(n, length, 2, generator=generator)
    dropped = torch.rand(n, length, generator=generator) < drop
    dropped[:, 0] = False
    x[dropped] = float("nan")
    return x, labels.float(), t


def build_model(hidden: int, width: int, **solver_options) -> NeuralCDE:
    return NeuralCDE(MLPCDEField(channels=3, hidden=hidden, width=width), nn.Linear(3, hidden),
                     readout=nn.Linear(hidden, 1), **solver_options)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=8)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--large", action="store_true", help="4096 samples, bigger model, GPU if available")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (small models run best on one)")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    device = "cuda" if args.large and torch.cuda.is_available() else "cpu"
    torch.set_num_threads(args.threads)
    if args.large:
        args.samples, args.length, args.epochs, args.hidden, args.width = 4096, 100, 30, 32, 128
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    x, y, t = make_spirals(args.samples, args.length, drop=0.3, generator=gen)
    x_test, y_test, _ = make_spirals(256, args.length, drop=0.3, generator=gen)
    x, y, x_test, y_test, t = (v.to(device) for v in (x, y, x_test, y_test, t))
    path, test_path = hermite_cubic_backward(x, t), hermite_cubic_backward(x_test, t)

    model = build_model(args.hidden, args.width, method="rk4", step_size=float(t[1] - t[0])).to(device)
    optim = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.BCEWithLogitsLoss()
    losses = []
    for _ in tqdm(range(args.epochs), desc="NeuralCDE spirals"):
        for idx in torch.randperm(args.samples, device=device).split(args.batch):
            batch_path = type(path)(path.knots, path.coeffs[idx])
            loss = loss_fn(model(batch_path).squeeze(-1), y[idx])
            optim.zero_grad()
            loss.backward()
            optim.step()
            losses.append(loss.item())
    with torch.no_grad():
        pred = (model(test_path).squeeze(-1) > 0).float()
    accuracy = (pred == y_test).float().mean().item()
    print(f"test accuracy: {accuracy:.3f}")
    if not args.no_plot:
        _plot(x_test.cpu(), pred.cpu(), y_test.cpu(), losses, accuracy)
    return {"accuracy": accuracy, "final_loss": sum(losses[-5:]) / len(losses[-5:])}


def _plot(x, pred, truth, losses, accuracy) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.5))
    for i in range(6):
        kept = ~torch.isnan(x[i, :, 1])
        colour = "tab:blue" if pred[i] == 1 else "tab:orange"
        ax1.plot(x[i, kept, 1], x[i, kept, 2], ".-", color=colour, ms=3, lw=0.8,
                 alpha=1.0 if pred[i] == truth[i] else 0.3)
    ax1.set_title(f"test spirals (70% of points kept), colour = predicted\nblue anticlockwise, "
                  f"orange clockwise; accuracy {accuracy:.1%}")
    ax1.set_aspect("equal")
    ax2.plot(losses)
    ax2.set_xlabel("step")
    ax2.set_ylabel("BCE loss")
    ax2.set_yscale("log")
    fig.tight_layout()
    OUT.mkdir(exist_ok=True)
    fig.savefig(OUT / "cde_spirals.png", dpi=100)
    print(f"wrote {OUT / 'cde_spirals.png'}")


if __name__ == "__main__":
    main()
