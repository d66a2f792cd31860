"""Hybrid neural/mechanistic model: learn the unknown friction of a damped pendulum.

The known physics is the frictionless pendulum; a small network supplies the missing term:

    dtheta/dt = omega,    domega/dt = -(g / L) sin(theta) + NN(theta, omega).

The truth has friction -c * omega - d * omega * |omega|. The model is fitted to noisy
observations of theta and omega from a few trajectories; the script then compares the learned
term with the true friction and extrapolates past the training window.

    python examples/hybrid_pendulum.py            # CPU, < 2 min
    python examples/hybrid_pendulum.py --large    # more trajectories / iterations (GPU if available)

Writes examples/out/hybrid_pendulum.png.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from nde.models import NeuralODE

OUT = Path(__file__).resolve().parent / "out"
G_OVER_L = 9.81
DAMPING, DRAG = 0.3, 0.1


def true_friction(omega: torch.Tensor) -> torch.Tensor:
    return -DAMPING * omega - DRAG * omega * omega.abs()


class TruePendulum(nn.Module):
    def forward(self, t, y):
        theta, omega = y.unbind(-1)
        return torch.stack([omega, -G_OVER_L * torch.sin(theta) + true_friction(omega)], -1)


class HybridPendulum(nn.Module):
    """Known gravity term plus a learned friction ``NN(theta, omega)``. State ``(batch, 2)``."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.unknown = nn.Sequential(nn.Linear(2, width), nn.Tanh(), nn.Linear(width, width), nn.Tanh(),
                                     nn.Linear(width, 1))

    def forward(self, t, y):
        theta, omega = y.unbind(-1)
        return torch.stack([omega, -G_OVER_L * torch.sin(theta) + self.unknown(y).squeeze(-1)], -1)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trajectories", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--large", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (small models run best on one)")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    device = "cuda" if args.large and torch.cuda.is_available() else "cpu"
    if args.large:
        args.trajectories, args.iterations = 64, 2000
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t = torch.linspace(0, 5, 60, device=device)
    t_long = torch.linspace(0, 10, 200, device=device)
    y0 = torch.stack([torch.empty(args.trajectories).uniform_(-2.5, 2.5),
                      torch.empty(args.trajectories).uniform_(-2, 2)], -1).to(device)
    truth = NeuralODE(TruePendulum(), rtol=1e-7, atol=1e-7)
    with torch.no_grad():
        clean = truth(y0, t)
    data = clean + args.noise * torch.randn_like(clean)

    model = NeuralODE(HybridPendulum(), method="dopri5", rtol=1e-4, atol=1e-5).to(device)
    optim = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, args.iterations)
    losses = []
    for _ in tqdm(range(args.iterations), desc="hybrid pendulum"):
        loss = (model(data[:, 0], t) - data).pow(2).mean()
        optim.zero_grad()
        loss.backward()
        optim.step()
        sched.step()
        losses.append(loss.item())

    omega = torch.linspace(-4, 4, 101, device=device)
    with torch.no_grad():
        learned = model.vector_field.unknown(torch.stack([torch.zeros_like(omega), omega], -1)).squeeze(-1)
        friction_error = (learned - true_friction(omega)).abs().max().item()
        pred_long, true_long = model(y0, t_long), truth(y0, t_long)
    extrapolation_rmse = (pred_long - true_long).pow(2).mean().sqrt().item()
    print(f"final loss {losses[-1]:.4g}, max friction error on |omega|<=4: {friction_error:.3f}, "
          f"RMSE to t=10 (trained to t=5): {extrapolation_rmse:.3f}")
    if not args.no_plot:
        _plot(t.cpu(), data.cpu(), t_long.cpu(), pred_long.cpu(), true_long.cpu(), omega.cpu(), learned.cpu())
    return {"final_loss": losses[-1], "friction_error": friction_error, "extrapolation_rmse": extrapolation_rmse}


def _plot(t, data, t_long, pred, truth, omega, learned) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for i in range(min(3, data.shape[0])):
        line, = ax1.plot(t_long, truth[i, :, 0], lw=1, alpha=0.6)
        ax1.plot(t_long, pred[i, :, 0], "--", color=line.get_color(), lw=1.5)
        ax1.plot(t, data[i, :, 0], ".", color=line.get_color(), ms=3)
    ax1.axvline(float(t[-1]), color="k", lw=0.8, ls=":")
    ax1.set_title("theta: data (dots), truth (solid), hybrid model (dashed)\ntrained on t <= 5, extrapolated to 10")
    ax1.set_xlabel("t")
    ax2.plot(omega, true_friction(omega), label="true friction -c w - d w|w|")
    ax2.plot(omega, learned, "--", label="learned NN(0, w)")
    ax2.set_xlabel("omega")
    ax2.legend()
    ax2.set_title("the unknown term")
    fig.tight_layout()
    OUT.mkdir(exist_ok=True)
    fig.savefig(OUT / "hybrid_pendulum.png", dpi=100)
    print(f"wrote {OUT / 'hybrid_pendulum.png'}")


if __name__ == "__main__":
    main()
