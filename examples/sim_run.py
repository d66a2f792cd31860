"""Shared driver of the ``examples/sim_<task>.py`` scripts: optimise a task's action
sequence with Adam and FluidLab's expanding loss window, then write the loss curve (PNG) and
an animation of the optimised trajectory (GIF) to ``examples/out/`` (or ``--out``)."""
import argparse
import time
from pathlib import Path

import imageio.v2 as imageio
import matplotlib
import torch
from tqdm import tqdm

from sim.optim import ExpandingWindow, optimize_actions

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"


def parse(description: str, argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--large", action="store_true", help="large config (meant for a GPU)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda with --large if available)")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--lr", type=float, default=None, help="Adam learning rate (default: the task's)")
    parser.add_argument("--no-window", action="store_true", help="optimise the full-horizon loss throughout")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(OUT), help="folder of the loss curve and the animation")
    return parser.parse_args(argv)


def run(name: str, env_class, small_config, large_config, description: str, argv=None) -> dict:
    """Build the env, optimise, write ``out/sim_<name>_loss.png`` and ``out/sim_<name>.gif``;
    returns ``{"result": OptimResult, "env": env}`` (the env holds the animated trajectory)."""
    args = parse(description, argv)
    device = args.device or ("cuda" if args.large and torch.cuda.is_available() else "cpu")
    env = env_class(large_config if args.large else small_config, device=device)
    env.reset(seed=args.seed)
    window = None if args.no_window else ExpandingWindow(env.horizon, patience=3)
    bar = tqdm(total=args.iterations, desc=name)

    def progress(it, loss, window_end):
        bar.set_postfix(loss=f"{loss:.4g}", window=window_end)
        bar.update(1)

    lr = env.default_lr if args.lr is None else args.lr   # an explicit --lr 0 is refused, not replaced
    start = time.perf_counter()
    result = optimize_actions(env, iterations=args.iterations, lr=lr, window=window, progress=progress)
    bar.close()
    print(f"{name}: loss {result.initial_loss:.4g} -> {result.best_loss:.4g} (ratio {result.ratio:.3f}) "
          f"in {len(result.losses)} iterations, {time.perf_counter() - start:.1f} s on {device}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _plot(result.losses, out / f"sim_{name}_loss.png", name)
    frames = _animate(env, result.actions, args.seed)
    imageio.mimsave(out / f"sim_{name}.gif", frames, duration=0.08, loop=0)
    print(f"wrote {out / f'sim_{name}_loss.png'} and {out / f'sim_{name}.gif'}")
    return {"result": result, "env": env}


def _plot(losses, path, name):
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.semilogy(losses)
    ax.set_xlabel("Adam iteration")
    ax.set_ylabel("full-horizon task loss")
    ax.set_title(name)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _animate(env, actions, seed):
    env.reset(seed=seed)  # the initial state the actions were optimised from
    frames = [env.render()]
    for action in actions:
        env.step(action)
        frames.append(env.render())
    return frames
