"""One-step generators distilled from a multi-mode teacher with reverse-KL, forward-KL and JS.

The teacher is the exact diffusion model of an 8-Gaussian ring with unequal weights
(0.2 / 0.05 alternating), or with ``--teacher trained`` one learned here from mixture samples
(the velocity of the one-sided trigonometric interpolant, turned into a teacher by
``nde.distill.train_velocity_teacher``); its 50-step DDIM sampler is the multi-step baseline. For each
divergence, f-distill trains a generator, fake score and discriminator with the nde trainer
(checkpoints, EMA, metrics log, progress bar), then prints the mode-coverage table and plots
the samples.

    python examples/fdistill_mixture.py [--steps 6000] [--teacher exact|trained] [--quick] [--out examples/out]
                                        [--teacher-steps 3000] [--samples 4000]
    torchrun --nproc_per_node=2 examples/fdistill_mixture.py   # data-parallel training
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from nde.distill import DiffusionTeacher, FDistill, train_velocity_teacher  # noqa: E402
from nde.interpolants import ring_mixture  # noqa: E402
from nde.metrics import dropped_modes, energy_mmd, mode_mass_tv, mode_masses, near_mode_fraction  # noqa: E402
from nde.training import Trainer, init_process_group, rank  # noqa: E402

DIVERGENCES = ("reverse_kl", "forward_kl", "js")


def coverage(samples, mix, truth) -> dict:
    """The table's columns for one sampler: dropped modes, light-mode mass, mode TV, near-mode fraction, MMD."""
    masses = mode_masses(samples, mix.means)
    return {"dropped": dropped_modes(samples, mix.means, mix.weights), "light_mass": float(masses[1::2].sum()),
            "tv": mode_mass_tv(samples, mix.means, mix.weights),
            "near": near_mode_fraction(samples, mix.means, 0.05 ** 0.5), "mmd": energy_mmd(samples, truth)}


def coverage_row(name, row) -> str:
    return (f"| {name} | {row['dropped']} | {row['light_mass']:.3f} | {row['tv']:.3f} | {row['near']:.3f} | "
            f"{row['mmd']:.4f} |")


def main(argv=None) -> dict | None:
    """Distil, print the coverage table and plot; returns ``{sampler: coverage(...)}`` (None on ranks > 0)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--teacher", choices=("exact", "trained"), default="exact",
                        help="the exact mixture teacher, or one trained here (3000 steps, about 40 s)")
    parser.add_argument("--quick", action="store_true", help="300 training steps (smoke run)")
    parser.add_argument("--out", default="examples/out")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (small tensors: 1 is fastest)")
    parser.add_argument("--teacher-steps", type=int, default=None,
                        help="training steps of --teacher trained (default 3000, 100 with --quick)")
    parser.add_argument("--samples", type=int, default=4000, help="samples per sampler for the table and plot")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps = 300 if args.quick else args.steps
    init_process_group()
    out = Path(args.out)
    mix = ring_mixture(8, radius=3.0, variance=0.05, weights=torch.tensor([0.2, 0.05] * 4))
    if args.teacher == "exact":
        teacher, run_tag = DiffusionTeacher.from_mixture(mix), ""
    else:
        # its velocity field, not its denoiser: see docs/transport.md, part B3
        teacher_steps = args.teacher_steps if args.teacher_steps is not None else 100 if args.quick else 3000
        teacher = train_velocity_teacher(mix.sample, 2, teacher_steps, checkpoint_dir=out / "teacher",
                                         checkpoint_every=500, progress=rank() == 0)
        run_tag = f"_trained{teacher_steps}"  # students of another teacher must not resume from these checkpoints
    gen = torch.Generator().manual_seed(0)
    n = args.samples
    truth = mix.sample(n, gen)
    samples = {"teacher (50-step DDIM)": teacher.sample(n, 2, steps=50, generator=gen)}
    for div in DIVERGENCES:
        torch.manual_seed(0)
        # batch normaliser and LR decay: see docs/transport.md, "Why the one-step generator was 45x worse"
        task = FDistill(teacher, mix.sample, 2, divergence=div, lr=1e-3, normalizer="batch",
                        lr_decay_every=max(1, steps // 3))
        trainer = Trainer(task, steps, seed=0, ema_decay=0.99, checkpoint_dir=out / f"fdistill_{div}{run_tag}",
                          checkpoint_every=500, log_path=out / f"fdistill_{div}{run_tag}.jsonl", log_every=50,
                          progress=rank() == 0)
        trainer.fit()  # resumes from out/fdistill_<div>[_trained<teacher steps>]/last.pt if interrupted
        samples[f"{div} (1 step)"] = task.sample(n, gen, ema=trainer.ema)
    if rank() != 0:
        return
    print("| sampler | dropped modes | light-mode mass (true 0.200) | mode TV | near-mode frac | energy MMD |")
    print("|---|---|---|---|---|---|")
    table = {name: coverage(x, mix, truth) for name, x in samples.items()}
    for name, row in table.items():
        print(coverage_row(name, row))
    fig, axes = plt.subplots(1, len(samples), figsize=(3.2 * len(samples), 3.4))
    for ax, (name, x) in zip(axes, samples.items()):
        ax.scatter(*x.T, s=1, alpha=0.3)
        ax.scatter(*mix.means.T, c=["r" if w > 0.1 else "orange" for w in mix.weights], s=20, marker="x")
        ax.set_title(name, fontsize=9)
        ax.set_xlim(-4.5, 4.5)
        ax.set_ylim(-4.5, 4.5)
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(out / "fdistill_mixture.png", dpi=110)
    print(f"plot: {out / 'fdistill_mixture.png'}")
    return table


if __name__ == "__main__":
    main()
