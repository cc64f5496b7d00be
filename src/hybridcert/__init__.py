"""hybridcert: joint robustness certificates for multimodal classifiers by hybrid
randomized smoothing (Gaussian noise on continuous blocks, substitution or masking on
discrete blocks, one Neyman–Pearson certificate)."""

from hybridcert.certificate import (
    Frontier,
    certified_frontier,
    is_certified,
    lower_bound,
    per_modality_check,
    sequential_bound,
    upper_bound,
)
from hybridcert.noise import Gaussian, LikelihoodRatio, Mask, Substitution, product

__version__ = "0.1.0"

__all__ = ["Frontier", "Gaussian", "LikelihoodRatio", "Mask", "Substitution",
           "certified_frontier", "is_certified", "lower_bound", "per_modality_check", "product",
           "sequential_bound", "upper_bound"]
