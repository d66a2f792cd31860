"""Generative transport benchmark: interpolant SDE vs ODE sampling, and f-distill mode coverage.

    python -m benchmarks.transport [--device cpu|cuda] [--quick] [--large] [--workers 2] [--seeds 3]
        [--parts ...] [--divergences js,...] [--fdistill-steps N]

A. Stochastic interpolant, N(0, I) -> checkerboard (one-sided linear interpolant). b and eta are
   learned once per seed and evaluated at two training budgets (the same fields for every sampler).
   Samplers: adaptive ODE (dopri5 on the nde core) with b, and the forward SDE with
   eps(t) = eps0 * alpha(t) for several eps0 (drift b + eps s = b - eps0 eta, finite up to t = 1),
   all from the same base draws. Metrics on n = blocks x block samples against fresh target samples:
   energy MMD (mean and standard error over blocks), the paired difference MMD(sampler) - MMD(ODE)
   on the same target blocks, the energy distance to the exact checkerboard law over all n samples
   (closed-form target terms, :func:`nde.metrics.energy_distance_exact`: no target-sample noise) and its
   paired difference to the ODE, the support fraction (samples on the black squares; the exact density is
   known) and the per-square mass TV.
A'. (``fields``) The learned b and eta of A against the exact fields of this interpolant (closed form,
   :class:`nde.interpolants.BoxUniformFields`), time by time: where the samplers' drifts are wrong.
A''. (``paper``) A and A' with the reference notebooks' field networks (ReLU 4x256 instead of SiLU 3x128),
   the last training budget only (results in transport_paper_net and transport_paper_net_fields).
B. f-distill, exact mixture teacher, reverse-KL (= VSD/DMD), forward-KL and JS, in two regimes:
   "ring": 8-Gaussian ring, weights 0.2 / 0.05 alternating, noise levels s in [0.02, 0.98], GAN term 1e-3;
   "hard": mode dropping made likely: 8 narrow modes (variance 0.01) with weights 0.22 / 0.03, small
   noise levels only (s <= 0.3) and no GAN term, where the score signal is local (research note 3.4).
   Metrics: dropped modes (mass < 20 % of the true weight), light-mode mass, mode-mass TV, near-mode
   fraction, energy MMD (blocks, standard error) of the one-step generator and of the teacher's 50-step DDIM.
   "light": the issue's target regime: weights 0.23 / 0.02 (light modes 11x lighter), noise levels s <= 0.5,
   GAN term 1e-3, 5x the training steps and 2x the evaluation blocks (results in transport_fdistill_light).
   "trained": the light regime distilled from a teacher trained here: the velocity b of the one-sided
   trigonometric interpolant, learned from data samples (DiffusionTeacher.from_velocity), instead of the exact
   mixture (results in transport_fdistill_trained).
   "light_gan": the light regime with GAN weight 0.1 instead of 1e-3 (FastGen's 1e-3 to 3e-3 on 3072 to 12288
   pixels, rescaled to d = 2 by sqrt(d_image / 2)) and the learning rate decayed x0.3 instead of x0.5 every
   steps/3; both chosen on seed 0 (docs/transport.md B4; results in transport_fdistill_light_gan).
   "light_gan_b1024": light_gan with batch 1024 instead of 256 and twice its training steps (the two levers that
   helped on seed 0 and on seeds 1-2; docs/transport.md B4; results in transport_fdistill_light_gan_b1024).
   "lighter_gan": light_gan on a mixture with light modes half as heavy (weights 0.24 / 0.01, light-mode mass
   0.04): whether reverse-KL's dropping persists with training where the modes are lighter (docs/transport.md
   B5; results in transport_fdistill_lighter_gan).
Every case runs for ``--seeds`` (>= 3) seeds; summary rows give mean and std over seeds.
``--large`` (for a GPU): more evaluation samples, longer training, 1000 SDE steps.
"""
from __future__ import annotations

import json
import statistics
import time
from contextlib import nullcontext
from multiprocessing import get_context

import torch

from benchmarks._common import parse_args, write_results

from nde.distill import DiffusionTeacher, FDistill, train_velocity_teacher
from nde.interpolants import (BoxUniformFields, InterpolantTask, checkerboard, checkerboard_cell_masses,
                              checkerboard_log_prob, one_sided_linear, ring_mixture, sample_ode, sample_sde)
from nde.metrics import UniformBoxes, dropped_modes, energy_distance_exact, energy_mmd, grid_mass_tv, mode_mass_tv, \
    mode_masses, near_mode_fraction, support_fraction

EPS_VALUES = (0.5, 1.0, 2.0, 4.0)
DIVERGENCES = ("reverse_kl", "forward_kl", "js")
# Settings: (default CPU, --quick smoke run, --large for a GPU).
INTERPOLANT = {
    "default": {"budgets": (1000, 3000), "blocks": 8, "block": 5000, "sde_steps": 250},
    "quick": {"budgets": (100, 200), "blocks": 2, "block": 500, "sde_steps": 50},
    "large": {"budgets": (1000, 3000, 10000), "blocks": 8, "block": 10000, "sde_steps": 1000},
}
FDISTILL_STEPS = {"default": 4000, "quick": 200, "large": 20000}
FDISTILL_EVAL = {"default": (4, 2500), "quick": (2, 500), "large": (8, 5000)}
# Per regime: the mixture, task overrides, a training-length multiplier of FDISTILL_STEPS, the evaluation size
# multiplier of FDISTILL_EVAL's block, the results file, and the teacher ("exact" mixture or "trained").
LIGHT = {"weights": (0.23, 0.02), "variance": 0.05, "task": {"s_max": 0.5}, "steps_x": 5, "block_x": 2}
LIGHT_GAN_TASK = {**LIGHT["task"], "gan_weight": 0.1, "lr_decay": 0.3}
REGIMES = {
    "ring": {"weights": (0.2, 0.05), "variance": 0.05, "task": {}, "steps_x": 1, "block_x": 1,
             "area": "transport_fdistill", "teacher": "exact"},
    "hard": {"weights": (0.22, 0.03), "variance": 0.01, "task": {"s_max": 0.3, "gan_weight": 0.0}, "steps_x": 1,
             "block_x": 1, "area": "transport_fdistill", "teacher": "exact"},
    "light": {**LIGHT, "area": "transport_fdistill_light", "teacher": "exact"},
    "trained": {**LIGHT, "area": "transport_fdistill_trained", "teacher": "trained"},
    "light_gan": {**LIGHT, "task": LIGHT_GAN_TASK, "area": "transport_fdistill_light_gan", "teacher": "exact"},
    "light_gan_b1024": {**LIGHT, "task": {**LIGHT_GAN_TASK, "batch_size": 1024}, "steps_x": 10,
                        "area": "transport_fdistill_light_gan_b1024", "teacher": "exact"},
    "lighter_gan": {**LIGHT, "weights": (0.24, 0.01), "task": LIGHT_GAN_TASK,
                    "area": "transport_fdistill_lighter_gan", "teacher": "exact"},
}
# The trained teacher: b of the one-sided trigonometric interpolant (MLP 3x128, batch 1000, Adam 2e-3 with
# StepLR(steps/3, 0.4), EMA 0.999), trained for this many steps.
TEACHER_STEPS = {"default": 3000, "quick": 100, "large": 10000}
# f-distill training settings shared by all divergences (see docs/transport.md, "Why one step is worse").
FDISTILL_TASK = {"batch_size": 256, "lr": 1e-3, "normalizer": "batch"}


def block_mmds(samples: torch.Tensor, target: torch.Tensor, blocks: int) -> list[float]:
    """Energy MMD of each of ``blocks`` disjoint sample blocks against the matching target block."""
    return [energy_mmd(a, b) for a, b in zip(samples.chunk(blocks), target.chunk(blocks))]


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean."""
    return statistics.mean(values), statistics.stdev(values) / len(values) ** 0.5


CHECKERBOARD = UniformBoxes.checkerboard()


def _interpolant_rows(seed, budget, name, samples, target, blocks, ode):
    """One sampler's row; ``ode``: the ODE's (block MMDs, exact energy distance) for the paired differences."""
    mmds = block_mmds(samples, target, blocks)
    mmd, mmd_se = mean_se(mmds)
    diff, diff_se = mean_se([a - b for a, b in zip(mmds, ode[0])]) if ode else (None, None)
    exact = energy_distance_exact(samples, CHECKERBOARD)
    row = {"part": "interpolant", "train_steps": budget, "seed": seed, "sampler": name,
           "energy_mmd": mmd, "energy_mmd_se": mmd_se, "minus_ode": diff, "minus_ode_se": diff_se,
           "energy_exact": exact, "minus_ode_exact": exact - ode[1] if ode else None,
           "support_frac": support_fraction(samples, checkerboard_log_prob),
           "square_tv": grid_mass_tv(samples, checkerboard_cell_masses(4).to(samples), -4.0, 4.0)}
    return row, (mmds, exact)


# Field networks of part A: "small" (SiLU 3x128, both budgets) and "paper" (ReLU 4x256 as in the reference
# notebooks; the paper used 4x512 ReLU), which costs about 4x per step, so only the last budget.
NETS = {"small": {"hidden": 128, "depth": 3, "activation": "silu"},
        "paper": {"hidden": 256, "depth": 4, "activation": "relu"}}
PARTS = {"small": ("interpolant", "fields"), "paper": ("paper_net/samplers", "paper_net/fields")}


def _fields_trainer(seed: int, size: str, device: str, net: str):
    """The interpolant, the task learning b and eta (network ``NETS[net]``) and its trainer, for one seed."""
    from nde.training import Trainer

    torch.manual_seed(seed)
    interp = one_sided_linear()
    task = InterpolantTask(interp, checkerboard, 2, fields=("b", "eta"), batch_size=1000, lr=2e-3,
                           lr_decay_every=1000, lr_decay=0.4, device=device, **NETS[net])
    budgets = INTERPOLANT[size]["budgets"] if net == "small" else INTERPOLANT[size]["budgets"][-1:]
    return interp, task, Trainer(task, max(budgets), seed=seed, ema_decay=0.999), budgets


def interpolant_case(seed: int, size: str, device: str, net: str = "small") -> list[dict]:
    """Learn b and eta for one seed; at each training budget, sample by the ODE and the SDEs and score.
    With ``net="paper"`` also the learned fields' errors (as :func:`fields_case`)."""
    cfg = INTERPOLANT[size]
    interp, task, trainer, budgets = _fields_trainer(seed, size, device, net)
    part = PARTS[net][0]
    n, blocks = cfg["blocks"] * cfg["block"], cfg["blocks"]
    gen = torch.Generator().manual_seed(1000 + seed)
    target, reference = checkerboard(n, gen).to(device), checkerboard(n, gen).to(device)
    x0 = torch.randn(n, 2, generator=gen).to(device)
    rows, start = [], time.perf_counter()
    for budget in budgets:
        trainer.fit(stop_after=budget)
        train_s = time.perf_counter() - start
        b, eta = task.field("b", trainer.ema), task.field("eta", trainer.ema)

        def score(t, x, eta=eta):  # s = -eta / alpha; eps(t) s = -eps0 eta stays finite as alpha -> 0
            return interp.score_from_denoiser(t, eta(t, x))

        def scored(name, samples, ode):
            row, scores = _interpolant_rows(seed, budget, name, samples, target, blocks, ode)
            return {**row, "part": part}, scores

        with torch.no_grad():
            row, _ = scored("reference (2nd target sample)", reference, None)
            rows.append({**row, "train_s": train_s})
            row, ode = scored("ODE dopri5", sample_ode(b, x0, rtol=1e-4, atol=1e-4), None)
            rows.append(row)
            by_eps = {}
            for eps0 in EPS_VALUES:
                x1 = _sde_samples(interp, b, score, x0, eps0, cfg["sde_steps"], seed)
                by_eps[eps0] = scored(f"SDE eps0={eps0}", x1, ode)[0]
                rows.append(by_eps[eps0])
            chosen = _validated_eps(interp, b, score, seed, n // 4, device, cfg["sde_steps"])
            rows.append({**by_eps[chosen], "sampler": "SDE eps0 chosen on a validation draw", "eps0_chosen": chosen})
            if budget == max(budgets):  # Euler-Maruyama bias check: twice the steps for one eps0
                x1 = _sde_samples(interp, b, score, x0, 1.0, 2 * cfg["sde_steps"], seed)
                rows.append(scored(f"SDE eps0=1.0, {2 * cfg['sde_steps']} steps", x1, ode)[0])
        start = time.perf_counter() - train_s
    if net != "small":
        rows += _field_rows(seed, budgets[-1], interp, task, trainer, n, device, PARTS[net][1])
    return rows


def _sde_samples(interp, b, score, x0: torch.Tensor, eps0: float, steps: int, noise_seed: int) -> torch.Tensor:
    """The forward interpolant SDE with eps(t) = eps0 * alpha(t) from ``x0``, ``steps`` Euler-Maruyama steps."""
    return sample_sde(b, score, x0, lambda t: eps0 * interp.alpha(t), steps=steps,
                      generator=torch.Generator().manual_seed(noise_seed))


def _validated_eps(interp, b, score, seed: int, n: int, device: str, steps: int) -> float:
    """The eps0 of EPS_VALUES whose SDE samples from a separate draw (other base points, other noise) lie
    closest to the checkerboard in exact energy distance: "the best eps" chosen without looking at the
    evaluation samples, so that its evaluation row is not biased towards the SDE."""
    gen = torch.Generator().manual_seed(5000 + seed)
    x0 = torch.randn(n, 2, generator=gen).to(device)
    distances = {}
    for eps0 in EPS_VALUES:
        x1 = _sde_samples(interp, b, score, x0, eps0, steps, 6000 + seed)
        distances[eps0] = energy_distance_exact(x1, CHECKERBOARD)
    return min(distances, key=distances.get)


FIELD_TIMES = (0.05, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.98)


def fields_case(seed: int, size: str, device: str) -> list[dict]:
    """Root-mean-square errors of the learned b and eta against the exact fields (:class:`BoxUniformFields`)
    at fixed times, on x_t drawn from the interpolant; the same training as :func:`interpolant_case`."""
    cfg = INTERPOLANT[size]
    interp, task, trainer, budgets = _fields_trainer(seed, size, device, "small")
    rows = []
    for budget in budgets:
        trainer.fit(stop_after=budget)
        rows += _field_rows(seed, budget, interp, task, trainer, cfg["blocks"] * cfg["block"], device, "fields")
    return rows


def _field_rows(seed, budget, interp, task, trainer, n, device, part) -> list[dict]:
    """One row per time of FIELD_TIMES: rms of the exact and of the error of the learned (EMA) b and eta."""
    exact, rows = BoxUniformFields.checkerboard(), []
    gen = torch.Generator().manual_seed(3000 + seed)
    for t0 in FIELD_TIMES:
        x0, x1 = torch.randn(n, 2, generator=gen, dtype=torch.float64), checkerboard(n, gen, torch.float64)
        t = torch.full((n,), t0, dtype=torch.float64)
        xt = interp.x_t(t, x0, x1)
        eta_true, b_true = exact.denoiser(t, xt), exact.velocity(t, xt)
        with torch.no_grad():
            learned = {k: task.field(k, trainer.ema)(t.float().to(device), xt.float().to(device)).double().cpu()
                       for k in ("b", "eta")}

        def rms(v):
            return float(v.square().sum(1).mean().sqrt())

        err_b, err_eta = rms(learned["b"] - b_true), rms(learned["eta"] - eta_true)
        rows.append({"part": part, "train_steps": budget, "seed": seed, "sampler": f"t={t0}",
                     "rms_b_error": err_b, "rms_b": rms(b_true), "rms_eta_error": err_eta, "rms_eta": rms(eta_true),
                     "eps_star_over_alpha": err_b / err_eta})
    return rows


def fdistill_steps(size: str, regime: str, override: int | None = None) -> int:
    """Training steps of an f-distill case: ``override``, else the size's default times the regime's multiplier."""
    return override if override is not None else FDISTILL_STEPS[size] * REGIMES[regime]["steps_x"]


def fdistill_case(divergence: str, seed: int, size: str, device: str, regime: str,
                  steps: int | None = None) -> list[dict]:
    """Distil the regime's teacher with one divergence and one seed (``steps``: see :func:`fdistill_steps`); score
    it."""
    from nde.training import Trainer

    spec = REGIMES[regime]
    mix = ring_mixture(8, radius=3.0, variance=spec["variance"], weights=torch.tensor(spec["weights"] * 4))
    teacher, teacher_s = _teacher(mix, spec["teacher"], seed, size, device)
    torch.manual_seed(seed)  # the same student initialisation whichever teacher
    steps = fdistill_steps(size, regime, steps)
    task = FDistill(teacher, mix.sample, 2, divergence=divergence, device=device, lr_decay_every=steps // 3,
                    **{**FDISTILL_TASK, **spec["task"]})
    start = time.perf_counter()
    trainer = Trainer(task, steps, seed=seed, ema_decay=0.99)
    trainer.fit()
    train_s = time.perf_counter() - start
    blocks, block = FDISTILL_EVAL[size]
    block *= spec["block_x"]
    gen = torch.Generator().manual_seed(2000 + seed)
    truth = mix.sample(blocks * block, gen).to(device)
    one_step = task.sample(blocks * block, gen, ema=trainer.ema)
    teacher_50 = teacher.sample(blocks * block, 2, steps=50, generator=gen).to(device)
    reference = mix.sample(blocks * block, gen).to(device)
    means, weights = mix.means.to(device), mix.weights.to(device)
    mmd, mmd_se = mean_se(block_mmds(one_step, truth, blocks))
    teacher_mmd, teacher_se = mean_se(block_mmds(teacher_50, truth, blocks))
    masses, low_weight = mode_masses(one_step, means), weights < weights.max()
    return [{"part": f"fdistill/{regime}", "seed": seed, "sampler": f"{divergence} one-step",
             "dropped_modes": dropped_modes(one_step, means, weights),
             "dropped_low_weight": int(((masses < 0.2 * weights) & low_weight).sum()),
             "light_mode_mass": float(mode_masses(one_step, means)[1::2].sum()),
             "mode_tv": mode_mass_tv(one_step, means, weights),
             "near_mode_frac": near_mode_fraction(one_step, means, spec["variance"] ** 0.5),
             "energy_mmd": mmd, "energy_mmd_se": mmd_se, "teacher50_mmd": teacher_mmd, "teacher50_se": teacher_se,
             "reference_mmd": mean_se(block_mmds(reference, truth, blocks))[0],
             "teacher50_near_mode": near_mode_fraction(teacher_50, means, spec["variance"] ** 0.5),
             **_exact_distances(mix, one_step, teacher_50, reference),
             "train_s": train_s, "teacher_train_s": teacher_s}]


def _exact_distances(mix, one_step, teacher_50, reference) -> dict:
    """Energy distances to the exact mixture (closed-form target terms; no target-sample noise) of the one-step
    generator, the teacher's 50-step sampler and a true sample (the metric's floor at this sample size)."""
    mix64 = mix.to(torch.float64)
    return {name: energy_distance_exact(x.cpu(), mix64)
            for name, x in (("energy_exact", one_step), ("teacher50_exact", teacher_50), ("reference_exact", reference))}


def _teacher(mix, kind: str, seed: int, size: str, device: str) -> tuple[DiffusionTeacher, float]:
    """The exact mixture teacher, or one whose velocity field was learned from ``mix.sample``; (teacher,
    training seconds)."""
    if kind == "exact":
        return DiffusionTeacher.from_mixture(mix), 0.0
    start = time.perf_counter()
    teacher = train_velocity_teacher(mix.sample, 2, TEACHER_STEPS[size], seed=seed, device=device)
    return teacher, time.perf_counter() - start


def _run(job):
    torch.set_num_threads(1)
    kind, args = job
    return {"interpolant": interpolant_case, "fields": fields_case, "fdistill": fdistill_case}[kind](*args)


SUMMARY_KEYS = ("rms_b_error", "rms_eta_error", "eps_star_over_alpha", "energy_mmd", "minus_ode", "energy_exact",
                "minus_ode_exact", "support_frac",
                "square_tv", "dropped_modes", "dropped_low_weight", "light_mode_mass", "mode_tv",
                "near_mode_frac", "teacher50_mmd", "reference_mmd", "teacher50_near_mode", "teacher50_exact",
                "reference_exact", "eps0_chosen")


def _summaries(rows: list[dict]) -> list[dict]:
    """"mean ± std" over seeds of every metric, per (part, budget, sampler); for SDE rows also the number
    of seeds where the SDE's paired MMD difference to the ODE is below -2 (better) or above +2 (worse)
    standard errors, the number of seeds where its exact energy distance is below the ODE's, and the t
    statistic over seeds of that paired difference (mean / standard error)."""
    out = []
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["part"], r.get("train_steps"), r["sampler"]), []).append(r)
    for (part, budget, sampler), group in groups.items():
        summary = {"part": part, "seed": f"mean of {len(group)}", "sampler": sampler}
        if budget is not None:
            summary["train_steps"] = budget
        for key in SUMMARY_KEYS:
            values = [float(r[key]) for r in group if r.get(key) is not None]
            if values:
                std = statistics.stdev(values) if len(values) > 1 else 0.0
                partial = f" (of {len(values)})" if len(values) != len(group) else ""   # e.g. merged older runs
                summary[key] = f"{statistics.mean(values):.4g} ± {std:.2g}{partial}"
        if group[0].get("minus_ode") is not None:
            summary["sde_better_2se"] = sum(r["minus_ode"] < -2 * r["minus_ode_se"] for r in group)
            summary["sde_worse_2se"] = sum(r["minus_ode"] > 2 * r["minus_ode_se"] for r in group)
        exact_diffs = [r["minus_ode_exact"] for r in group if r.get("minus_ode_exact") is not None]
        if len(exact_diffs) > 1:
            summary["sde_better_exact"] = sum(d < 0 for d in exact_diffs)
            summary["minus_ode_exact_t"] = statistics.mean(exact_diffs) / (
                statistics.stdev(exact_diffs) / len(exact_diffs) ** 0.5)
        out.append(summary)
    return out


NOTES = {
    "transport_paper_net": (
        "A with the reference notebooks' network: b and eta are each a ReLU MLP 4x256 (instead of SiLU 3x128), "
        "one training budget; otherwise as described below."),
    "transport_fields": (
        "A': the learned fields of part A (same training, EMA weights) against the exact b and eta of the one-sided "
        "linear interpolant N(0,I) -> checkerboard (BoxUniformFields), on x_t drawn from the interpolant at each t. "
        "For this path b = (x - eta) / t, so b's error is eta's error / t. eps_star_over_alpha = |db| / |deta|: "
        "the pointwise minimiser eps*(t) = |db| / |ds| of the Girsanov bound of Thm 2.4, divided by alpha(t)."),
    "transport": (
        "A: one-sided linear interpolant N(0,I) -> checkerboard; b and eta learned together (MLP 3x128, batch 1000, "
        "Adam 2e-3 with StepLR(1000, 0.4), EMA 0.999 with warm-up), evaluated after train_steps. ODE: dopri5 "
        "rtol=atol=1e-4 on the nde core; SDE: eps(t) = eps0 * alpha(t), {sde_steps} Euler-Maruyama steps on the nde "
        "SDE core; all samplers from the same {n} base draws. energy_mmd: mean over {blocks} blocks of {block} "
        "samples vs fresh target blocks (_se: standard error); minus_ode: paired difference to the ODE on the same "
        "blocks (negative = sampler better); energy_exact: energy distance of all {n} samples to the exact checkerboard "
        "law (closed-form target terms, unbiased U-statistic; no target sample), minus_ode_exact its paired difference "
        "to the ODE; support_frac: fraction on the black squares (true 1); square_tv: "
        "per-square mass TV (4x4 grid, outside mass included; true 0, sampling floor ~ the reference row). "
        "Summary rows: mean and _std over seeds; sde_better_2se / sde_worse_2se count seeds whose paired difference "
        "is beyond 2 standard errors; sde_better_exact counts seeds with minus_ode_exact < 0, minus_ode_exact_t is "
        "its mean over its standard error across seeds. 'SDE eps0 chosen on a validation draw': per seed, the eps0 "
        "whose SDE samples from other base points and noise ({n_val} of them) are closest to the checkerboard in "
        "exact energy distance, scored on the evaluation samples above (the target's 'best eps' without "
        "selection bias)."),
    "transport_fdistill": (
        "B: f-distill with the exact mixture teacher, {steps} steps (generator every 5th), batch 256, Adam 1e-3 "
        "(0, 0.99) decayed x0.5 every steps/3, batch normaliser of the update direction, EMA 0.99. ring: 8 modes "
        "radius 3, variance 0.05, weights 0.2/0.05, s in [0.02, 0.98], GAN weight 1e-3. hard: variance 0.01, weights "
        "0.22/0.03, s in [0.02, 0.3], no GAN term. dropped = mode mass < 20% of its weight (dropped_low_weight: "
        "among the 4 light modes); light_mode_mass true "
        "value 4 x light weight (0.2 ring, 0.12 hard); near_mode_frac = within 3 std of a mode; energy_mmd, "
        "teacher50_mmd (50-step DDIM, exact denoiser), reference_mmd (a 2nd true sample): mean over {blocks} blocks "
        "of {block}."),
    "transport_fdistill_light": (
        "B2: f-distill, exact mixture teacher, the 'light' regime: 8 modes on a ring of radius 3, variance 0.05, "
        "weights 0.23 / 0.02 alternating (true light-mode mass 0.08), noise levels s in [0.02, 0.5], GAN weight 1e-3; "
        "{steps} steps (generator every 5th), batch 256, Adam 1e-3 (0, 0.99) decayed x0.5 every steps/3, batch "
        "normaliser, EMA 0.99. Metrics as in B, on {blocks} blocks of {block}; teacher50 = 50-step DDIM with the "
        "exact denoiser; at this sample size its MMD is at the estimator's floor (see reference_mmd), so a ratio to it "
        "is not meaningful."),
    "transport_fdistill_light_gan": (
        "B4: the light regime of B2 with GAN weight 0.1 instead of 1e-3 (the generator's non-saturating GAN term "
        "softplus(-D(x_s)), D the discriminator that also estimates r) and Adam 1e-3 decayed x0.3 (not x0.5) every "
        "steps/3; everything else as in B2: {steps} steps (generator every 5th), batch 256, betas (0, 0.99), batch "
        "normaliser, EMA 0.99; metrics as in B, on {blocks} blocks of {block}. Settings chosen on seed 0."),
    "transport_fdistill_light_gan_b1024": (
        "B4, larger batch: the light_gan regime with batch 1024 instead of 256 and {steps} steps (generator every "
        "5th; Adam 1e-3 decayed x0.3 every steps/3), everything else as there; metrics as in B, on {blocks} blocks "
        "of {block}. Batch 1024 chosen on seed 0 (100000 steps, JS: 3.1e-4 against 4.0e-4 at batch 256)."),
    "transport_fdistill_lighter_gan": (
        "B5: the light_gan regime of B4 on a mixture with lighter light modes: weights 0.24 / 0.01 alternating "
        "(true light-mode mass 0.04), variance 0.05, s in [0.02, 0.5], GAN weight 0.1, {steps} steps (generator every "
        "5th), batch 256, Adam 1e-3 (0, 0.99) decayed x0.3 every steps/3, batch normaliser, EMA 0.99; metrics as in "
        "B, on {blocks} blocks of {block}."),
    "transport_fdistill_trained": (
        "B3: f-distill from a trained teacher, the 'light' mixture and task settings of B2 ({steps} steps, {blocks} "
        "blocks of {block}). Teacher: nde.distill.train_velocity_teacher, the velocity b of the one-sided "
        "trigonometric interpolant, learned from mixture samples for {teacher_steps} steps (MLP 3x128, batch 1000, "
        "Adam 2e-3, StepLR(steps/3, 0.4), EMA 0.999); teacher50 = its 50-step DDIM. teacher_train_s: the teacher's "
        "training time (not included in train_s)."),
}


EXACT_NOTE = (" energy_exact, teacher50_exact, reference_exact: energy distance of all evaluation samples of the "
              "one-step generator, the teacher's 50-step sampler and a 2nd true sample to the exact mixture "
              "(closed-form target terms, nde.metrics.energy_distance_exact; no target-sample noise).")


def _rows_from_log(path: str) -> list[list[dict]]:
    """The per-job row lists printed by a run (lines starting with 'rows: ')."""
    with open(path) as log:
        return [json.loads(line[len("rows: "):]) for line in log if line.startswith("rows: ")]


def _in_parts(part: str, names: tuple[str, ...]) -> bool:
    """Whether a row's ``part`` is one of ``names`` or below one ("paper_net/samplers/..."), so that
    "fdistill/light_gan" is not taken for "fdistill/light"."""
    return any(part == name or part.startswith(name + "/") for name in names)


def main(argv=None) -> None:
    args = parse_args(__doc__.splitlines()[0], argv, extra=lambda p: (
        p.add_argument("--workers", type=int, default=2), p.add_argument("--seeds", type=int, default=3),
        p.add_argument("--first-seed", type=int, default=0, help="run seeds first-seed .. first-seed + seeds - 1"),
        p.add_argument("--large", action="store_true", help="GPU-sized settings (more samples and steps)"),
        p.add_argument("--parts", default="interpolant,fields,paper,ring,hard,light,trained,light_gan",
                       help="comma list of interpolant, fields, paper (part A and A' with the paper's network), "
                            "ring, hard, light, trained, light_gan, light_gan_b1024 (not in the default: twice "
                            "light_gan's steps at four times its batch), lighter_gan (not in the default: "
                            "light_gan with light modes of weight 0.01)"),
        p.add_argument("--divergences", default=",".join(DIVERGENCES), help="f-distill parts: comma list of "
                       + ", ".join(DIVERGENCES)),
        p.add_argument("--fdistill-steps", type=int, default=None, help="f-distill parts: training steps "
                       "(default: the size's, times the regime's multiplier)"),
        p.add_argument("--from-log", default=None, help="rebuild the result files from the 'rows:' lines that a "
                       "(possibly interrupted) run printed, instead of running")))
    size = "quick" if args.quick else "large" if args.large else "default"
    parts = args.parts.split(",")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    jobs = [(kind, (s, size, args.device)) for kind in ("interpolant", "fields") if kind in parts
            for s in seeds]
    jobs += [("interpolant", (s, size, args.device, "paper")) for s in seeds if "paper" in parts]
    if args.fdistill_steps is not None and args.fdistill_steps < 1:
        raise SystemExit(f"--fdistill-steps must be a positive number of steps, got {args.fdistill_steps}")
    divergences = args.divergences.split(",")
    unknown = set(divergences) - set(DIVERGENCES)
    if unknown:
        raise SystemExit(f"--divergences: unknown {sorted(unknown)}; choose from {DIVERGENCES}")
    jobs += [("fdistill", (d, s, size, args.device, regime, args.fdistill_steps)) for s in seeds
             for regime in REGIMES if regime in parts for d in DIVERGENCES if d in divergences]
    results = _rows_from_log(args.from_log) if args.from_log else []
    if args.from_log:
        jobs = []
    parallel = args.workers > 1 and args.device == "cpu" and jobs
    with get_context("spawn").Pool(args.workers) if parallel else nullcontext() as pool:
        for result in (pool.imap(_run, jobs) if pool is not None else map(_run, jobs)):
            print("rows:", json.dumps(result), flush=True)  # partial results survive an interrupted run
            results.append(result)
    rows = [row for result in results for row in result]
    cfg = INTERPOLANT[size]
    n_eval = cfg["blocks"] * cfg["block"]
    blocks, block = FDISTILL_EVAL[size]
    notes = {"transport_fields": NOTES["transport_fields"],
             "transport": NOTES["transport"].format(n=n_eval, n_val=n_eval // 4, **cfg),
             "transport_paper_net": NOTES["transport_paper_net"] + " " + NOTES["transport"].format(
                 n=n_eval, n_val=n_eval // 4, **cfg),
             "transport_paper_net_fields": NOTES["transport_paper_net"] + " " + NOTES["transport_fields"]}
    areas = {"transport": ("interpolant",), "transport_fields": ("fields",),
             "transport_paper_net": ("paper_net/samplers",), "transport_paper_net_fields": ("paper_net/fields",)}
    for name, spec in REGIMES.items():
        areas[spec["area"]] = areas.get(spec["area"], ()) + (f"fdistill/{name}",)
        notes[spec["area"]] = NOTES[spec["area"]].format(
            steps=fdistill_steps(size, name, args.fdistill_steps), blocks=blocks, block=block * spec["block_x"],
            teacher_steps=TEACHER_STEPS[size]) + EXACT_NOTE
    suffix = "_large" if size == "large" else ""  # --large results sit beside the default-size ones
    for area, prefixes in areas.items():
        part_rows = [r for r in rows if _in_parts(r["part"], prefixes)]
        if part_rows:
            print(write_results(area + suffix, args.device, part_rows + _summaries(part_rows), notes[area]).read_text())


if __name__ == "__main__":
    main()
