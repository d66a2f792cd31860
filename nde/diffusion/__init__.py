"""nde.diffusion: noise schedules, parameterisations, samplers (DDIM, DPM-Solver++, UniPC, DPM-Solver-v3),
empirical model statistics, and AdjointDPM gradients through the probability-flow ODE."""
