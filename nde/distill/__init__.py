"""f-distill: one-step generators by f-divergence distribution matching (Xu, Nie & Vahdat 2025)."""
from .divergences import F_DIVERGENCES, divergence_weight, f_divergence_from_ratio, f_function
from .fdistill import FDistill, distillation_loss
from .ratio import RatioNormalizer, density_ratio, normalize_by_mean
from .teacher import DiffusionTeacher, cosine_alpha, cosine_sigma, diffuse, train_velocity_teacher

__all__ = ["F_DIVERGENCES", "divergence_weight", "f_function", "f_divergence_from_ratio", "FDistill",
           "distillation_loss", "RatioNormalizer", "density_ratio", "normalize_by_mean", "DiffusionTeacher",
           "cosine_alpha", "cosine_sigma", "diffuse", "train_velocity_teacher"]
