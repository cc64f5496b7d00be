"""Baseline stopping rules, for the tests and benchmarks only (the product uses
:mod:`hybridcert.sequential.rules`): the previous rule (``BonferroniLooks``), fixed n
(``FixedN``), and two published sequential peers reimplemented from their papers —
Voráček's betting thresholds (``Betting``) and Horváth et al.'s adaptive stages
(``Adaptive``).  Each is a :class:`~hybridcert.sequential.rules.StoppingRule`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy.special import betaln

from hybridcert._validation import check_alpha, check_count
from hybridcert.sequential.bounds import clopper_pearson
from hybridcert.sequential.rules import ABSTAIN, RuleState, check_thresholds


def doubling_looks(n_min: int, n_max: int, growth: float = 2.0) -> list[int]:
    """Cumulative sizes of the previous rule's looks: n_min * growth^k, ending at n_max."""
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


class BonferroniLooks(RuleState):
    """The previous rule: ``n0`` selection draws pick the class, then estimation looks at
    ``doubling_looks(n_min, n_max)``, each a Clopper–Pearson bound at ``alpha / K``.

    Decision (``thresholds``): stop when every threshold is cleared or even the cap could not
    clear it (the cap's bound if the rate were the current upper bound).  Radius
    (``frontier`` and ``tolerance``): stop when the frontier at the cap's plausible bound
    is within ``tolerance``.  ``n_max`` counts estimation draws (``queries`` adds ``n0``).
    """

    def __init__(self, alpha: float, n_max: int, thresholds: Sequence[float] | None = None,
                 n0: int = 100, n_min: int = 100, growth: float = 2.0, num_classes: int = 2,
                 frontier: Callable[[float], np.ndarray] | None = None,
                 tolerance: float | np.ndarray | None = None):
        super().__init__(num_classes, n_max)
        self.alpha = check_alpha(alpha)
        self.n0 = check_count("n0", n0, 1)
        self._cap = self.n0 + self.n_max
        if (thresholds is None) == (frontier is None):
            raise ValueError("give either thresholds (decision) or frontier and tolerance "
                             "(radius)")
        if frontier is not None and tolerance is None:
            raise ValueError("tolerance is required with frontier")
        self.thresholds = None if thresholds is None else check_thresholds("thresholds", thresholds)
        self.frontier, self.tolerance = frontier, tolerance
        self.schedule = doubling_looks(n_min, n_max, growth)
        self.level = self.alpha / len(self.schedule)
        self.certified = np.zeros(0 if self.thresholds is None else len(self.thresholds),
                                  dtype=bool)
        self._top = -1
        self._hits = 0
        self._drawn = 0
        self._buffer = np.zeros(self.num_classes, dtype=np.int64)

    def next_draws(self) -> int:
        if self.done:
            return 0
        if self._top < 0:
            return self.n0 - self.queries
        nxt = next(s for s in self.schedule if s > self._drawn)
        return nxt - self._drawn

    def observe(self, labels) -> None:
        arr = self._labels(labels)
        pos = 0
        while pos < arr.size and not self.done:
            if self._top < 0:
                take = min(self.n0 - self.queries, arr.size - pos)
                np.add.at(self._buffer, arr[pos:pos + take], 1)
                self.counts += np.bincount(arr[pos:pos + take], minlength=self.num_classes)
                self.queries += take
                pos += take
                if self.queries == self.n0:
                    self._top = int(np.argmax(self._buffer))
                continue
            nxt = next(s for s in self.schedule if s > self._drawn)
            take = min(nxt - self._drawn, arr.size - pos)
            chunk = arr[pos:pos + take]
            self._hits += int((chunk == self._top).sum())
            self.counts += np.bincount(chunk, minlength=self.num_classes)
            self._drawn += take
            self.queries += take
            pos += take
            if self._drawn == nxt:
                self._look()

    def _look(self) -> None:
        low, high = clopper_pearson(self._hits, self._drawn, self.level)
        reach, _ = clopper_pearson(min(self.n_max, math.ceil(high * self.n_max)), self.n_max,
                                   self.level)
        if self.thresholds is not None:
            done = bool(np.all((low > self.thresholds) | (reach <= self.thresholds)))
        else:
            done = self._radius_settled(low, reach)
        if done or self._drawn >= self.n_max:
            self.done = True
            self.p_lower = low
            self.label = self._top if low > 0.5 else ABSTAIN
            if self.thresholds is not None:
                self.certified = low > self.thresholds

    def _radius_settled(self, low, reach) -> bool:
        if reach <= 0.5:
            return True
        now = np.asarray(self.frontier(max(low, 0.5)), dtype=float)
        best = np.asarray(self.frontier(reach), dtype=float)
        with np.errstate(invalid="ignore"):
            gap = np.where(best == now, 0.0, best - now)
        return bool(np.all(gap <= self.tolerance))


class FixedN(RuleState):
    """Fixed-n certification as a rule: ``n0`` selection draws (majority mode; 0 with a
    ``target_class``), then ``n`` estimation draws and one Clopper–Pearson bound at alpha."""

    def __init__(self, thresholds: Sequence[float], alpha: float, n: int, n0: int = 100,
                 num_classes: int = 2, target_class: int | None = None):
        n = check_count("n", n, 1)
        self.n0 = 0 if target_class is not None else check_count("n0", n0, 1)
        super().__init__(num_classes, n + self.n0)
        self.alpha = check_alpha(alpha)
        self.n = n
        self.thresholds = check_thresholds("thresholds", thresholds)
        self.target_class = target_class
        self.certified = np.zeros(len(self.thresholds), dtype=bool)
        self._labels_seen: list[np.ndarray] = []

    def next_draws(self) -> int:
        return 0 if self.done else self.n_max - self.queries

    def observe(self, labels) -> None:
        arr = self._labels(labels)
        if not arr.size:
            return
        self._labels_seen.append(arr)
        self.queries += arr.size
        self.counts += np.bincount(arr, minlength=self.num_classes)
        if self.queries < self.n_max:
            return
        self.done = True
        stream = np.concatenate(self._labels_seen)
        if self.target_class is None:
            top = int(np.argmax(np.bincount(stream[: self.n0], minlength=self.num_classes)))
        else:
            top = int(self.target_class)
        k = int((stream[self.n0:] == top).sum())
        self.p_lower, self.p_upper = clopper_pearson(k, self.n, self.alpha)
        self.certified = self.p_lower > self.thresholds
        if self.target_class is None:
            self.label = top if self.p_lower > 0.5 else ABSTAIN
        else:
            self.label = top if self.certified.any() else ABSTAIN


# -- published peers ------------------------------------------------------------------------
def kt_boundary(p: float, level: float, n_max: int) -> np.ndarray:
    """Voráček 2024: per draw n, the smallest count k >= p n at which the KT mixture (Beta(1/2,
    1/2)) likelihood ratio against p exceeds 1/level, made non-decreasing by a running
    minimum from the cap back (a count that will cross later anyway decides now)."""
    n = np.arange(n_max + 1)
    target = math.log(1 / level)

    def ok(k):
        with np.errstate(divide="ignore", invalid="ignore"):
            log_lr = (betaln(k + 0.5, n - k + 0.5) - betaln(0.5, 0.5)
                      - np.where(k > 0, k * math.log(p), 0.0)
                      - np.where(n > k, (n - k) * math.log1p(-p), 0.0))
        return log_lr > target

    lo, hi = np.ceil(p * n).astype(np.int64), n.copy()
    found = ok(hi)
    for _ in range(64):
        if np.all(lo >= hi):
            break
        mid = (lo + hi) // 2
        good = ok(mid)
        hi, lo = np.where(good, mid, hi), np.where(good, lo, mid + 1)
    out = np.where(found, hi, n_max + 1)
    out[0] = n_max + 1
    return np.minimum.accumulate(out[::-1])[::-1]


class Betting:
    """Per-draw betting thresholds (Voráček 2024) for a given class: certified when the
    count reaches the upper threshold, rejected when the failures reach the mirrored one,
    abstain at the cap.  ``side_alpha``: alpha/2 as published."""

    _cache: dict = {}

    def __init__(self, threshold: float, side_alpha: float, n_max: int, target: int):
        key = (threshold, side_alpha, n_max)
        if key not in self._cache:
            upper = kt_boundary(threshold, side_alpha, n_max)
            fail = kt_boundary(1 - threshold, side_alpha, n_max)
            lower = np.maximum.accumulate(np.arange(n_max + 1) - fail)
            self._cache[key] = (upper, lower)
        self.upper, self.lower = self._cache[key]
        self.n_max, self.target = n_max, target
        self.done, self.queries, self.count, self.certified = False, 0, 0, np.zeros(1, bool)
        self.label = target

    def next_draws(self) -> int:
        return min(4096, self.n_max - self.queries)

    def observe(self, labels) -> None:
        cum = self.count + np.cumsum(np.asarray(labels) == self.target)
        n = self.queries + 1 + np.arange(len(labels))
        up = np.nonzero(cum >= self.upper[n])[0]
        down = np.nonzero(cum <= self.lower[n])[0]
        first = min(up[0] if up.size else len(n), down[0] if down.size else len(n))
        if first < len(n):
            self.done = True
            self.certified[0] = bool(up.size and up[0] == first)
            self.queries, self.count = int(n[first]), int(cum[first])
            return
        self.queries, self.count = int(n[-1]), int(cum[-1])
        self.done = self.queries >= self.n_max


class Adaptive:
    """Horváth et al. 2022 as run by Voráček's code: cumulative stages ns = 100, 1,100,
    11,100, then the cap; two-sided Clopper–Pearson at alpha * 2 / 4 (alpha/4 per side);
    certify when the lower end clears p*, stop when the upper end is below it."""

    def __init__(self, threshold: float, alpha: float, n_max: int, target: int):
        self.stages = [s for s in (100, 1100, 11100) if s < n_max] + [n_max]
        self.level = alpha / 4
        self.threshold, self.target = threshold, target
        self.done, self.queries, self.count, self.certified = False, 0, 0, np.zeros(1, bool)
        self.label = target

    def next_draws(self) -> int:
        return next(s for s in self.stages if s > self.queries) - self.queries

    def observe(self, labels) -> None:
        self.count += int((np.asarray(labels) == self.target).sum())
        self.queries += len(labels)
        low, high = clopper_pearson(self.count, self.queries, self.level)
        if low > self.threshold or high < self.threshold or self.queries >= self.stages[-1]:
            self.done = True
            self.certified[0] = low > self.threshold


