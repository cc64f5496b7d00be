"""Noise on discrete blocks (token indices): uniform substitution and masking.

Token blocks are sampled as indices ``0 .. V-1`` into the set of ids the noise may draw;
mapping model token ids to that set (and leaving padding or special tokens alone) is the
data layer's job.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from hybridcert._validation import check_count
from hybridcert.noise.base import Noise
from hybridcert.noise.ratio import LikelihoodRatio

#: Index that :class:`Mask` writes at masked positions (outside every vocabulary).
MASK_INDEX = -1


class _KeepProbNoise(Noise):
    """A token noise whose level is its keep probability (``keep_prob``, a field of each
    subclass)."""

    level_name = "keep probability"

    @property
    def level(self) -> float:
        return self.keep_prob

    @classmethod
    def check_level(cls, value: float) -> float:
        return _check_keep(value, cls.level_name)


@dataclass(frozen=True)
class Substitution(_KeepProbNoise):
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
    name = "substitution"

    @classmethod
    def build(cls, level: float, vocab_size: int | None = None) -> Substitution:
        if vocab_size is None:
            raise ValueError("substitution noise needs vocab_size (the values it draws)")
        return cls(level, vocab_size)

    def describe(self) -> dict:
        return {self.name: self.keep_prob, "vocab_size": self.vocab_size}

    @classmethod
    def from_spec(cls, spec) -> Substitution:
        return cls(spec[cls.name], spec["vocab_size"])

    def check_block(self, block, vocabulary):
        if self.vocab_size != vocabulary.size:
            raise ValueError(f"noise on {block!r} has vocab_size {self.vocab_size} but its "
                             f"vocabulary holds {vocabulary.size} noisable ids")

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
        """Regions for ``size`` substituted positions (docs/THEORY.md section 2); ``size``
        at most :data:`MAX_SUBSTITUTION_TOKENS`."""
        return _substitution_ratio(self.keep_prob, self.vocab_size,
                                   _check_substitution_tokens(size))


@dataclass(frozen=True)
class Mask(_KeepProbNoise):
    """Each position kept with probability ``keep_prob``, else replaced by a mask symbol
    outside the vocabulary (randomized ablation, Levine & Feizi 2020).

    Parameters
    ----------
    keep_prob : float
        Probability ``a`` that a position is kept, in (0, 1].
    """

    keep_prob: float
    kind = "discrete"
    name = "mask"

    def __post_init__(self) -> None:
        object.__setattr__(self, "keep_prob", _check_keep(self.keep_prob))


    def check_block(self, block, vocabulary):
        if vocabulary.mask_id is None:
            raise ValueError(f"Mask noise on {block!r} needs a Vocabulary with mask_id (a "
                             f"mask token)")

    def sample(self, x, generator=None, where=None):
        masked = torch.rand(x.shape, generator=generator, device=x.device) >= self.keep_prob
        if where is not None:
            masked &= where
        return torch.where(masked, torch.full_like(x, MASK_INDEX), x)

    def likelihood_ratio(self, size: int) -> LikelihoodRatio:
        """Regions for ``size`` substituted positions: ratios 0, 1 and infinity."""
        return _mask_ratio(self.keep_prob, check_count("tokens", size))


def _check_keep(value, name: str = "keep_prob") -> float:
    a = float(value)
    if not (0.0 < a <= 1.0):
        raise ValueError(f"{name} must lie in (0, 1], got {a!r}")
    return a


#: Largest number of substituted positions a :class:`Substitution` ratio is built for.  The
#: ratio has ``2r + 1`` regions and costs ``O(r^2)`` operations (about 3 s at the cap).
MAX_SUBSTITUTION_TOKENS = 10_000

_EPS = float(np.finfo(float).eps)
# Log masses below this feed kept regions with a relative weight below exp(-250).
_RELEVANT_LOG = -1000.0
_ROWS: dict[tuple[float, int], tuple[int, np.ndarray]] = {}
_ROWS_LOCK = threading.Lock()


def _check_substitution_tokens(size) -> int:
    r = check_count("tokens", size)
    if r > MAX_SUBSTITUTION_TOKENS:
        raise ValueError(f"tokens must be an integer <= {MAX_SUBSTITUTION_TOKENS} for "
                         f"substitution noise (its ratio costs r^2), got {r}")
    return r


def _log_mu_row(a: float, v: int, r: int) -> np.ndarray:
    """``log mu_k`` for ``k = -r .. r`` (index ``k + r``), one changed position at a time.

    A changed position moves ``k = v - u`` by -1 (it shows the old value, probability
    ``a``), +1 (the new value, ``beta``) or 0 (another value, ``(V - 2) beta``), so
    ``mu^(r+1)_k = a mu^(r)_(k+1) + (V-2) beta mu^(r)_k + beta mu^(r)_(k-1)``, carried in log
    space.  ``O(r)`` memory; the latest row per ``(a, V)`` is kept, so a frontier that asks
    for ``r = 0, 1, 2, ...`` costs ``O(r)`` per step.
    """
    beta = (1.0 - a) / (v - 1)
    la, lb = math.log(a), math.log(beta)
    lo = math.log((v - 2) * beta) if v > 2 else -np.inf
    with _ROWS_LOCK:
        done, row = _ROWS.get((a, v), (0, np.zeros(1)))
    if done > r:
        done, row = 0, np.zeros(1)
    for _ in range(r - done):
        padded = np.full(row.size + 4, -np.inf)
        padded[2:-2] = row
        row = np.logaddexp(np.logaddexp(padded[2:] + la, padded[1:-1] + lo),
                           padded[:-2] + lb)
    with _ROWS_LOCK:
        if _ROWS.get((a, v), (-1,))[0] < r:
            _ROWS[(a, v)] = (r, row)
    return row


@lru_cache(maxsize=512)
def _substitution_ratio(a: float, v: int, r: int) -> LikelihoodRatio:
    if r == 0:
        return LikelihoodRatio.identity()
    if a == 1.0:
        # Never noised: the changed positions show the old value under mu and the new one
        # under nu, so the ratio is 0 or infinity and nothing can be certified.
        return LikelihoodRatio(np.zeros(0), np.zeros(0), np.zeros(0), 1.0, 1.0)
    beta = (1.0 - a) / (v - 1)
    log_a, log_beta = math.log(a), math.log(beta)
    log_mu = _log_mu_row(a, v, r)
    ks = np.arange(-r, r + 1)
    log_ratio = ks * (log_a - log_beta)
    log_nu = log_mu + log_ratio
    # Error bound.  Each step rounds a log mass L once per operation (<= 4 eps (|L| + 2)
    # absolute, i.e. relative in the mass); a mass is a weighted mean of larger ones, so
    # over r steps its relative error is at most r (4 eps (|L| + 2) + c), with c the error
    # of the log constants (beta carries 2 eps).  log_ratio carries r ulps of log(a / beta).
    kept = (log_nu >= math.log(1e-31)) & (log_mu > _RELEVANT_LOG)
    biggest = float(np.max(np.abs(log_mu[kept]), initial=0.0))
    log_other = abs(math.log((v - 2) * beta)) if v > 2 else 0.0
    constants = 4.0 * _EPS * (3.0 + max(abs(log_a), abs(log_beta), log_other))
    rtol = r * (4.0 * _EPS * (biggest + 2.0) + constants) \
        + 4.0 * _EPS * r * (abs(log_a) + abs(log_beta))
    return LikelihoodRatio.from_log_masses(log_ratio, log_mu, log_nu, mass_rtol=rtol)


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
