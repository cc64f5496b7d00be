"""Elementary counts and bounds shared by the boundaries and the rules (pure numpy/scipy).

The draw-count schedules, the vectorized count search, the Krichevsky–Trofimov upper
bound that gives thresholds up, and the one-sided Clopper–Pearson bounds.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import brentq
from scipy.special import betaln
from scipy.stats import beta as beta_dist

#: Every draw count up to this is a schedule point ...
DENSE = 256
#: ... then the schedule grows by this factor.
GROWTH = 1.005
#: Log-evidence margin: float rounding can never turn a non-crossing into a crossing.
LOG_MARGIN = 1e-9


def log_kt(n, k) -> np.ndarray:
    """log of the Krichevsky–Trofimov (Beta(1/2, 1/2)) mixture probability of a sequence."""
    return betaln(np.asarray(k) + 0.5, np.asarray(n) - np.asarray(k) + 0.5) - betaln(0.5, 0.5)


def log_binomial(n, k, p) -> np.ndarray:
    """log of the probability of one sequence with k successes in n draws at rate p."""
    n, k, p = (np.asarray(v, dtype=float) for v in (n, k, p))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(k > 0, k * np.log(p), 0.0)
        return out + np.where(n > k, (n - k) * np.log1p(-p), 0.0)


def schedule_points(n_max: int, dense: int = DENSE, growth: float = GROWTH) -> np.ndarray:
    """Draw counts at which the boundaries are computed: 1..dense, then ceil(n * growth)
    until ``n_max`` (included)."""
    points = list(range(1, min(dense, n_max) + 1))
    n = points[-1]
    while n < n_max:
        n = min(n_max, max(n + 1, math.ceil(n * growth)))
        points.append(n)
    return np.array(points, dtype=np.int64)


def bisect_count(ok, low, high):
    """Smallest k in [low, high] with ok(k) (ok monotone: False then True); high + 1 if
    none.  Vectorized over arrays of bounds."""
    low, high = np.asarray(low, dtype=np.int64).copy(), np.asarray(high, dtype=np.int64).copy()
    empty = low > high
    safe_high = np.where(empty, low, high)
    found = ok(safe_high) & ~empty
    lo, hi = low, safe_high
    for _ in range(64):
        if np.all(lo >= hi):
            break
        mid = (lo + hi) // 2
        good = ok(mid)
        hi = np.where(good, mid, hi)
        lo = np.where(good, lo, mid + 1)
    return np.where(found, hi, high + 1)


def look_points(n_max: int, growth: float, first: int = 16) -> np.ndarray:
    """Looks of the ``looks`` family: ``first``, then every ``growth`` factor, and n_max."""
    points = schedule_points(n_max, dense=1, growth=growth)
    return points[points >= min(first, n_max)]


def kt_upper(n: int, k: int, level: float) -> float:
    """Upper confidence-sequence bound of the KT mixture at ``level`` after k of n."""
    if k >= n:
        return 1.0
    target = math.log(1 / level)

    log_q = float(log_kt(n, k))

    def excess(p):
        log_p = (k * math.log(p) if k else 0.0) + (n - k) * math.log1p(-p)   # 0 log 0 = 0
        return log_q - log_p - target

    if excess(1 - 1e-16) < 0:
        return 1.0
    root = brentq(excess, k / n, 1 - 1e-16, xtol=1e-15, rtol=4 * np.finfo(float).eps)
    while root < 1 and excess(root) < 0:       # report a value on the excluded side
        root = min(1.0, root + 1e-15 + 4 * np.finfo(float).eps * root)
    return root


def clopper_pearson(k: int, n: int, alpha: float) -> tuple[float, float]:
    """One-sided Clopper–Pearson lower and upper bounds, each at level ``1 - alpha``."""
    lower = float(beta_dist.ppf(alpha, k, n - k + 1)) if k > 0 else 0.0
    upper = float(beta_dist.ppf(1 - alpha, k + 1, n - k)) if k < n else 1.0
    return lower, upper
