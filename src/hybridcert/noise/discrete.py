"""Noise on discrete blocks (token indices): uniform substitution and masking.

Token blocks are sampled as indices ``0 .. V-1`` into the set of ids the noise may draw;
mapping model token ids to that set (and leaving padding or special tokens alone) is the
data layer's job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from scipy.special import gammaln, logsumexp

from hybridcert._validation import check_count
from hybridcert.noise.base import Noise
from hybridcert.noise.ratio import LikelihoodRatio

#: Index that :class:`Mask` writes at masked positions (outside every vocabulary).
MASK_INDEX = -1


@dataclass(frozen=True)
class Substitution(Noise):
    """Each position keeps its value with probability ``keep_prob``, else takes one of the
    other ``vocab_size - 1`` values uniformly (Lee et al., 2019, with their alpha = a, K = V-1).

    Parameters
    ----------
    keep_prob : float
        Probability ``a`` that a position is unchanged, in (1/V, 1].  ``1`` means the block
        is not noised, so no token change can be certified.
    vocab_size : int
        Number ``V`` of values the noise can draw, >= 2.
    """

    keep_prob: float
    vocab_size: int
    kind = "discrete"

    def __post_init__(self) -> None:
        v = check_count("vocab_size", self.vocab_size, minimum=2)
        a = float(self.keep_prob)
        if not (1.0 / v < a <= 1.0):
            raise ValueError(
                f"keep_prob must lie in (1/vocab_size, 1] = ({1.0 / v:.6g}, 1], got {a!r}"
            )
        object.__setattr__(self, "vocab_size", v)
        object.__setattr__(self, "keep_prob", a)

    @property
    def substitution_prob(self) -> float:
        """``beta = (1 - a) / (V - 1)``: probability of each particular other value."""
        return (1.0 - self.keep_prob) / (self.vocab_size - 1)

    def sample(self, x, generator=None, where=None):
        change = torch.rand(x.shape, generator=generator, device=x.device) >= self.keep_prob
        if where is not None:
            change &= where
        # A uniform offset in 1..V-1 reaches every other value exactly once.
        offset = torch.randint(1, self.vocab_size, x.shape, generator=generator,
                               device=x.device)
        return torch.where(change, (x + offset) % self.vocab_size, x)

    def likelihood_ratio(self, size: int) -> LikelihoodRatio:
        """Regions for ``size`` substituted positions (THEORY.md section 2)."""
        return _substitution_ratio(self.keep_prob, self.vocab_size,
                                   check_count("tokens", size))


@dataclass(frozen=True)
class Mask(Noise):
    """Each position kept with probability ``keep_prob``, else replaced by a mask symbol
    outside the vocabulary (randomized ablation, Levine & Feizi 2020).

    Parameters
    ----------
    keep_prob : float
        Probability ``a`` that a position is kept, in (0, 1].
    """

    keep_prob: float
    kind = "discrete"

    def __post_init__(self) -> None:
        a = float(self.keep_prob)
        if not (0.0 < a <= 1.0):
            raise ValueError(f"keep_prob must lie in (0, 1], got {a!r}")
        object.__setattr__(self, "keep_prob", a)

    def sample(self, x, generator=None, where=None):
        masked = torch.rand(x.shape, generator=generator, device=x.device) >= self.keep_prob
        if where is not None:
            masked &= where
        return torch.where(masked, torch.full_like(x, MASK_INDEX), x)

    def likelihood_ratio(self, size: int) -> LikelihoodRatio:
        """Regions for ``size`` substituted positions: ratios 0, 1 and infinity."""
        return _mask_ratio(self.keep_prob, check_count("tokens", size))


@lru_cache(maxsize=4096)
def _substitution_ratio(a: float, v: int, r: int) -> LikelihoodRatio:
    if r == 0:
        return LikelihoodRatio.identity()
    if a == 1.0:
        # Never noised: the changed positions show the old value under mu and the new one
        # under nu, so the ratio is 0 or infinity and nothing can be certified.
        return LikelihoodRatio(np.zeros(0), np.zeros(0), np.zeros(0), 1.0, 1.0)
    beta = (1.0 - a) / (v - 1)
    log_a, log_beta = math.log(a), math.log(beta)
    log_other = math.log((v - 2) * beta) if v > 2 else -np.inf
    # u = changed positions showing the old value, v = showing the new one, w = neither.
    u = np.arange(r + 1)[:, None]
    k = np.arange(-r, r + 1)[None, :]
    vv = u + k
    w = r - u - vv
    valid = (vv >= 0) & (w >= 0)
    uu, vv, ww = (np.broadcast_to(t, valid.shape) for t in (u, vv, w))
    with np.errstate(invalid="ignore"):
        other = np.where(ww == 0, 0.0, ww * log_other)
        log_terms = (gammaln(r + 1) - gammaln(uu + 1) - gammaln(np.maximum(vv, 0) + 1)
                     - gammaln(np.maximum(ww, 0) + 1) + uu * log_a + vv * log_beta + other)
    log_terms = np.where(valid, log_terms, -np.inf)
    log_mu = logsumexp(log_terms, axis=0)
    ks = np.arange(-r, r + 1)
    log_ratio = ks * (log_a - log_beta)
    return LikelihoodRatio.from_log_masses(log_ratio, log_mu, log_mu + log_ratio)


@lru_cache(maxsize=4096)
def _mask_ratio(a: float, r: int) -> LikelihoodRatio:
    if r == 0:
        return LikelihoodRatio.identity()
    m = (1.0 - a) ** r
    if m == 0.0:
        return LikelihoodRatio(np.zeros(0), np.zeros(0), np.zeros(0), 1.0, 1.0)
    one_minus_m = -math.expm1(r * math.log1p(-a))
    return LikelihoodRatio(np.zeros(1), np.array([m]), np.array([m]), one_minus_m,
                           one_minus_m)
