"""Stochastic-interpolant bridges: Gaussian -> checkerboard, and 8 Gaussians <-> two moons.

Learns the velocity b and the denoiser eta of each interpolant with the nde trainer, then
samples with the probability-flow ODE (adaptive, nde core) and with SDEs for several eps,
and plots samples and particle paths.

    python examples/interpolant_bridges.py [--steps 3000] [--quick] [--out examples/out] [--samples 2000] [--no-plot]
    torchrun --nproc_per_node=2 examples/interpolant_bridges.py   # data-parallel training

SDE diffusion: eps(t) = eps0 * latent_scale(t) (alpha for the one-sided path, gamma for the
two-sided one), so eps s = -eps0 eta stays finite where the score is singular (paper Sec. 3).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from nde.interpolants import (Gamma, InterpolantTask, checkerboard, linear, one_sided_linear,  # noqa: E402
                              ring_mixture, sample_ode, sample_sde, two_moons)
from nde.metrics import energy_mmd  # noqa: E402
from nde.training import Trainer, init_process_group, rank  # noqa: E402

EPS = (0.5, 1.0, 2.0)


def train(interp, sample_target, sample_base, steps, log_path):
    task = InterpolantTask(interp, sample_target, 2, sample_base=sample_base, fields=("b", "eta"), batch_size=500,
                           hidden=128, depth=3, lr=2e-3, lr_decay_every=max(1, steps // 3))
    trainer = Trainer(task, steps, ema_decay=0.999, log_path=log_path, log_every=50, progress=rank() == 0)
    trainer.fit()
    return task.field("b", trainer.ema), task.field("eta", trainer.ema)


def samplers(interp, b, eta, x_start, reverse, gen):
    """{name: (samples, path)} for the ODE and the SDE with each eps0 (forward, or backward if reverse)."""
    def score(t, x):
        return interp.score_from_denoiser(t, eta(t, x))

    out = {}
    times = torch.linspace(0, 1, 41)
    path = sample_ode(b, x_start, times=times, reverse=reverse, rtol=1e-4, atol=1e-4)
    out["ODE"] = (path[-1], path)
    for eps0 in EPS:
        path = sample_sde(b, score, x_start, lambda t, e=eps0: e * interp.latent_scale(t), steps=200,
                          direction="backward" if reverse else "forward", return_path=True, generator=gen)
        out[f"SDE eps0={eps0}"] = (path[-1], path[::5])
    return out


def plot(results, target, title, path=None) -> dict:
    """Print and return ``{sampler: energy MMD to target}``; with a ``path``, plot samples and paths there."""
    mmds = {name: energy_mmd(samples, target) for name, (samples, _) in results.items()}
    for name, mmd in mmds.items():
        print(f"{title:35s} {name:15s} energy MMD {mmd:.4f}")
    if path is not None:
        _draw(results, mmds, title, path)
    return mmds


def _draw(results, mmds, title, path):
    fig, axes = plt.subplots(2, len(results), figsize=(3.2 * len(results), 6.4))
    for col, (name, (samples, traj)) in enumerate(results.items()):
        axes[0, col].scatter(*samples.T, s=1, alpha=0.4)
        axes[0, col].set_title(f"{name}\nenergy MMD {mmds[name]:.4f}", fontsize=9)
        for k in range(min(40, traj.shape[1])):
            axes[1, col].plot(*traj[:, k].T, lw=0.6)
        for ax in axes[:, col]:
            ax.set_xlim(-5, 5)
            ax.set_ylim(-5, 5)
            ax.set_aspect("equal")
    axes[1, 0].set_ylabel("paths")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    """Train, sample and plot; returns ``{title: {sampler: energy MMD}}`` (empty on ranks > 0)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--quick", action="store_true", help="300 training steps (smoke run)")
    parser.add_argument("--out", default="examples/out")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (small tensors: 1 is fastest)")
    parser.add_argument("--samples", type=int, default=2000, help="samples per sampler for the metrics and plots")
    parser.add_argument("--no-plot", action="store_true", help="print the metrics only")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # the networks' initialisation (the trainer seeds each step's draws itself)
    steps = 300 if args.quick else args.steps
    init_process_group()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    n = args.samples
    mmds = {}

    def png(name):
        return None if args.no_plot else out / name

    # 1. Gaussian -> checkerboard (one-sided linear interpolant).
    interp = one_sided_linear()
    b, eta = train(interp, checkerboard, None, steps, out / "checkerboard_log.jsonl")
    if rank() == 0:
        with torch.no_grad():
            res = samplers(interp, b, eta, torch.randn(n, 2, generator=gen), False, gen)
        title = "N(0, I) -> checkerboard"
        mmds[title] = plot(res, checkerboard(n, gen), title, png("interpolant_checkerboard.png"))

    # 2. 8 Gaussians <-> two moons (two-sided linear interpolant, gamma = sqrt(t (1 - t))).
    eight = ring_mixture(8, radius=3.0, variance=0.05)
    interp = linear(Gamma("brownian", 1.0))
    b, eta = train(interp, two_moons, eight.sample, steps, out / "moons_log.jsonl")
    if rank() == 0:
        with torch.no_grad():
            fwd = samplers(interp, b, eta, eight.sample(n, gen), False, gen)
            bwd = samplers(interp, b, eta, two_moons(n, generator=gen), True, gen)
        title = "8 Gaussians -> two moons"
        mmds[title] = plot(fwd, two_moons(n, generator=gen), title, png("interpolant_8g_to_moons.png"))
        title = "two moons -> 8 Gaussians (backward)"
        mmds[title] = plot(bwd, eight.sample(n, gen), title, png("interpolant_moons_to_8g.png"))
        if not args.no_plot:
            print(f"plots in {out}/")
    return mmds


if __name__ == "__main__":
    main()
