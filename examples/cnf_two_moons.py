"""FFJORD-style continuous normalising flow on a 2-D density (two moons).

Trained by maximum likelihood with Hutchinson's trace estimator; the learned density is then
evaluated on a grid with the exact trace and plotted next to the data and generated samples.

    python examples/cnf_two_moons.py            # CPU, < 2 min
    python examples/cnf_two_moons.py --large    # wider network, more iterations (GPU if available)

Writes examples/out/cnf_two_moons.png.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import make_moons
from torch import nn
from tqdm import tqdm

from nde.models import CNF

OUT = Path(__file__).resolve().parent / "out"


class TimeMLP(nn.Module):
    """``f(t, z)`` = MLP of ``[z, t]``; ``z`` ``(batch, dim)``."""

    def __init__(self, dim: int, width: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim + 1, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                                 nn.Linear(width, dim))

    def forward(self, t, z):
        return self.net(torch.cat([z, t.to(z.dtype).expand(z.shape[0], 1)], dim=-1))


_RNG = np.random.RandomState(0)


def sample_moons(n: int, device) -> torch.Tensor:
    x, _ = make_moons(n, noise=0.06, random_state=_RNG)
    x = torch.as_tensor(x, dtype=torch.float32, device=device)
    return x - torch.tensor([0.5, 0.25], device=device)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--grid", type=int, default=80, help="density plot resolution")
    parser.add_argument("--large", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (small models run best on one)")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    device = "cuda" if args.large and torch.cuda.is_available() else "cpu"
    if args.large:
        args.iterations, args.batch, args.width, args.grid = 3000, 1024, 128, 200
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    flow = CNF(TimeMLP(2, args.width), dim=2, trace="hutchinson", rtol=1e-3, atol=1e-4).to(device)
    optim = torch.optim.Adam(flow.parameters(), lr=5e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, args.iterations)
    losses = []
    bar = tqdm(range(args.iterations), desc="CNF two moons")
    for _ in bar:
        loss = -flow.log_prob(sample_moons(args.batch, device)).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        sched.step()
        losses.append(loss.item())
        bar.set_postfix(nll=f"{loss.item():.3f}")
    with torch.no_grad():
        test_nll = -flow.log_prob(sample_moons(2000, device), trace="exact").mean().item()
        samples = flow.sample(2000)
    print(f"test NLL (exact trace): {test_nll:.3f} nats")
    if not args.no_plot:
        _plot(flow, sample_moons(2000, device).cpu(), samples.cpu(), args.grid, device, test_nll)
    return {"test_nll": test_nll, "final_loss": sum(losses[-10:]) / len(losses[-10:])}


def _plot(flow, data, samples, resolution, device, test_nll) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    axis = torch.linspace(-2, 2, resolution, device=device)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)
    with torch.no_grad():
        density = flow.log_prob(grid, trace="exact").exp().reshape(resolution, resolution).cpu()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    axes[0].scatter(data[:, 0], data[:, 1], s=2)
    axes[0].set_title("data")
    axes[1].imshow(density, origin="lower", extent=(-2, 2, -2, 2), cmap="viridis")
    axes[1].set_title(f"learned density (exact trace)\ntest NLL {test_nll:.3f} nats")
    axes[2].scatter(samples[:, 0], samples[:, 1], s=2, color="tab:orange")
    axes[2].set_title("samples from the flow")
    for ax in axes:
        ax.set_xlim(-2, 2)
        ax.set_ylim(-2, 2)
        ax.set_aspect("equal")
    fig.tight_layout()
    OUT.mkdir(exist_ok=True)
    fig.savefig(OUT / "cnf_two_moons.png", dpi=100)
    print(f"wrote {OUT / 'cnf_two_moons.png'}")


if __name__ == "__main__":
    main()
