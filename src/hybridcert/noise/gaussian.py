"""Isotropic Gaussian noise on a continuous block (certifies an L2 ball)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hybridcert._validation import check_nonnegative, check_positive
from hybridcert.noise.base import Noise
from hybridcert.noise.ratio import LikelihoodRatio


@dataclass(frozen=True)
class Gaussian(Noise):
    """``z = x + N(0, sigma^2 I)``.

    Parameters
    ----------
    sigma : float
        Standard deviation, in the block's own units (e.g. pixels in [0, 1]); > 0.
    """

    sigma: float
    kind = "continuous"
    name = "gaussian"
    level_name = "sigma"

    @property
    def level(self) -> float:
        return self.sigma

    @classmethod
    def check_level(cls, value: float) -> float:
        return check_positive(cls.level_name, value)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sigma", check_positive("sigma", self.sigma))

    def sample(self, x, generator=None, where=None):
        noise = torch.empty(x.shape, device=x.device, dtype=x.dtype)
        if where is None:       # scaled while drawn: one pass less over the batch
            noise.normal_(0.0, self.sigma, generator=generator)
        else:
            noise.normal_(generator=generator).mul_(self.sigma * where)
        return noise.add_(x)

    def likelihood_ratio(self, size: float) -> LikelihoodRatio:
        """Regions for an L2 perturbation of norm ``size``: a pure Gaussian shift."""
        return LikelihoodRatio.identity(gamma=self.gamma(size))

    def gamma(self, l2: float) -> float:
        """Shift in standard deviations, ``l2 / sigma``."""
        return check_nonnegative("l2", l2) / self.sigma
