"""The mixture family: a mixture-martingale confidence sequence, exact at (almost) every draw.

For an arm (a Bernoulli stream) and every rate p, ``E_p(n, k) = Q(n, k) / (p^k (1-p)^(n-k))``
with ``Q = w delta_1 + (1 - w) Beta(a, b)`` restricted to (floor, 1) is a nonnegative
martingale under Bernoulli(p); by Ville's inequality a threshold t is certified once
``E_t >= 1/level`` with ``k/n > t`` (docs/SEQUENTIAL.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq
from scipy.special import betaincc, betaln

from hybridcert.sequential.boundaries.base import Boundary
from hybridcert.sequential.bounds import LOG_MARGIN, bisect_count, schedule_points


@dataclass(frozen=True)
class Mixture:
    """The alternative ``Q = w delta_1 + (1 - w) Beta(a, b) restricted to (floor, 1)``.

    Parameters
    ----------
    floor : float
        Lower end of the Beta part's support, in [0, 1).
    w : float
        Weight of the point mass at p = 1, in [0, 1).
    a, b : float
        Beta shape parameters (> 0).
    """

    floor: float
    w: float = 0.5
    a: float = 1.0
    b: float = 1.0

    def log_q(self, n, k) -> np.ndarray:
        """log Q of one sequence with ``k`` successes in ``n`` draws (arrays broadcast)."""
        n = np.asarray(n, dtype=float)
        k = np.asarray(k, dtype=float)
        with np.errstate(divide="ignore"):
            tail = np.log(betaincc(k + self.a, n - k + self.b, self.floor))
            norm = betaln(self.a, self.b) + math.log(betaincc(self.a, self.b, self.floor))
        part = math.log1p(-self.w) + betaln(k + self.a, n - k + self.b) + tail - norm
        if self.w == 0:
            return part
        point = np.where(k == n, math.log(self.w), -np.inf)
        return np.logaddexp(part, point)

    def log_e(self, n, k, p) -> np.ndarray:
        """log E_p = log Q - log P_p of a sequence with ``k`` successes in ``n`` draws."""
        n, k, p = (np.asarray(v, dtype=float) for v in (n, k, p))
        with np.errstate(divide="ignore", invalid="ignore"):
            log_p = np.where(k > 0, k * np.log(p), 0.0)
            log_p = log_p + np.where(n > k, (n - k) * np.log1p(-p), 0.0)
        return self.log_q(n, k) - log_p

    def log_e1(self, n: int, k: int, p: float) -> float:
        """Scalar ``log_e`` (the same formula without array overhead)."""
        tail = betaincc(k + self.a, n - k + self.b, self.floor)
        part = -math.inf if tail <= 0 else (
            math.log1p(-self.w) + betaln(k + self.a, n - k + self.b) + math.log(tail)
            - betaln(self.a, self.b) - math.log(betaincc(self.a, self.b, self.floor)))
        if self.w > 0 and k == n:
            part = float(np.logaddexp(part, math.log(self.w)))
        log_p = (k * math.log(p) if k else 0.0) + ((n - k) * math.log1p(-p) if n > k else 0.0)
        return part - log_p

    def monotone_from(self, n, t) -> np.ndarray:
        """Smallest k from which ``E_t(n, k)`` is nondecreasing in k (for t >= floor): the
        Beta posterior restricted to (floor, 1) has mean >= (k + a)/(n + a + b) >= t, and
        E(k + 1)/E(k) is the posterior mean of the convex q(1 - t)/((1 - q)t) (Jensen)."""
        return np.maximum(np.ceil(np.asarray(t) * (np.asarray(n) + self.a + self.b) - self.a),
                          0).astype(np.int64)


def cs_lower(mixture: Mixture, level: float, n: int, k: int) -> float:
    if k <= 0 or n <= 0:
        return 0.0
    target = math.log(1 / level) + LOG_MARGIN

    def excess(p):
        return mixture.log_e1(n, k, p) - target

    top = k / n
    if excess(top) >= 0:                  # cannot happen: Q <= the maximum likelihood
        return top
    low = top * 0.5
    while excess(low) < 0:
        low *= 0.5
        if low < 1e-300:
            return 0.0
    root = brentq(excess, low, top, xtol=1e-15, rtol=4 * np.finfo(float).eps)
    while root > 0 and excess(root) < 0:   # report a value on the excluded side
        root = max(0.0, root - 1e-15 - 4 * np.finfo(float).eps * root)
    return root


def earliest_tau(mixture: Mixture, floor: float, alpha: float, n_max: int) -> int:
    """Earliest draw at which E_floor can reach 1/alpha (all draws successes)."""
    target = math.log(1 / alpha)
    if mixture.log_e(n_max, n_max, floor) < target:
        return n_max + 1
    lo, hi = 1, n_max
    while lo < hi:
        mid = (lo + hi) // 2
        if mixture.log_e(mid, mid, floor) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo



class MixtureBoundary(Boundary):
    """Checked at every draw up to ``dense``, then every ``growth`` factor (best for few
    thresholds and short runs); a bound at every rate, so also the radius mode's."""

    name = "mixture"
    radius_look_growth = 1.1

    def schedule(self, n_max, dense, growth, look_growth):
        return schedule_points(n_max, dense, growth)

    def crossing_counts(self, t, reachable, sched, n_max, level, levels, mixture):
        n = np.broadcast_to(sched, (len(t), len(sched))).astype(np.int64)
        tt = np.broadcast_to(np.where(reachable, t, 0.5)[:, None], n.shape)
        target = math.log(1 / level) + LOG_MARGIN

        def crosses(k):
            return mixture.log_e(n, k, tt) >= target

        low = np.maximum(np.floor(tt * n).astype(np.int64) + 1, mixture.monotone_from(n, tt))
        return bisect_count(crosses, low, n)

    def earliest_claim(self, floor, alpha, n_max, mixture, look_growth):
        return earliest_tau(mixture, floor, alpha, n_max)

    def lower_bound(self, n, k, level, mixture, looks):
        return cs_lower(mixture, level, n, k)
