"""Noise types: each samples itself and describes its likelihood-ratio regions."""

from hybridcert.noise.base import Noise
from hybridcert.noise.discrete import MASK_INDEX, Mask, Substitution
from hybridcert.noise.gaussian import Gaussian
from hybridcert.noise.ratio import LikelihoodRatio, product

__all__ = ["MASK_INDEX", "Gaussian", "LikelihoodRatio", "Mask", "Noise", "Substitution",
           "product"]
