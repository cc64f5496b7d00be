"""The looks family: Clopper–Pearson at level / K at K geometric looks (a union bound over
the looks).  Cheaper than the mixture for long runs, dearer for short ones."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import beta as beta_dist

from hybridcert.sequential.boundaries.base import Boundary
from hybridcert.sequential.bounds import bisect_count, clopper_pearson, look_points


class LooksBoundary(Boundary):
    """Looks at 16 draws, then every ``look_growth`` factor (default 1.25), and ``n_max``."""

    name = "looks"

    def crossing_counts(self, t, reachable, sched, n_max, level, levels, mixture):
        n = np.broadcast_to(sched, (len(t), len(sched))).astype(np.int64)
        tt = np.broadcast_to(np.where(reachable, t, 0.5)[:, None], n.shape)

        def crosses(k):               # the Clopper–Pearson lower bound is increasing in k
            with np.errstate(invalid="ignore"):
                bound = beta_dist.ppf(level / len(sched), np.maximum(k, 1), n - k + 1)
            return (k > 0) & (bound > tt)

        return bisect_count(crosses, np.floor(tt * n).astype(np.int64) + 1, n)

    def earliest_claim(self, floor, alpha, n_max, mixture, look_growth):
        # the first look at which all successes could be a claim at level <= alpha: the
        # all-success path has probability floor^n under p = floor
        looks = look_points(n_max, look_growth)
        ok = (looks * math.log(floor) <= math.log(alpha) if floor > 0
              else np.ones(len(looks), dtype=bool))
        return int(looks[np.argmax(ok)]) if ok.any() else n_max + 1

    def lower_bound(self, n, k, level, mixture, looks):
        at = np.searchsorted(looks, n)
        if at < len(looks) and looks[at] == n:
            return clopper_pearson(k, n, level / len(looks))[0]
        return 0.0
