"""Thresholds of the baselines the joint certificate is compared with (docs/THEORY.md section 3).

For one image block (Gaussian) and one token block, a region ``(eps, r)`` and a rule
(majority vote or a detector's flag side), each method certifies an input iff its confidence
bound ``p`` clears a threshold ``p*``; a sequential decision compares its running bound with
it, exactly as it does for the joint certificate's threshold
(:meth:`HybridNoise.threshold`).  Answering the baselines' thresholds from the same draws
compares the methods on the same inputs and the same samples.

* **Sequential composition** (sound, looser): bound one modality's change, feed the result
  into the other's bound; the better of the two orders.
* **Per-modality check** (UNSOUND): each modality's change alone keeps the rule; reported only
  to count the claims it makes without a guarantee (and to search for a counterexample,
  :mod:`hybridcert.bench.counterexample`).

A threshold is the smallest double ``p`` at which the method certifies (every larger ``p``
certifies too: every bound is nondecreasing in ``p``); ``inf`` when even ``p = 1`` does not.
"""

from __future__ import annotations

import numpy as np

from hybridcert.blocks import HybridNoise
from hybridcert.certificate import MAJORITY, Rule, lower_bound
from hybridcert.noise import LikelihoodRatio


def modality_ratios(noise: HybridNoise, eps: float, r: int
                    ) -> tuple[LikelihoodRatio, LikelihoodRatio]:
    """The likelihood ratios of the image change alone and the token change alone."""
    return noise.ratio(noise.pair_budget(eps, 0)), noise.ratio(noise.pair_budget(0, r))


def sequential_lower(p, image: LikelihoodRatio, text: LikelihoodRatio):
    """Sequential-composition lower bound: the better of ``lower_image(lower_text(p))`` and
    ``lower_text(lower_image(p))`` (each bound rounded down, so the composition is sound)."""
    p = np.atleast_1d(np.asarray(p, dtype=float))
    text_first = np.atleast_1d(lower_bound(np.atleast_1d(lower_bound(p, text)), image))
    image_first = np.atleast_1d(lower_bound(np.atleast_1d(lower_bound(p, image)), text))
    return np.maximum(text_first, image_first)


def _check_rule(rule: Rule | None) -> Rule:
    rule = rule or MAJORITY
    if not isinstance(rule, Rule) or rule.kind == "benign":
        raise ValueError(f"rule must be Rule.majority() or Rule.flag(tau) (the baselines read a "
                         f"lower bound), got {rule!r}")
    return rule


def sequential_threshold(noise: HybridNoise, eps: float, r: int, rule: Rule | None = None
                         ) -> float:
    """Smallest double ``p`` whose sequential-composition bound satisfies ``rule`` at
    ``(eps, r)`` (two-class majority: ``> 1/2``; flag: ``>= tau``); ``inf`` if none."""
    rule = _check_rule(rule)
    joint = noise.threshold(noise.pair_budget(eps, r), rule)
    if not np.isfinite(joint):
        return float("inf")          # sequential composition never beats the joint bound
    image, text = modality_ratios(noise, eps, r)

    def certifies(x: float) -> bool:
        return bool(rule.holds(sequential_lower(x, image, text))[0])

    return _smallest_certified(certifies, start=float(np.nextafter(joint, 0.0)))


def per_modality_threshold(noise: HybridNoise, eps: float, r: int, rule: Rule | None = None
                           ) -> float:
    """Smallest ``p`` at which the UNSOUND per-modality check claims ``(eps, r)``: the image
    change alone and the token change alone each keep ``rule`` (the larger of the two
    one-modality thresholds)."""
    rule = _check_rule(rule)
    return max(noise.threshold(noise.pair_budget(eps, 0), rule),
               noise.threshold(noise.pair_budget(0, r), rule))


def _smallest_certified(certifies, start: float = 0.0) -> float:
    """Bisection on the bit patterns of doubles in [start, 1] for the smallest certified value
    of a monotone predicate (``inf`` when 1 is not certified; ``start`` is taken as not
    certified: a value below the joint threshold, which no valid bound beats)."""
    if not certifies(1.0):
        return float("inf")
    lo = int(np.float64(start).view(np.int64))
    hi = int(np.float64(1.0).view(np.int64))
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if certifies(float(np.int64(mid).view(np.float64))):
            hi = mid
        else:
            lo = mid
    return float(np.int64(hi).view(np.float64))


def grid_thresholds(noise: HybridNoise, cells, rule: Rule | None = None) -> dict[str, np.ndarray]:
    """Per cell ``(eps, r)``: the thresholds of the joint certificate, sequential composition
    and the per-modality check (arrays in ``cells`` order).  The joint one never exceeds
    sequential composition's (the joint bound is the tightest valid one)."""
    rule = _check_rule(rule)
    joint = np.array([noise.threshold(noise.pair_budget(e, r), rule) for e, r in cells])
    sequential = np.array([sequential_threshold(noise, e, r, rule) for e, r in cells])
    per_modality = np.array([per_modality_threshold(noise, e, r, rule) for e, r in cells])
    return {"joint": joint, "sequential": sequential, "per_modality": per_modality}


__all__ = ["grid_thresholds", "modality_ratios", "per_modality_threshold", "sequential_lower",
           "sequential_threshold"]
