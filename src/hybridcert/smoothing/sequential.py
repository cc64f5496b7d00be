"""Anytime-valid sequential certification: stop sampling as soon as the answer is settled.

Samples are drawn in a fixed, geometrically growing schedule of looks ``n_1 < n_2 < ... <
n_K = n_max``.  At look ``k`` the one-sided Clopper–Pearson bound is taken at level
``alpha / K``: by the union bound the probability that *any* of the K bounds fails is at
most ``alpha``, whatever the stopping rule — so stopping early, on any data-dependent rule,
keeps the guarantee of fixed-n certification (Bonferroni alpha spending over a pre-set
number of looks; cf. Lan & DeMets 1983, and the sequential tests of Wald 1945).  With
doubling looks from 100 to 100,000 samples K = 11, and the price is a bound at alpha/11
instead of alpha: a few hundredths of a standard error.

Two questions:

* **decision** — is the input certified at target regions (eps, r)?  Each target has a
  threshold ``p*`` (the smallest pA whose joint lower bound exceeds 1/2).  Sampling stops
  when every target is settled: its threshold is cleared, or even the cap could not clear
  it.
* **radius** — the frontier: stop when sampling on to the cap could raise no eps*(r) by more
  than ``tolerance`` (nor certify a further token), or at ``n_max``.  Radii beyond
  ``max_radius`` (the largest radius the user asks about) count as settled.

What the cap could plausibly show, in both, is the bound that ``n_max`` samples would give if
the observed rate were the current upper confidence bound.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from hybridcert._validation import check_positive
from hybridcert.certificate import certified_frontier
from hybridcert.certificate.baselines import discrete_threshold
from hybridcert.noise import Gaussian, LikelihoodRatio
from hybridcert.smoothing.core import (
    ABSTAIN,
    SmoothedClassifier,
    lower_confidence_bound,
    upper_confidence_bound,
)

_STAGE_OFFSET = 100   # noise stages of sequential looks (fixed-n certify uses 0 and 1)


@dataclass
class SequentialResult:
    label: int                     # class or ABSTAIN
    queries: int                   # base-model queries used (selection + estimation)
    p_lower: float                 # the alpha/K lower bound at the stopping look
    certified: list[bool] = field(default_factory=list)   # decision mode, per target
    max_tokens: int = -1
    l2_radius: list[float] = field(default_factory=list)  # radius mode frontier
    looks: int = 0
    time_s: float = 0.0


def schedule(n_min: int, n_max: int, growth: float = 2.0) -> list[int]:
    """Cumulative sample sizes of the looks: n_min * growth^k, capped at (and ending in)
    n_max."""
    if n_min < 1 or n_max < n_min:
        raise ValueError(f"need 1 <= n_min <= n_max, got n_min={n_min}, n_max={n_max}")
    if growth <= 1:
        raise ValueError(f"growth must be > 1, got {growth}")
    sizes, n = [], float(n_min)
    while n < n_max:
        sizes.append(int(round(n)))
        n *= growth
    sizes.append(n_max)
    return sorted(set(sizes))


def threshold(ratio: LikelihoodRatio) -> float:
    """Smallest pA (to 1e-13, certified end) whose two-class joint lower bound exceeds 1/2;
    inf if none."""
    return discrete_threshold(ratio)


def certify_sequential(clf: SmoothedClassifier, x, n0: int, alpha: float, seed: int = 0,
                       targets: list[tuple[float, int]] | None = None, tolerance: float = 0.01,
                       n_min: int = 100, n_max: int = 100_000, growth: float = 2.0,
                       max_tokens: int = 16, max_radius: float | None = None
                       ) -> SequentialResult:
    """Sequential certification of one record (two classes, pB = 1 - pA).

    Parameters
    ----------
    targets : list of (eps, r), optional
        Decision mode: certify these regions.  None: radius mode.
    tolerance : float
        Radius mode: stop once sampling on to ``n_max`` could raise no eps*(r) by more than
        this, in the continuous block's units (e.g. pixels in [0, 1]).
    max_radius : float, optional
        Radius mode: the largest L2 radius of interest; a frontier that already reaches it
        at some r needs no more samples there.  The returned frontier is not clipped.
    """
    tolerance = check_positive("tolerance", tolerance)
    if max_radius is not None:
        max_radius = check_positive("max_radius", max_radius)
    start = time.perf_counter()
    looks = schedule(n_min, n_max, growth)
    level = alpha / len(looks)
    record = clf.validate(x)
    selection = clf.sample_counts(record, n0, seed, stage=0)
    top = int(np.argmax(selection))
    thresholds = None
    if targets is not None:
        thresholds = np.array([target_threshold(clf, eps, r) for eps, r in targets])
    count = drawn = 0
    p_low = 0.0
    for k, size in enumerate(looks):
        counts = clf.sample_counts(record, size - drawn, seed, stage=_STAGE_OFFSET + k)
        count += int(counts[top])
        drawn = size
        p_low = lower_confidence_bound(count, drawn, level)
        p_high = upper_confidence_bound(count, drawn, level)
        # What the cap could plausibly show: its bound if the rate were p_high.
        reach = lower_confidence_bound(min(n_max, int(np.ceil(p_high * n_max))), n_max, level)
        if thresholds is not None:
            done = np.all((p_low > thresholds) | (reach <= thresholds))
        else:
            done = _radius_settled(clf, p_low, reach, tolerance, max_radius, max_tokens)
        if done:
            break
    result = SequentialResult(ABSTAIN, n0 + drawn, p_low, looks=k + 1)
    frontier = certified_frontier(p_low, sigma=clf.sigma, discrete=clf._discrete_noise(),
                                  max_tokens=max_tokens)
    result.max_tokens = int(frontier.max_tokens[0])
    result.label = top if result.max_tokens >= 0 else ABSTAIN
    result.l2_radius = [row["l2_radius"] for row in frontier.rows(0)]
    if thresholds is not None:
        result.certified = [bool(p_low > t) for t in thresholds]
    result.time_s = time.perf_counter() - start
    return result


def target_threshold(clf: SmoothedClassifier, eps: float, r: int) -> float:
    """p* of the region (L2 ``eps`` on the Gaussian blocks, ``r`` substituted tokens) for
    ``clf``'s noise: the smallest pA that certifies it."""
    return threshold(_target_ratio(clf, eps, r))


def _target_ratio(clf: SmoothedClassifier, eps: float, r: int) -> LikelihoodRatio:
    ratio = LikelihoodRatio.identity()
    if eps > 0:
        if clf.sigma is None:
            raise ValueError("a target with eps > 0 needs a Gaussian-noised block")
        ratio = ratio * Gaussian(clf.sigma).likelihood_ratio(eps)
    if r > 0:
        noise = clf._discrete_noise()
        if noise is None:
            raise ValueError("a target with r > 0 needs a noised token block")
        ratio = ratio * noise.likelihood_ratio(r)
    return ratio


def _radius_settled(clf, p_low, reach, tolerance, max_radius, max_tokens) -> bool:
    """Could a bound of ``reach`` (what the cap could plausibly give) improve the frontier
    at ``p_low`` by more than ``tolerance`` at some r, or certify more tokens?"""
    if reach <= p_low:
        return True
    frontier = certified_frontier([p_low, reach], sigma=clf.sigma,
                                  discrete=clf._discrete_noise(), max_tokens=max_tokens)
    low_r, high_r = frontier.max_tokens
    if high_r < 0:
        return True                       # cannot certify even at the optimistic bound
    if low_r != high_r:
        return False
    radii = frontier.l2_radius[:, : high_r + 1]
    if max_radius is not None:
        radii = np.minimum(radii, max_radius)
    return bool(np.all(radii[1] - radii[0] <= tolerance))
