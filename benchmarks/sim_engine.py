"""Benchmark of the Warp MLS-MPM engine (sim.engine), side by side with Taichi.

Rows:
1. ``forward``: particle-steps/s of a water block (the mpm88 / mpm3d setup: J-based liquid,
   quadratic B-splines, APIC, slip walls) in 2-D and 3-D at several sizes, for sim.engine
   and for a Taichi MLS-MPM kernel written here in the style of Taichi's own
   ``examples/simulation/mpm88.py`` / ``mpm3d.py`` (same particles, grid, dt, substeps and
   constitutive law; the examples themselves run a GUI loop at import and cannot be timed).
2. ``backward``: backward / forward time ratio of a rollout with store-everything and with
   segment checkpointing (backward includes the recompute).
3. ``memory``: bytes of per-substep buffers (values + adjoints) and checkpoints vs horizon,
   storing everything vs checkpointing with ``suggest_segment_length``.

Run: ``python -m benchmarks.sim_engine [--device cpu|cuda] [--quick]``.
On CPU, Warp kernels run single-threaded, so Taichi is limited to one thread too
(``--taichi-threads`` changes that).
"""
from __future__ import annotations

import os
import time

import numpy as np
import warp as wp

from benchmarks._common import parse_args, time_calls, write_results
from sim.checkpoint import suggest_segment_length
from sim.engine import WATER, MPMConfig, MPMSimulator, ParticleSet

wp.config.quiet = True

# (dim, n_grid, n_particles, substeps, dt): mpm88 is (2, 128, 8192, ., 2e-4); mpm3d (3, 32, 8192, ., 4e-4)
FORWARD_SIZES = {
    "cpu": [(2, 64, 2048, 20, 2e-4), (2, 128, 8192, 20, 2e-4), (2, 256, 32768, 10, 1e-4),
            (3, 32, 8192, 10, 4e-4), (3, 64, 65536, 5, 2e-4)],
    "cuda": [(2, 128, 8192, 50, 2e-4), (2, 256, 32768, 50, 1e-4), (2, 512, 262144, 50, 5e-5),
             (3, 32, 8192, 50, 4e-4), (3, 64, 100000, 50, 2e-4), (3, 128, 1000000, 25, 8e-5)],
}
QUICK_FORWARD = [(2, 64, 2048, 10, 2e-4), (3, 32, 8192, 5, 4e-4)]
# (dim, n_grid, n_particles, substeps)
BACKWARD_SIZES = [(2, 64, 2048, 100), (2, 128, 8192, 40), (3, 32, 8192, 20)]
MEMORY_HORIZONS = [50, 100, 200, 400, 800]


def water_block(dim: int, n: int, seed: int = 0) -> np.ndarray:
    """``n`` particles uniformly in [0.2, 0.6]^dim (mpm88's initial block)."""
    return np.random.default_rng(seed).uniform(0.2, 0.6, size=(n, dim))


def random_velocity(dim: int, n: int, seed: int = 1) -> np.ndarray:
    """Initial velocities (std 0.3): the block compresses and stretches, so pressure acts."""
    return 0.3 * np.random.default_rng(seed).standard_normal((n, dim))


def warp_sim(dim, n_grid, n, substeps, dt, device, segment=None, dtype="float32"):
    cfg = MPMConfig(dim=dim, n_grid=n_grid, dt=dt, substeps_per_step=substeps, max_steps=1,
                    dtype=dtype, device=device, segment_substeps=segment)
    particles = ParticleSet(x=water_block(dim, n), v=random_velocity(dim, n), material=np.zeros(n, int))
    return MPMSimulator(cfg, particles, [WATER])


# ---------------------------------------------------------------------------------------- Taichi
def taichi_init(device: str, threads: int):
    import taichi as ti  # noqa: PLC0415  (optional peer)

    arch = ti.cuda if device == "cuda" else ti.cpu
    kwargs = {"cpu_max_num_threads": threads} if device == "cpu" else {}
    ti.init(arch=arch, default_fp=ti.f32, random_seed=0, log_level=ti.WARN, **kwargs)
    return ti


def taichi_water(ti, dim, n_grid, x0, v0, dt, lam):
    """mpm88/mpm3d-style MLS-MPM water in Taichi with sim.engine's liquid law
    (Kirchhoff pressure ``lam J (J - 1)``, ``J`` updated by ``det(I + dt C)``)."""
    n = len(x0)
    dx, inv_dx = 1.0 / n_grid, float(n_grid)
    p_vol = (0.5 * dx) ** dim
    p_mass = p_vol * WATER.density
    bound, gravity = 3, 9.8

    @ti.data_oriented
    class Water:
        def __init__(self):
            self.x = ti.Vector.field(dim, float, n)
            self.v = ti.Vector.field(dim, float, n)
            self.C = ti.Matrix.field(dim, dim, float, n)
            self.J = ti.field(float, n)
            self.grid_v = ti.Vector.field(dim, float, (n_grid,) * dim)
            self.grid_m = ti.field(float, (n_grid,) * dim)
            self.x.from_numpy(x0.astype(np.float32))
            self.v.from_numpy(v0.astype(np.float32))
            self.J.fill(1.0)

        @ti.kernel
        def substep(self):
            for I in ti.grouped(self.grid_m):
                self.grid_v[I] = ti.zero(self.grid_v[I])
                self.grid_m[I] = 0
            for p in self.x:
                Xp = self.x[p] * inv_dx
                base = int(Xp - 0.5)
                fx = Xp - base
                w = [0.5 * (1.5 - fx) ** 2, 0.75 - (fx - 1) ** 2, 0.5 * (fx - 0.5) ** 2]
                J = self.J[p]
                stress = -dt * p_vol * 4 * inv_dx * inv_dx * lam * J * (J - 1)
                affine = ti.Matrix.identity(float, dim) * stress + p_mass * self.C[p]
                for offset in ti.static(ti.grouped(ti.ndrange(*((3,) * dim)))):
                    dpos = (offset - fx) * dx
                    weight = 1.0
                    for i in ti.static(range(dim)):
                        weight *= w[offset[i]][i]
                    self.grid_v[base + offset] += weight * (p_mass * self.v[p] + affine @ dpos)
                    self.grid_m[base + offset] += weight * p_mass
            for I in ti.grouped(self.grid_m):
                if self.grid_m[I] > 0:
                    self.grid_v[I] /= self.grid_m[I]
                    self.grid_v[I][1] -= dt * gravity
                    cond = (I < bound) & (self.grid_v[I] < 0) | (I > n_grid - bound) & (self.grid_v[I] > 0)
                    self.grid_v[I] = ti.select(cond, 0, self.grid_v[I])
            for p in self.x:
                Xp = self.x[p] * inv_dx
                base = int(Xp - 0.5)
                fx = Xp - base
                w = [0.5 * (1.5 - fx) ** 2, 0.75 - (fx - 1) ** 2, 0.5 * (fx - 0.5) ** 2]
                new_v = ti.zero(self.v[p])
                new_C = ti.zero(self.C[p])
                for offset in ti.static(ti.grouped(ti.ndrange(*((3,) * dim)))):
                    dpos = (offset - fx) * dx
                    weight = 1.0
                    for i in ti.static(range(dim)):
                        weight *= w[offset[i]][i]
                    g_v = self.grid_v[base + offset]
                    new_v += weight * g_v
                    new_C += 4 * weight * g_v.outer_product(dpos) * inv_dx * inv_dx
                self.J[p] *= (ti.Matrix.identity(float, dim) + dt * new_C).determinant()
                self.v[p] = new_v
                self.x[p] += dt * new_v
                self.C[p] = new_C

    return Water()


# ---------------------------------------------------------------------------------------- rows
def forward_rows(device, sizes, repeats, ti):
    rows = []
    lam = WATER.E * WATER.nu / ((1 + WATER.nu) * (1 - 2 * WATER.nu))
    for dim, n_grid, n, substeps, dt in sizes:
        sim = warp_sim(dim, n_grid, n, substeps, dt, device)
        fns = {"warp": lambda: (sim.forward(1), wp.synchronize_device(device))}
        if ti is not None:
            tw = taichi_water(ti, dim, n_grid, water_block(dim, n), random_velocity(dim, n), dt, lam)

            def run_taichi(tw=tw, substeps=substeps):
                for _ in range(substeps):
                    tw.substep()
                ti.sync()
            # same physics check: both engines after the same `substeps` from the same state
            run_taichi()
            sim.forward(1)
            agreement = float(np.abs(sim.obs_x.numpy()[1] - tw.x.to_numpy()).max())
            fns["taichi"] = run_taichi  # (Taichi's state keeps advancing while timed; same work per substep)
        times = time_calls(fns, device, repeats=repeats, warmup=1)
        row = {"table": "forward", "dim": dim, "n_grid": n_grid, "particles": n, "substeps": substeps,
               "warp_ms": times["warp"]["median_ms"],
               "warp_Mpsteps_per_s": n * substeps / times["warp"]["median_ms"] / 1e3}
        if ti is not None:
            row["taichi_ms"] = times["taichi"]["median_ms"]
            row["taichi_Mpsteps_per_s"] = n * substeps / times["taichi"]["median_ms"] / 1e3
            row["warp_over_taichi_time"] = times["warp"]["median_ms"] / times["taichi"]["median_ms"]
            row["max_abs_x_diff_vs_taichi"] = agreement
        rows.append(row)
        print(row, flush=True)
    return rows


def backward_rows(device, sizes, repeats):
    rows = []
    for dim, n_grid, n, substeps in sizes:
        probe = warp_sim(dim, n_grid, n, 1, 2e-4, device)
        step_bytes = probe.memory_bytes()["segment"]
        ckpt_bytes = 2 * n * (2 * dim + 2 * dim * dim) * 4
        best = suggest_segment_length(substeps, ckpt_bytes, step_bytes)
        for label, segment in (("store all", None), ("checkpoint", best)):
            sim = warp_sim(dim, n_grid, n, substeps, 2e-4, device, segment=segment)
            g = wp.array(np.random.default_rng(1).standard_normal((2, n, dim)), dtype=sim.kernels.vec,
                         device=device)

            def fwd(sim=sim):
                sim.forward(1)
                wp.synchronize_device(device)

            def fwd_bwd(sim=sim, g=g):
                sim.forward(1)
                sim.backward(1, g)
                wp.synchronize_device(device)
            times = time_calls({"fwd": fwd, "fwd+bwd": fwd_bwd}, device, repeats=repeats, warmup=1)
            f, fb = times["fwd"]["median_ms"], times["fwd+bwd"]["median_ms"]
            mem = sim.memory_bytes()
            row = {"table": "backward", "dim": dim, "n_grid": n_grid, "particles": n, "substeps": substeps,
                   "mode": label, "segment": mem["segment_substeps"], "forward_ms": f,
                   "backward_ms": fb - f, "bwd_over_fwd": (fb - f) / f,
                   "buffer_MiB": (mem["segment"] + mem["checkpoints"]) / 2 ** 20}
            rows.append(row)
            print(row, flush=True)
    return rows


def memory_rows(device, horizons, dim=2, n_grid=64, n=2048):
    rows = []
    probe = warp_sim(dim, n_grid, n, 1, 2e-4, device)
    step_bytes = probe.memory_bytes()["segment"]
    ckpt_bytes = 2 * n * (2 * dim + 2 * dim * dim) * 4
    for substeps in horizons:
        best = suggest_segment_length(substeps, ckpt_bytes, step_bytes)
        row = {"table": "memory", "dim": dim, "n_grid": n_grid, "particles": n, "substeps": substeps}
        for label, segment in (("store_all", None), ("checkpoint", best)):
            sim = warp_sim(dim, n_grid, n, substeps, 2e-4, device, segment=segment)
            mem = sim.memory_bytes()
            row[f"{label}_MiB"] = (mem["segment"] + mem["checkpoints"]) / 2 ** 20
            row[f"{label}_segment"] = mem["segment_substeps"]
            del sim
        rows.append(row)
        print(row, flush=True)
    return rows


def main(argv=None):
    args = parse_args(__doc__.splitlines()[0], argv,
                      extra=lambda p: (p.add_argument("--taichi-threads", type=int, default=1),
                                       p.add_argument("--no-taichi", action="store_true")))
    device = args.device
    repeats = args.repeats or (2 if args.quick else 5)
    wp.init()
    ti = None
    if not args.no_taichi:
        try:
            ti = taichi_init(device, args.taichi_threads)
        except ImportError as err:  # not installed, or one of its own imports missing (e.g. dill)
            print(f"taichi unavailable ({err}): Warp-only rows")
    start = time.time()
    sizes = QUICK_FORWARD if args.quick else FORWARD_SIZES[device]
    rows = forward_rows(device, sizes, repeats, ti)
    rows += backward_rows(device, BACKWARD_SIZES[:1] if args.quick else BACKWARD_SIZES, repeats)
    rows += memory_rows(device, MEMORY_HORIZONS[:3] if args.quick else MEMORY_HORIZONS)
    notes = (f"sim.engine MLS-MPM (float32) vs a Taichi {'' if ti else '(not run) '}mpm88/mpm3d-style kernel "
             f"(Taichi CPU threads: {args.taichi_threads}; Warp CPU kernels are single-threaded). "
             "Mpsteps_per_s = million particle-substeps per second (median of repeats, warm). "
             "bwd_over_fwd: (forward+backward - forward) / forward; the checkpointed backward "
             "includes recomputing all but the last segment. MiB: per-substep buffers (values + "
             f"adjoints) plus checkpoints. Total time {time.time() - start:.0f} s; 1-min load average "
             f"at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine: timings are noisy).")
    print(write_results("sim_engine", device, rows, notes))


if __name__ == "__main__":
    main()
