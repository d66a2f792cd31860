"""Differentiable events: recover a bouncing ball's restitution and air drag from its bounce times.

A ball falls under gravity with quadratic air drag, dv/dt = −g − k·v·|v|, and bounces with
restitution e (v ← −e·v at impact). Each flight is one ``nde.odeint_event`` call: the solve ends where
the height crosses zero and returns the impact time together with its gradient (implicit function
theorem, docs/core.md "Events"). Given the first bounce times of a ball with unknown e and k, gradient
descent on the squared timing error recovers both.

    python examples/bouncing_ball.py            # CPU, about 10 s

Writes examples/out/bouncing_ball.png (true, initial and fitted heights, observed bounce times).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

import nde

OUT = Path(__file__).resolve().parent / "out"
GRAVITY = 9.81
TRUE_RESTITUTION, TRUE_DRAG = 0.8, 0.05
HEIGHT = 10.0


class Ball(nn.Module):
    """State (height, velocity); restitution and drag are positive through sigmoid and softplus."""

    def __init__(self, restitution: float, drag: float):
        super().__init__()
        self.raw_restitution = nn.Parameter(torch.logit(torch.tensor(restitution, dtype=torch.float64)))
        self.raw_drag = nn.Parameter(torch.log(torch.expm1(torch.tensor(drag, dtype=torch.float64))))

    @property
    def restitution(self) -> torch.Tensor:
        return torch.sigmoid(self.raw_restitution)

    @property
    def drag(self) -> torch.Tensor:
        return nn.functional.softplus(self.raw_drag)

    def forward(self, t, state):
        x, v = state
        return v, -GRAVITY - self.drag * v * v.abs()


def bounce(ball: Ball, n_bounces: int, tol: float = 1e-8) -> tuple[torch.Tensor, list]:
    """Impact times (n_bounces,) and the flights [(t_start, t_impact, (x0, v0))] from rest at HEIGHT."""
    t = torch.tensor(0.0, dtype=torch.float64)
    state = (torch.tensor(HEIGHT, dtype=torch.float64), torch.tensor(0.0, dtype=torch.float64))
    times, flights = [], []
    for _ in range(n_bounces):
        t_hit, (x, v) = nde.odeint_event(ball, state, t, event_fn=lambda t, s: s[0], rtol=tol, atol=tol)
        flights.append((t.detach(), t_hit.detach(), tuple(s.detach() for s in state)))
        times.append(t_hit)
        # the next flight starts on the ground, moving up at e·|v|; 1 nm above it, because an event
        # function that is zero at the start ends the solve there (torchdiffeq's rule)
        t, state = t_hit, (torch.full_like(x[-1], 1e-9), -ball.restitution * v[-1])
    return torch.stack(times), flights


def heights(ball: Ball, flights: list, points: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    """Height along every flight (for the plot)."""
    ts, xs = [], []
    with torch.no_grad():
        for t0, t1, state in flights:
            grid = torch.linspace(float(t0), float(t1), points, dtype=torch.float64)
            x, _ = nde.odeint(ball, state, grid, rtol=1e-8, atol=1e-8)
            ts.append(grid)
            xs.append(x)
    return torch.cat(ts), torch.cat(xs)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bounces", type=int, default=4)
    parser.add_argument("--iterations", type=int, default=30, help="L-BFGS iterations")
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)

    truth = Ball(TRUE_RESTITUTION, TRUE_DRAG)
    with torch.no_grad():
        observed, true_flights = bounce(truth, args.bounces)
    model = Ball(restitution=0.5, drag=0.3)
    with torch.no_grad():
        _, initial_flights = bounce(model, args.bounces)
    initial = Ball(restitution=0.5, drag=0.3)
    # two parameters and a smooth loss: L-BFGS with a line search converges in a few iterations
    optimiser = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=args.iterations,
                                  tolerance_grad=1e-10, tolerance_change=1e-14, line_search_fn="strong_wolfe")
    evaluations = []

    def closure():
        optimiser.zero_grad()
        predicted, _ = bounce(model, args.bounces)
        loss = (predicted - observed).pow(2).mean()
        loss.backward()
        evaluations.append(loss.item())
        print(f"evaluation {len(evaluations):3d}  loss {loss.item():.3e}  e {model.restitution.item():.4f}  "
              f"k {model.drag.item():.4f}")
        return loss
    optimiser.step(closure)
    with torch.no_grad():
        predicted, flights = bounce(model, args.bounces)
    result = {"restitution": model.restitution.item(), "drag": model.drag.item(),
              "max_time_error": (predicted - observed).abs().max().item()}
    print(f"fitted e = {result['restitution']:.4f} (true {TRUE_RESTITUTION}), "
          f"k = {result['drag']:.4f} (true {TRUE_DRAG}); bounce times within {result['max_time_error']:.1e} s")
    if not args.no_plot:
        _plot([(truth, true_flights, "-", "true"), (initial, initial_flights, ":", "initial guess"),
               (model, flights, "--", "fitted")], observed)
    return result


def _plot(curves: list, observed: torch.Tensor):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    OUT.mkdir(exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    for ball, flights, style, label in curves:
        t, x = heights(ball, flights)
        ax.plot(t, x, style, label=label)
    ax.plot(observed, torch.zeros_like(observed), "kx", label="observed bounces")
    ax.set_xlabel("t [s]")
    ax.set_ylabel("height [m]")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "bouncing_ball.png", dpi=120)
    print(f"wrote {OUT / 'bouncing_ball.png'}")


if __name__ == "__main__":
    main()
