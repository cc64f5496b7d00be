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
from collections.abc import Mapping

import numpy as np

from hybridcert._validation import check_positive
from hybridcert.blocks import CertifiedRegion, HybridNoise
from hybridcert.certificate.baselines import discrete_threshold
from hybridcert.noise import LikelihoodRatio
from hybridcert.smoothing.core import (
    SmoothedClassifier,
    Stage,
    lower_confidence_bound,
    upper_confidence_bound,
)
from hybridcert.smoothing.results import ABSTAIN, Certification


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


def target_budget(noise: HybridNoise, target) -> dict[str, float]:
    """A target region as a per-block budget: ``{block: size}`` or the pair ``(eps, r)``."""
    if isinstance(target, Mapping):
        return noise.budget(target)
    eps, r = target
    return noise.pair_budget(eps, r)


def certify_sequential(clf: SmoothedClassifier, x, n0: int, alpha: float, seed: int = 0,
                       targets: list | None = None, tolerance: float = 0.01,
                       n_min: int = 100, n_max: int = 100_000, growth: float = 2.0,
                       max_tokens: int = 16, max_radius: float | None = None,
                       detector=None) -> Certification:
    """Sequential certification of one record (two classes, pB = 1 - pA).

    Parameters
    ----------
    targets : list of (eps, r) or {block: size}, optional
        Decision mode: certify these regions.  None: radius mode.
    tolerance : float
        Radius mode: stop once sampling on to ``n_max`` could raise no eps*(r) by more than
        this, in the continuous block's units (e.g. pixels in [0, 1]).
    max_radius : float, optional
        Radius mode: the largest L2 radius of interest; a frontier that already reaches it
        at some r needs no more samples there.  The returned frontier is not clipped.
    """
    if detector is not None:
        raise ValueError("sequential detector runs are not available yet")
    tolerance = check_positive("tolerance", tolerance)
    if max_radius is not None:
        max_radius = check_positive("max_radius", max_radius)
    start = time.perf_counter()
    looks = schedule(n_min, n_max, growth)
    level = alpha / len(looks)
    noise = clf.noise
    record = clf.validate(x)
    selection = clf.sample_counts(record, n0, seed, stage=Stage.SELECTION)
    top = int(np.argmax(selection))
    budgets = thresholds = None
    if targets is not None:
        budgets = [target_budget(noise, t) for t in targets]
        thresholds = np.array([noise.threshold(b) for b in budgets])
    counts = np.zeros(clf.num_classes, dtype=np.int64)
    drawn = 0
    p_low = 0.0
    for k, size in enumerate(looks):
        counts += clf.sample_counts(record, size - drawn, seed, stage=Stage.SEQUENTIAL + k)
        drawn = size
        p_low = lower_confidence_bound(int(counts[top]), drawn, level)
        p_high = upper_confidence_bound(int(counts[top]), drawn, level)
        # What the cap could plausibly show: its bound if the rate were p_high.
        reach = lower_confidence_bound(min(n_max, int(np.ceil(p_high * n_max))), n_max, level)
        if thresholds is not None:
            done = np.all((p_low > thresholds) | (reach <= thresholds))
        else:
            done = _radius_settled(noise, p_low, reach, tolerance, max_radius, max_tokens)
        if done:
            break
    region = noise.frontier(p_low, max_tokens=max_tokens,
                            noised_positions=[noise.noised_positions(record)])[0]
    label = top if region.certified else ABSTAIN
    answers = []
    if budgets is not None:
        answers = [{"budget": b, "certified": bool(label != ABSTAIN and p_low > t)}
                   for b, t in zip(budgets, thresholds, strict=True)]
    return Certification(label, p_low, None,
                         region if region.certified else CertifiedRegion.empty(noise), counts,
                         n0 + drawn, looks=k + 1, targets=answers,
                         time_s=time.perf_counter() - start,
                         mode="decision" if targets is not None else "radius")


def target_threshold(clf: SmoothedClassifier, eps: float, r: int) -> float:
    """p* of the region (L2 ``eps`` on the Gaussian block, ``r`` substituted tokens) for
    ``clf``'s noise: the smallest pA that certifies it."""
    return clf.noise.threshold(clf.noise.pair_budget(eps, r))


def _radius_settled(noise, p_low, reach, tolerance, max_radius, max_tokens) -> bool:
    """Could a bound of ``reach`` (what the cap could plausibly give) improve the frontier
    at ``p_low`` by more than ``tolerance`` at some r, or certify more tokens?"""
    if reach <= p_low:
        return True
    low, high = noise.frontier([p_low, reach], max_tokens=max_tokens)
    if not high.certified:
        return True                       # cannot certify even at the optimistic bound
    if np.isnan(low.gamma).sum() != np.isnan(high.gamma).sum():
        return False
    sigma = min(b.noise.sigma for b in noise.noised_continuous) if noise.noised_continuous \
        else 0.0
    radii = np.nan_to_num(np.stack([low.gamma, high.gamma]) * sigma, nan=0.0)
    if max_radius is not None:
        radii = np.minimum(radii, max_radius)
    return bool(np.all(radii[1] - radii[0] <= tolerance))
