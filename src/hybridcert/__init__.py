"""hybridcert: joint robustness certificates for multimodal classifiers by hybrid
randomized smoothing (Gaussian noise on continuous blocks, substitution or masking on
discrete blocks, one Neyman–Pearson certificate)."""

from hybridcert.certificate.bounds import lower_bound, upper_bound
from hybridcert.noise import Gaussian, LikelihoodRatio, Mask, Substitution, product

__version__ = "0.1.0"

__all__ = ["Gaussian", "LikelihoodRatio", "Mask", "Substitution", "lower_bound", "product",
           "upper_bound"]
