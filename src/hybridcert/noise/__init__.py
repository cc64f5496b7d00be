"""Noise types: each samples itself and describes its likelihood-ratio regions."""

from hybridcert.noise.base import NOISES, Noise
from hybridcert.noise.discrete import MASK_INDEX, Mask, Substitution
from hybridcert.noise.gaussian import Gaussian
from hybridcert.noise.ratio import LikelihoodRatio, product

__all__ = ["MASK_INDEX", "NOISES", "Gaussian", "LikelihoodRatio", "Mask", "Noise",
           "Substitution", "noise_from_spec", "product"]


def noise_from_spec(spec) -> Noise:
    """The noise a :meth:`Noise.describe` dict describes (as stored with every run)."""
    names = [name for name in spec if name in NOISES]
    if len(names) != 1:
        raise ValueError(f"a noise spec names one of {', '.join(NOISES)}, got {spec!r}")
    return NOISES[names[0]].from_spec(spec)
