"""Latent SDE (Li et al. 2020) fitted to Ornstein-Uhlenbeck paths.

Data: dX = theta (mu - X) dt + sigma dW, observed with small noise at 41 times. The latent SDE is
trained on the ELBO (no KL annealing: with a short budget, annealing lets the posterior
explain the data by drift and shrinks the shared diffusion); its *prior* is then sampled and compared
with fresh data paths: mean and quantile bands over time.

    python examples/latent_sde_ou.py            # CPU, < 2 min
    python examples/latent_sde_ou.py --large    # more data / iterations (GPU if available)

Writes examples/out/latent_sde_ou.png.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from nde.models import LatentSDE
from nde.sde import sdeint

OUT = Path(__file__).resolve().parent / "out"
THETA, MU, SIGMA = 2.0, 1.0, 0.5


class OrnsteinUhlenbeck(nn.Module):
    sde_type, noise_type = "ito", "diagonal"

    def f(self, t, x):
        return THETA * (MU - x)

    def g(self, t, x):
        return torch.full_like(x, SIGMA)


def make_data(n: int, ts: torch.Tensor, obs_noise: float) -> torch.Tensor:
    """``(n, len(ts), 1)`` OU paths from X0 ~ N(0, 0.3^2), plus observation noise."""
    x0 = 0.3 * torch.randn(n, 1, device=ts.device)
    with torch.no_grad():
        xs = sdeint(OrnsteinUhlenbeck(), x0, ts, dt=1e-2, method="euler").movedim(0, 1)
    return xs + obs_noise * torch.randn_like(xs)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dt", type=float, default=0.05)
    parser.add_argument("--large", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (small models run best on one)")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    device = "cuda" if args.large and torch.cuda.is_available() else "cpu"
    if args.large:
        args.samples, args.iterations, args.batch, args.dt = 4096, 3000, 512, 0.02
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ts = torch.linspace(0, 2, 41, device=device)
    data = make_data(args.samples, ts, obs_noise=0.02)
    model = LatentSDE(1, latent_dim=1, context_dim=8, width=32, obs_std=0.1, dt=args.dt).to(device)
    optim = torch.optim.Adam(model.parameters(), lr=2e-2)
    sched = torch.optim.lr_scheduler.ExponentialLR(optim, gamma=0.995)
    losses = []
    bar = tqdm(range(args.iterations), desc="latent SDE on OU")
    for _ in bar:
        batch = data[torch.randint(0, args.samples, (args.batch,), device=device)]
        log_px, kl = model(batch, ts)
        loss = kl - log_px
        optim.zero_grad()
        loss.backward()
        optim.step()
        sched.step()
        losses.append((kl - log_px).item())
        bar.set_postfix(neg_elbo=f"{losses[-1]:.1f}")
    with torch.no_grad():
        generated = model.sample(1000, ts)
        fresh = make_data(1000, ts, obs_noise=0.0)
    gap_mean = (generated.mean(0) - fresh.mean(0)).abs().max().item()
    gap_std = (generated.std(0) - fresh.std(0)).abs().max().item()
    print(f"max |mean gap| {gap_mean:.3f}, max |std gap| {gap_std:.3f} over time (prior samples vs fresh data)")
    if not args.no_plot:
        _plot(ts.cpu(), fresh.cpu(), generated.cpu(), losses)
    return {"initial_neg_elbo": losses[0], "final_neg_elbo": sum(losses[-3:]) / 3, "mean_gap": gap_mean,
            "std_gap": gap_std}


def _plot(ts, data, generated, losses) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), gridspec_kw={"width_ratios": [1.2, 1.2, 1]})
    for ax, paths, title, colour in ((axes[0], data, "data (OU paths)", "tab:blue"),
                                     (axes[1], generated, "latent SDE prior samples", "tab:orange")):
        for i in range(30):
            ax.plot(ts, paths[i, :, 0], color=colour, lw=0.7, alpha=0.6)
        ax.set_title(title)
        ax.set_xlabel("t")
        ax.set_ylim(-1.2, 2.2)
    for paths, colour, label in ((data, "tab:blue", "data"), (generated, "tab:orange", "model")):
        q = torch.quantile(paths[..., 0], torch.tensor([0.05, 0.5, 0.95]), dim=0)
        axes[2].fill_between(ts, q[0], q[2], color=colour, alpha=0.25)
        axes[2].plot(ts, q[1], color=colour, label=f"{label}: median, 5-95%")
    axes[2].set_title("marginals over time (1000 paths each)")
    axes[2].legend()
    axes[2].set_xlabel("t")
    fig.tight_layout()
    OUT.mkdir(exist_ok=True)
    fig.savefig(OUT / "latent_sde_ou.png", dpi=100)
    print(f"wrote {OUT / 'latent_sde_ou.png'}")


if __name__ == "__main__":
    main()
