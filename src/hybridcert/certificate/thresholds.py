"""Threshold probabilities: the confidence bound a region needs (docs/THEORY.md section 3).

For a fixed perturbation (a :class:`~hybridcert.noise.LikelihoodRatio`, Gaussian shift
included) the rules are monotone in the confidence bound ``p``, so each region has one
threshold ``p*``: majority and flag certify iff ``p >= p*``; benign iff ``p <= p*``.
Sequential decisions compare their running bounds with it.
"""

from __future__ import annotations

import numpy as np

from hybridcert.certificate.bounds import CumulativeMasses
from hybridcert.certificate.rules import Rule, check_rule
from hybridcert.noise.ratio import LikelihoodRatio


def threshold_probability(ratio: LikelihoodRatio, rule: Rule | None = None) -> float:
    """The confidence bound at which ``rule`` starts (or stops) certifying ``ratio``.

    Parameters
    ----------
    ratio : LikelihoodRatio
        The perturbation, its Gaussian shift included.
    rule : Rule, optional
        Default: two-class majority (``pB = 1 - pA``).

    Returns
    -------
    float
        * majority (two classes), flag: the smallest double ``p`` that certifies, so every
          ``p >= p*`` certifies; ``inf`` when even ``p = 1`` does not.
        * benign: the largest double ``q`` that certifies, so every ``q <= q*`` certifies;
          ``-inf`` when even ``q = 0`` does not.

        It is the certified end: the engine certifies at the returned value itself (found
        by bisection on doubles around the exact solution at ``gamma = 0``).
    """
    from hybridcert.certificate.frontier import is_certified

    rule = check_rule(rule)

    def certifies(x: float) -> bool:
        return bool(is_certified(np.array([x]), ratio, rule=rule)[0])

    estimate = discrete_inverse(ratio, rule) if ratio.gamma == 0 else np.nan
    if not rule.reads_upper:
        if not certifies(1.0):
            return np.inf
        lo, hi = 0.0, 1.0   # lower(0) = 0 is never above 1/2 or tau > 0
        if np.isfinite(estimate):
            above = min(1.0, estimate * (1 + 1e-9) + 1e-300)
            below = estimate * (1 - 1e-9)
            if certifies(above):
                hi = above
                if not certifies(below):
                    lo = below
        return _bisect_doubles(certifies, lo, hi, certified_high=True)
    if not certifies(0.0):
        return -np.inf
    lo, hi = 0.0, 1.0       # upper(1) = 1 is never below tau < 1
    if np.isfinite(estimate):
        below = estimate * (1 - 1e-9)
        above = min(1.0, estimate * (1 + 1e-9) + 1e-300)
        if certifies(below):
            lo = below
            if not certifies(above):
                hi = above
    return _bisect_doubles(certifies, lo, hi, certified_high=False)


def _bisect_doubles(certifies, lo: float, hi: float, *, certified_high: bool) -> float:
    """Bisection on the bit patterns of non-negative doubles until ``lo`` and ``hi`` are
    adjacent; returns the certified end."""
    lo_bits = int(np.float64(lo).view(np.int64))
    hi_bits = int(np.float64(hi).view(np.int64))
    while hi_bits - lo_bits > 1:
        mid_bits = (lo_bits + hi_bits) // 2
        mid = float(np.int64(mid_bits).view(np.float64))
        if certifies(mid) == certified_high:
            hi_bits = mid_bits
        else:
            lo_bits = mid_bits
    end = hi_bits if certified_high else lo_bits
    return float(np.int64(end).view(np.float64))


def discrete_inverse(ratio: LikelihoodRatio, rule: Rule) -> float:
    """Exact-arithmetic estimate of the threshold at ``gamma = 0`` (the ratio's Gaussian
    shift is ignored): the mu-mass where the greedy bound meets the rule's level.

    Head rules (majority, flag): the smallest ``p`` with ``nu(S) = level`` (``inf`` if
    ``nu`` of every finite region together stays below it).  Benign: the largest ``q``
    with ``nu(S^c) = level`` (``-inf`` if the ratio-infinity atom alone reaches it).
    Floating-point estimate, not a certified end: :func:`threshold_probability` is.
    """
    level, k = rule.level, ratio.n_regions
    c = CumulativeMasses(ratio)
    if not rule.reads_upper:
        if k == 0 or c.head_nu[-1] < level:
            return np.inf
        j = min(int(np.searchsorted(c.head_nu[1:], level, side="left")), k - 1)
        frac = min(1.0, max(0.0, (level - c.head_nu[j]) / ratio.nu[j]))
        return float(min(1.0, c.head_mu[j] + frac * ratio.mu[j]))
    if ratio.nu_infinite >= level:
        return -np.inf
    if k == 0:
        return 1.0
    count = k - int(np.searchsorted(c.tail_nu[:k][::-1], level, side="left"))
    if count == 0:
        return 1.0
    j = count - 1
    rest = min(1.0, max(0.0, (level - c.tail_nu[j + 1]) / ratio.nu[j]))
    return float(min(1.0, c.tail_mu[j + 1] + rest * ratio.mu[j]))
