"""nde.diffusion: diffusion-model sampling and gradients on the nde core.

Schedules (VP linear/cosine, VE, EDM), parameterisations, network wrappers with classifier-free
guidance, samplers (DDIM, DPM-Solver++ 2M/3M, UniPC bh1/bh2, DPM-Solver-v3 with empirical model
statistics, adaptive PF-ODE reference), stochastic samplers (reverse SDE and EDM churn, in closed form or as
nde SDE objects solved by the nde SDE core), and AdjointDPM gradients.
See docs/diffusion.md.
"""
from .adjoint import adjoint_sample
from .clock import SamplingClock
from .dpm_solver import ddim, dpm_solver_pp
from .dpm_solver_v3 import DPMSolverV3, cumulative_exp_integral, dpm_solver_v3
from .mixtures import GaussianMixture, GaussianMixtureNoisePredictor, random_mixture, ring_mixture
from .models import DiffusersUNet, NoisePredictor, call_model
from .networks import TimeMLP, train_noise_predictor
from .parameterization import PREDICTIONS, eps_to_x0, from_eps, to_eps
from .pf_ode import LambdaODE, RhoODE
from .reference import probability_flow_reference
from .schedules import EDM, VE, NoiseSchedule, VPCosine, VPDiscrete, VPLinear
from .statistics import ModelStatistics, estimate_statistics, lambda_grid
from .sdes import EDMSDE, ReverseSDE
from .stochastic import REVERSE_SDE_METHODS, edm_churn_equivalent, edm_sampler, edm_sde, reverse_sde
from .timesteps import SKIP_TYPES, sampling_times
from .unipc import unipc

__all__ = [
    "NoiseSchedule", "VPLinear", "VPCosine", "VPDiscrete", "VE", "EDM", "sampling_times", "SKIP_TYPES",
    "PREDICTIONS", "to_eps", "from_eps", "eps_to_x0",
    "NoisePredictor", "DiffusersUNet", "call_model", "TimeMLP", "train_noise_predictor",
    "GaussianMixture", "GaussianMixtureNoisePredictor", "ring_mixture", "random_mixture",
    "ddim", "dpm_solver_pp", "unipc", "DPMSolverV3", "dpm_solver_v3", "cumulative_exp_integral",
    "ModelStatistics", "estimate_statistics", "lambda_grid",
    "probability_flow_reference", "RhoODE", "LambdaODE", "reverse_sde", "edm_sampler", "adjoint_sample",
    "SamplingClock", "ReverseSDE", "EDMSDE", "REVERSE_SDE_METHODS", "edm_sde", "edm_churn_equivalent",
]
