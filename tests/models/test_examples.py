"""The examples' training loops on tiny settings: they run end to end and learn something."""
import importlib.util
from pathlib import Path

import pytest
import torch

from nde.interpolants import checkerboard, ring_mixture, two_moons
from nde.metrics import energy_mmd

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cde_spirals_learns_orientation():
    result = _load("cde_spirals").main(["--samples", "64", "--length", "20", "--epochs", "3", "--batch", "32",
                                        "--no-plot"])
    assert result["accuracy"] > 0.8


def test_hybrid_pendulum_loss_drops():
    module = _load("hybrid_pendulum")
    result = module.main(["--trajectories", "2", "--iterations", "15", "--no-plot"])
    assert result["final_loss"] < 0.5


def test_cnf_two_moons_beats_the_base_density():
    """The standard normal base has NLL ~2.6 nats on these moons; a few steps must improve on it."""
    result = _load("cnf_two_moons").main(["--iterations", "15", "--batch", "64", "--width", "16", "--no-plot"])
    assert result["test_nll"] < 2.6


def test_latent_sde_ou_trains_and_samples():
    pytest.importorskip("nde.sde", reason="the SDE core (nde.sde) has not landed")
    result = _load("latent_sde_ou").main(["--samples", "32", "--iterations", "8", "--batch", "16", "--dt", "0.1",
                                          "--no-plot"])
    assert result["final_neg_elbo"] < result["initial_neg_elbo"]


def test_bouncing_ball_recovers_restitution_and_drag():
    """Bounce times are differentiated through the event time (odeint_event); the fit recovers e and k."""
    result = _load("bouncing_ball").main(["--no-plot"])
    assert abs(result["restitution"] - 0.8) < 1e-3 and abs(result["drag"] - 0.05) < 1e-3
    assert result["max_time_error"] < 1e-4


def test_neural_ode_regularized_learns_digits_with_fewer_evaluations():
    """The flagship example: both classifiers beat chance (10 digits, ~10%) by far, and the regularised
    one needs fewer function evaluations at test time than the vanilla one."""
    result = _load("neural_ode_regularized").main(["--steps", "10", "--device", "cpu", "--no-plot"])
    vanilla, regularised = result["vanilla"], result["regularised"]
    assert vanilla["accuracy"] > 60 and regularised["accuracy"] > 60
    assert regularised["nfe"] < vanilla["nfe"]
    assert len(vanilla["history"]) == len(regularised["history"]) == 10


def test_fdistill_mixture_students_move_onto_the_ring(tmp_path):
    """The untrained one-step generators put every sample near the origin; 100 steps of each divergence
    must already halve the energy distance to the 8-mode ring of a point mass at the origin."""
    result = _load("fdistill_mixture").main(["--steps", "100", "--samples", "1000", "--out", str(tmp_path)])
    mix = ring_mixture(8, radius=3.0, variance=0.05, weights=torch.tensor([0.2, 0.05] * 4))
    point_mass = energy_mmd(torch.zeros(1000, 2), mix.sample(1000, torch.Generator().manual_seed(1)))
    assert result["teacher (50-step DDIM)"]["mmd"] < 0.05 * point_mass
    for div in ("reverse_kl", "forward_kl", "js"):
        assert result[f"{div} (1 step)"]["mmd"] < 0.5 * point_mass
    assert (tmp_path / "fdistill_mixture.png").exists()


def test_fdistill_mixture_trained_teacher_run_ignores_an_exact_teacher_run_in_the_same_out(tmp_path):
    """The students of a --teacher trained run are distilled from that teacher even when --out already holds
    the checkpoints of an --teacher exact run (they were resumed as if finished, and reported as its students)."""
    module = _load("fdistill_mixture")
    trained = ["--teacher", "trained", "--teacher-steps", "20", "--steps", "6", "--samples", "300"]
    alone = module.main([*trained, "--out", str(tmp_path / "alone")])
    module.main(["--steps", "6", "--samples", "300", "--out", str(tmp_path / "shared")])
    after_exact = module.main([*trained, "--out", str(tmp_path / "shared")])
    assert after_exact == alone


def test_interpolant_bridges_transport_towards_the_targets(tmp_path):
    """After 20 training steps every sampler (ODE and SDEs, both bridges, both directions) lands at less
    than half the energy distance between its start law and its target."""
    result = _load("interpolant_bridges").main(["--steps", "20", "--samples", "300", "--out", str(tmp_path),
                                                "--no-plot"])
    gen = torch.Generator().manual_seed(1)
    eight = ring_mixture(8, radius=3.0, variance=0.05)
    start_to_target = {
        "N(0, I) -> checkerboard": energy_mmd(torch.randn(300, 2, generator=gen), checkerboard(300, gen)),
        "8 Gaussians -> two moons": energy_mmd(eight.sample(300, gen), two_moons(300, generator=gen)),
        "two moons -> 8 Gaussians (backward)": energy_mmd(two_moons(300, generator=gen), eight.sample(300, gen)),
    }
    assert set(result) == set(start_to_target)
    for title, mmds in result.items():
        assert set(mmds) == {"ODE", "SDE eps0=0.5", "SDE eps0=1.0", "SDE eps0=2.0"}
        assert max(mmds.values()) < 0.5 * start_to_target[title], (title, mmds, start_to_target[title])
    assert not list(tmp_path.glob("*.png"))


def test_interpolant_bridges_is_reproducible(tmp_path):
    """Its printed figures do not depend on the global torch RNG (the networks were initialised from it, so two
    runs of the same command printed different energy distances)."""
    module = _load("interpolant_bridges")
    runs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        runs.append(module.main(["--steps", "2", "--samples", "50", "--out", str(tmp_path / str(seed)), "--no-plot"]))
    assert runs[0] == runs[1]


def test_diffusion_finetune_style_moves_samples_to_the_target_radius():
    """Denoising training beats predicting zero noise (loss E|eps|^2 / dim = 1), and fine-tuning through the
    adjoint sampler moves the samples' mean radius towards the target and cuts the style loss."""
    result = _load("diffusion_finetune_style").main(["--train-steps", "200", "--finetune-steps", "15"])
    denoising, style, radii = result["denoising_losses"], result["style_losses"], result["mean_radii"]
    assert len(denoising) == 200 and len(style) == len(radii) == 15
    assert sum(denoising[-50:]) / 50 < 0.6
    assert style[-1] < 0.5 * style[0]
    assert abs(radii[-1] - 4.0) < 0.5 * abs(radii[0] - 4.0)


def test_diffusion_finetune_style_prints_the_mean_of_the_losses_it_has(capsys):
    """With fewer than 100 training steps the printed 'last 100 mean' divided a shorter sum by 100."""
    result = _load("diffusion_finetune_style").main(["--train-steps", "20", "--finetune-steps", "1"])
    losses = result["denoising_losses"]
    assert f"last 20 mean {sum(losses) / len(losses):.3f}" in capsys.readouterr().out


def test_diffusion_optimize_noise_lands_every_sample_in_the_target_mode():
    """Mode 2 of the 8-mode ring of radius 3 is at (0, 3); after 16 normalised gradient steps on x_T all four
    samples lie within one mode standard deviation (sqrt(0.05)) of it, from a start spread over other modes."""
    result = _load("diffusion_optimize_noise").main(["--iterations", "16"])
    target = torch.tensor([0.0, 3.0], dtype=torch.float64)
    assert torch.allclose(result["target"], target, atol=1e-12)
    assert result["losses"][0] > 5.0
    assert (result["samples"] - target).norm(dim=-1).max() < 0.05 ** 0.5


@pytest.mark.parametrize("mode", ["-1", "8"])
def test_diffusion_optimize_noise_refuses_a_mode_the_ring_does_not_have(mode, capsys):
    """The ring has 8 modes: --target-mode outside 0..7 is a usage error naming the flag (8 was an IndexError,
    -1 silently took the last mode)."""
    with pytest.raises(SystemExit):
        _load("diffusion_optimize_noise").main(["--iterations", "1", "--target-mode", mode])
    assert "--target-mode must be in 0..7" in capsys.readouterr().err
