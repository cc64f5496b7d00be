"""The spending family (decisions only): exact alpha-spending boundaries at each threshold.

At geometric looks, each threshold's boundary is the exact group-sequential one: the count
distribution of the paths that have not crossed is carried forward from look to look at
p = p* (binomial convolution), and each look's boundary is the lowest count whose newly
crossing mass keeps the cumulative error within ``level * (i + 1) / K`` (Lan & DeMets alpha
spending, Biometrika 1983; exact binomial computation as in Jennison & Turnbull, *Group
Sequential Methods*, 2000, ch. 12).  Crossing is monotone in the true rate, so p = p* is the
worst case of the null p <= p*; the boundaries are ordered across thresholds, so the union
over thresholds is free.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.stats import binom as binom_dist

from hybridcert.sequential.boundaries.base import RADIUS
from hybridcert.sequential.boundaries.looks import LooksBoundary

#: Spending family: per look, each draw-count step's upper tail beyond the count whose tail
#: probability is ``level * _SPEND_TAIL / K`` is not carried (its mass is charged as if it
#: crossed); lower tails are moved up to the lowest carried count (counts only rise, so a
#: path moved up crosses no later than it would have: conservative, and nothing is charged).
_SPEND_TAIL = 1e-9
#: ... and the level is calibrated with this relative margin for float rounding.
_SPEND_MARGIN = 1e-6
#: Smallest alpha of the spending family: far below it the masses would be subnormal floats,
#: whose rounding the margin no longer covers.
SPEND_MIN_ALPHA = 1e-200


def spending_boundary(p: float, looks: Sequence[int], level: float
                      ) -> tuple[np.ndarray, float]:
    """Exact alpha-spending boundary of the null "rate <= p" at the given looks.

    Parameters
    ----------
    p : float
        The threshold, in (0, 1).
    looks : sequence of int
        Increasing draw counts at which the boundary is checked.
    level : float
        Total probability, at rate p, of ever reaching the boundary.

    Returns
    -------
    counts : ndarray of int
        Per look, the count at or above which the look crosses (``n + 1``: it cannot).  Every
        crossing count exceeds ``p * n``; at look i the cumulative crossing probability is at
        most ``level * (i + 1) / len(looks)`` (unspent budget carries over).
    error : float
        Upper bound (to float rounding, about 1e-14 relative, which the level's 1e-6 margin
        covers) on the probability at rate p of crossing at some look: the crossing mass of a
        process whose counts are never below the true ones (lower tails moved up), plus the
        upper-tail mass not carried.  At most ``level``.
    """
    looks = np.asarray(looks, dtype=np.int64)
    counts = np.empty(len(looks), dtype=np.int64)
    budget_step = level * (1 - _SPEND_MARGIN) / len(looks)
    tail_tol = level * _SPEND_TAIL / len(looks)
    lo, dist = 0, np.ones(1)           # mass of the not-crossed paths at counts lo, lo + 1, ...
    prev, charged = 0, 0.0
    for i, n in enumerate(looks):
        step = int(n) - prev
        k_lo = int(binom_dist.ppf(tail_tol, step, p))
        k_hi = max(k_lo, int(binom_dist.isf(tail_tol, step, p)))
        kernel = binom_dist.pmf(np.arange(k_lo, k_hi + 1), step, p)
        kernel[0] += binom_dist.cdf(k_lo - 1, step, p)             # moved up: conservative
        charged += float(binom_dist.sf(k_hi, step, p)) * math.fsum(dist)
        dist = np.convolve(dist, kernel)
        lo += k_lo
        budget = budget_step * (i + 1) - charged
        tail = np.cumsum(dist[::-1])[::-1]             # mass at counts >= lo + index
        fits = np.nonzero(tail <= budget)[0]
        # Above every carried count only uncarried mass lies, already charged: a crossing
        # there is free while the charges are within the budget, and refused once they are not
        first = lo + (int(fits[0]) if fits.size else dist.size)
        c = max(first, math.floor(p * n) + 1) if budget >= 0 else n + 1
        if c > n:
            counts[i] = n + 1
        else:
            counts[i] = c
            charged += math.fsum(dist[c - lo:])
            dist = dist[:c - lo]
        prev = int(n)
        low_tail = np.cumsum(dist)                    # move what can no longer matter up
        cut = int(np.searchsorted(low_tail, 1e-40 * budget_step))
        if 0 < cut < dist.size:
            dist[cut] += low_tail[cut - 1]
            dist, lo = dist[cut:], lo + cut
    return counts, charged


def spending_counts(t, reachable, sched, n_max, level, levels) -> np.ndarray:
    """Spending family: each reachable threshold's boundary at the looks ``sched``, at its own
    level (``levels``, default ``level``), made ordered across thresholds."""
    raw = np.full((len(t), len(sched)), n_max + 1, dtype=np.int64)
    for j in np.nonzero(reachable)[0]:
        own = level if levels is None else levels[j]
        raw[j], error = spending_boundary(float(t[j]), sched, own)
        if not error <= own:      # a bound, computed: refuse rather than over-claim
            raise ValueError(f"boundary 'spending' cannot calibrate threshold "
                             f"{float(t[j])!r} at level {own:g} (error bound {error:g}); "
                             f"use boundary 'looks'")
    # a higher threshold never crosses below a lower one: raising a boundary only lowers its
    # error, and ordered boundaries make the union over thresholds free
    order = np.argsort(t, kind="stable")
    raw[order] = np.maximum.accumulate(raw[order], axis=0)
    return raw



class SpendingBoundary(LooksBoundary):
    """Looks at 16 draws, then every ``look_growth`` factor (default 1.1); spends the whole
    level, so it is the cheapest for long runs (tables of many thresholds).  No bound at
    rates between thresholds (the reported bound is the highest certified threshold), hence
    no radius mode."""

    name = "spending"
    look_growth = 1.1
    per_threshold_levels = True

    def check(self, alpha, mode):
        if mode == RADIUS:
            raise ValueError("boundary spending is for the decision mode (it is calibrated at "
                             "the targets' thresholds); use mixture or looks for radius")
        if not alpha >= SPEND_MIN_ALPHA:
            raise ValueError(f"alpha must be >= {SPEND_MIN_ALPHA:g} with boundary 'spending' "
                             f"(its exact computation runs in floating point), got {alpha!r}")

    def crossing_counts(self, t, reachable, sched, n_max, level, levels, mixture):
        return spending_counts(t, reachable, sched, n_max, level, levels)

    def lower_bound(self, n, k, level, mixture, looks):
        return 0.0          # its level is spent on the thresholds
