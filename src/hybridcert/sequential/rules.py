"""Anytime-valid stopping rules for Monte Carlo certification (pure numpy/scipy, no model).

A rule (:class:`StoppingRule`) is a per-input state machine driven by whoever draws noisy
copies::

    rule = DecisionTest(thresholds=[0.76, 0.92], alpha=0.001, n_max=100_000)
    while not rule.done:
        rule.observe(draw_labels(rule.next_draws()))   # any number >= 1 of labels, in order
    rule.label, rule.certified, rule.p_lower, rule.queries

Every rule's outcome is a function of the label sequence alone: how the labels are cut into
``observe`` calls changes neither the decisions nor ``queries`` (the draws the decision used;
labels handed over after it are counted in ``received`` and otherwise ignored).

The statistics (docs/SEQUENTIAL.md has the proofs and references)
-----------------------------------------------------------------
For each tracked Bernoulli stream ("arm": the indicator that a draw is class c, or that it is
not class c), a mixture likelihood ratio against every p,

    E_p(n, k) = Q(n, k) / (p^k (1 - p)^(n - k)),
    Q = w * delta_1 + (1 - w) * Beta(a, b) restricted to (floor, 1),

is a nonnegative martingale under Bernoulli(p) for every fixed p, so by Ville's inequality
``P_p(E_p(n, k) >= 1/level for some n) <= level``: the set {p : E_p < 1/level} is a confidence
sequence (Robbins 1970; Howard, Ramdas, McAuliffe & Sekhon 2021; Waudby-Smith & Ramdas 2023),
valid at every draw.  ``floor`` is the lowest threshold and the point mass at p = 1 makes an
always-right model cheap to certify.  A threshold t is certified once ``E_t >= 1/level`` with
``k/n > t`` (then ``E_p >= 1/level`` for every p <= t, as Q does not depend on p).

*No selection sample.*  In the majority mode every class is an arm.  A wrong claim for class c
needs its confidence sequence to pass ``max(p_c, floor)``; when ``p_c < floor`` a change of
measure from ``p = floor`` bounds that by ``level * exp(-tau * KL(floor || p_c))``, with tau
the earliest draw at which any claim is possible.  The per-arm level is alpha divided by the
worst case over p of the summed factors, so the total error stays <= alpha (for two classes
and a floor well above 1/2 the division is by about 1; at floor 1/2 it is by 2).

*Schedule.*  The crossing condition is computed exactly at a fixed schedule of draw counts
(every draw up to ``dense``, then every ``growth`` factor) and a draw between two schedule
points decides as soon as the crossing at the next one is certain whatever the remaining
draws (counts never fall): the decision is the schedule rule's, taken earlier.  The error is
that of the per-draw boundary (``per_draw_boundary``), which ``tests/sequential/test_rules.py``
sums exactly over the stopping boundary.

*Giving up* (never a validity question: stopping without a claim cannot be wrong).  A
threshold is given up once even the cap could not clear it: at a schedule point, when the
count still needed at ``n_max`` would need a rate above an upper confidence bound on the arm
(Krichevsky–Trofimov mixture at level ``futility``), or at ``n_max``.  With ``price``, also
when settling it is projected to cost more draws than it is worth (many thresholds at once).

*Status.*  Every threshold of a finished ``DecisionTest`` says how it ended (``status``):
certified; refuted (the KT upper confidence bound at level ``futility``, on every arm at the
draw it was given up, fell below the threshold itself: the target is false, at that level —
a reason, not a claim at alpha); gave_up (the price); cap (not certifiable within the draw
cap, or the cap reached).  The KT bound is a confidence sequence (Ville), so a true target is
called refuted with probability at most ``futility``: a wrong call needs the bound of an arm
whose rate reaches the threshold to fall below it.
``BoundedDecision`` runs the targets and a base question (the class at the zero budget) as two
tests on the same draws, at ``(1 - base_share) alpha`` and ``base_share alpha`` (union bound),
and stops when the targets are settled: the base counts only if settled by then.

*Boundaries.*  The crossing counts come from a boundary family chosen by name
(:mod:`hybridcert.sequential.boundaries`): the mixture above, Clopper–Pearson at geometric
looks (``looks``), or exact alpha spending at the thresholds (``spending``, decisions only).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol, runtime_checkable

import numpy as np

from hybridcert._validation import check_alpha, check_count, check_level, check_positive
from hybridcert.sequential.boundaries import DECISION, RADIUS, Mixture, get_boundary
from hybridcert.sequential.bounds import (
    DENSE,
    GROWTH,
    bisect_count,
    kt_upper,
    log_binomial,
    log_kt,
    look_points,
    schedule_points,
)

#: Label of an input whose class is not certified (``hybridcert.smoothing.ABSTAIN``).
ABSTAIN = -1
#: Detector label of a certified-benign input when there are more than two classes
#: (``hybridcert.smoothing.NOT_FLAGGED``): which other class it is was not asked.
NOT_FLAGGED = -2
#: Outcome codes per threshold.
ABOVE, BELOW, OPEN = 1, -1, 0
#: How a threshold ended (``DecisionTest.status``): its lower bound crossed (certified); the
#: upper bound on the rate at level ``futility`` fell below the threshold (refuted: the target
#: is false at that level; see :func:`refutes`); stopped open by a cost rule, the price or
#: (``BoundedDecision``'s base) the targets being settled (gave_up); not certifiable within
#: the draw cap while its upper bound still reaches the threshold, or the cap reached (cap).
#: ``STILL_OPEN`` while undecided.
CERTIFIED, REFUTED, GAVE_UP, CAP = "certified", "refuted", "gave_up", "cap"
STATUSES = (CERTIFIED, REFUTED, GAVE_UP, CAP)
STILL_OPEN = "open"
#: Price looks (``DecisionTest(price=...)``): from this draw on, every this factor.
PRICE_START, PRICE_GROWTH = 64, 1.1
_MODES = ("majority", "flag", "benign", "detector")


def refutes(n: int, k: int, threshold: float, futility: float) -> bool:
    """Whether k of n refute the claim "rate > threshold": the KT mixture's upper
    confidence bound at level ``futility`` lies below the threshold.  The KT bound is a
    confidence sequence, so for a rate >= the threshold this happens at any draw with
    probability at most ``futility``.  A threshold of 1 (a p* rounded up to 1) is refuted
    only once a draw went against the arm, an infinite one (no rate reaches it) always."""
    return bool(n > 0 and kt_upper(int(n), int(k), futility) < threshold)


# -- per-arm plans (cached: a service builds the same rule for every request) ----------------
@dataclass(frozen=True)
class _Plan:
    """Boundaries of one arm at the schedule points.

    ``cert[j, s]``: a count >= this at any draw n <= sched[s] (and after sched[s-1]) makes
    the crossing at a schedule point <= ... certain (right-to-left running minimum of the
    exact boundary); ``n_max + 1`` when impossible.  ``give[j, s]``: at schedule point s a
    count <= this gives threshold j up; -1 when it cannot.
    """

    thresholds: np.ndarray
    level: float
    mixture: Mixture
    sched: np.ndarray
    cert: np.ndarray
    give: np.ndarray
    raw_cap: np.ndarray        # exact boundary at n_max per threshold (n_max + 1: none)
    family: str = "mixture"

    def lower_bound(self, n: int, k: int) -> float:
        """Lower confidence bound on the arm's probability after k of n, valid with the
        rest of the rule's claims (:meth:`Boundary.lower_bound` of the family)."""
        return get_boundary(self.family).lower_bound(n, k, self.level, self.mixture,
                                                     self.sched)

    def per_draw(self, j: int) -> np.ndarray:
        """Per-draw certification boundary of threshold ``j``: entry n (n = 0..n_max) is the
        count that decides at draw n (n_max + 1: never); entry 0 is unused."""
        n_max = int(self.sched[-1])
        index = np.searchsorted(self.sched, np.arange(n_max + 1), side="left")
        index[0] = 0
        out = self.cert[j, np.minimum(index, len(self.sched) - 1)].copy()
        out[0] = n_max + 1
        return out



@lru_cache(maxsize=64)
def _plan(thresholds: tuple, level: float, n_max: int, w: float, a: float, b: float,
          futility: float, dense: int, growth: float, family: str = "mixture",
          look_growth: float = 1.25, levels: tuple | None = None) -> _Plan:
    """Boundaries of one arm, from its family's crossing counts.  ``levels``: one level per
    threshold, for a family with ``per_threshold_levels`` (default ``level`` for all)."""
    boundary = get_boundary(family)
    t = np.array(thresholds, dtype=float)
    reachable = t < 1
    floor = float(t[reachable].min()) if reachable.any() else 0.0
    mixture = Mixture(floor, w, a, b)
    sched = boundary.schedule(n_max, dense, growth, look_growth)
    n = np.broadcast_to(sched, (len(t), len(sched))).astype(np.int64)
    raw = boundary.crossing_counts(t, reachable, sched, n_max, level, levels, mixture)
    raw = np.where(raw > n, n_max + 1, raw)
    raw[~reachable] = n_max + 1
    cert = np.minimum.accumulate(raw[:, ::-1], axis=1)[:, ::-1]
    raw_cap = raw[:, -1].copy()

    # Give up where the count still needed at n_max asks for a rate above the upper
    # confidence bound at level `futility` (KT mixture), or at n_max itself.
    f_target = math.log(1 / futility)
    remaining = np.maximum(n_max - n, 1)

    def gives_up(k):
        need = (raw_cap[:, None] - k) / remaining
        with np.errstate(divide="ignore", invalid="ignore"):
            safe = np.clip(need, 1e-300, 1 - 1e-16)
            evidence = log_kt(n, k) - log_binomial(n, k, safe)
        return (need > 1) | ((need > k / n) & (evidence >= f_target))

    # gives_up is decreasing in k: the largest k that gives up = (smallest k that does not) - 1
    keeps = bisect_count(lambda k: ~gives_up(k), np.zeros_like(n), n)
    give = keeps - 1
    give[:, -1] = n_max          # the cap: everything still open is given up
    for arr in (cert, give, raw_cap, sched, t):
        arr.setflags(write=False)
    return _Plan(t, level, mixture, sched, cert, give, raw_cap, family)



@lru_cache(maxsize=256)
def _arm_level(specs: tuple, alpha: float, n_max: int, w: float, a: float, b: float,
               family: str = "mixture", look_growth: float = 1.25
               ) -> tuple[float, list[float]]:
    """Per-arm level and floors for arms with thresholds ``specs`` (module docstring)."""
    boundary = get_boundary(family)
    floors, taus = [], []
    for t in specs:
        reach = [v for v in t if v < 1]
        floors.append(min(reach) if reach else 0.0)
        if not reach:
            taus.append(n_max + 1)
        else:
            taus.append(boundary.earliest_claim(floors[-1], alpha, n_max,
                                                Mixture(floors[-1], w, a, b), look_growth))
    active = [c for c in range(len(specs)) if taus[c] <= n_max]
    if len(active) <= 1:
        return alpha, floors
    factor = overlap_factor([floors[c] for c in active], [taus[c] for c in active],
                            complementary=len(specs) == 2)
    return alpha / factor, floors


#: Tiers of the spending family: the class choice is "free" above a cut when the overlap
#: factor of the thresholds above it is at most this.
_FREE_CHOICE = 1.01


@lru_cache(maxsize=256)
def _tier_levels(specs: tuple, alpha: float, n_max: int, w: float, a: float, b: float,
                 family: str, look_growth: float, share: float
                 ) -> tuple[tuple[float, ...], ...]:
    """Per-arm, per-threshold levels of a family with ``per_threshold_levels`` (spending).

    Choosing the class costs a factor up to 2 on every threshold when the lowest one is near
    1/2, though only thresholds near 1/2 can be claimed by two classes at once.  Split them:
    the thresholds below the lowest cut above which the choice is free (overlap factor <=
    ``_FREE_CHOICE``) form a low tier accounted at ``share * alpha``, the rest a high tier at
    ``(1 - share) * alpha``, each tier with its own overlap factor (the accounting of a rule
    with only that tier's thresholds).  A union bound over the two tiers keeps the total at
    alpha.  One tier (every threshold at ``_arm_level``'s level) when no such cut exists or
    the choice is already free.
    """
    level, _ = _arm_level(specs, alpha, n_max, w, a, b, family, look_growth)
    single = tuple(tuple(level for _ in t) for t in specs)
    if level * _FREE_CHOICE >= alpha or not 0 < share < 1:
        return single
    for cut in sorted({v for t in specs for v in t if v < 1}):
        high = tuple(tuple(v for v in t if v >= cut) for t in specs)
        low = tuple(tuple(v for v in t if v < cut) for t in specs)
        if not any(low):
            continue
        top, _ = _arm_level(high, (1 - share) * alpha, n_max, w, a, b, family, look_growth)
        if top * _FREE_CHOICE < (1 - share) * alpha:
            continue
        bottom, _ = _arm_level(low, share * alpha, n_max, w, a, b, family, look_growth)
        return tuple(tuple(top if v >= cut else bottom for v in t) for t in specs)
    return single


def overlap_factor(floors: Sequence[float], taus: Sequence[int], complementary: bool) -> float:
    """Worst case over the arms' true probabilities of ``sum_c g_c(p_c)``, where
    ``g_c(p) = 1`` for ``p >= floor_c`` and ``exp(-tau_c KL(floor_c || p))`` below: the total
    error is at most ``level * factor`` (see the module docstring).

    ``complementary``: two arms whose probabilities sum to one (two classes; flag and benign
    sides of one class) — a rigorous upper bound from a grid in p, where each g is monotone.
    Otherwise (more than two classes, every floor >= 1/2): ``1 + (K - 1) g(1/2)``.
    """

    def g(c, p):
        p = np.asarray(p, dtype=float)
        f = floors[c]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            kl = f * np.log(f / p) + (1 - f) * np.log((1 - f) / (1 - p))
            return np.where(p >= f, 1.0, np.exp(-taus[c] * np.nan_to_num(kl, nan=np.inf)))

    if complementary:
        grid = np.linspace(0.0, 1.0, 200_001)
        # On [grid_i, grid_i+1], g_0 is at most its value at the right end and g_1(1 - p) at
        # most its value at the left end (both nondecreasing in their own probability).
        return float(np.max(g(0, grid[1:]) + g(1, 1 - grid[:-1])))
    if min(floors) < 0.5:
        raise ValueError("more than two arms need every floor >= 1/2")
    return 1.0 + (len(floors) - 1) * float(max(g(c, 0.5) for c in range(len(floors))))


def benign_label(flagged_class: int, num_classes: int) -> int:
    """The label of an input certified benign (its flagged class's probability below the
    threshold): the other class of two, else ``NOT_FLAGGED`` — a certified answer, never
    ``ABSTAIN``.  The one place this is decided (rules, sequential and fixed-n results)."""
    return 1 - int(flagged_class) if num_classes == 2 else NOT_FLAGGED


# -- the rules ------------------------------------------------------------------------------
@runtime_checkable
class StoppingRule(Protocol):
    """What a driver needs of a rule: how many draws to make next, and a place for labels.

    Drive it as ``while not rule.done: rule.observe(labels(rule.next_draws()))``; the
    outcome is a function of the label sequence alone.  :class:`RuleState` gives the common
    state; :class:`DecisionTest`, :class:`BoundedDecision` and :class:`RadiusTest` (and the
    baselines of :mod:`hybridcert.sequential.baselines`) implement it.
    """

    done: bool
    queries: int
    label: int

    def next_draws(self) -> int:
        """How many draws before anything can be decided (>= 1; 0 once done)."""
        ...

    def observe(self, labels) -> None:
        """Take labels in draw order (any number, more or fewer than ``next_draws``)."""
        ...


class RuleState:
    """Common state of a rule: counts per class, draws used and received, looks.

    Attributes
    ----------
    done : bool
    label : int
        Certified class, or ``ABSTAIN``.
    certified : ndarray of bool
        Per threshold (decision rules).
    p_lower, p_upper : float
        Valid confidence bounds to report (0 and 1 when nothing better is covered).
    queries : int
        Draws the decision used.
    received : int
        Labels handed to ``observe`` (>= ``queries``).
    looks : int
        ``observe`` calls that contributed draws.
    counts : ndarray of int
        Per-class counts of the first ``queries`` draws.
    """

    def __init__(self, num_classes: int, n_max: int):
        self.num_classes = check_count("num_classes", num_classes, 2)
        self.n_max = check_count("n_max", n_max, 1)
        self._cap = self.n_max          # most draws the rule can use
        self.done = False
        self.label = ABSTAIN
        self.queries = 0
        self.received = 0
        self.looks = 0
        self.counts = np.zeros(self.num_classes, dtype=np.int64)
        self.p_lower = 0.0
        self.p_upper = 1.0

    @property
    def leader(self) -> int:
        """Most frequent class so far (a point prediction, not a certified one)."""
        return int(np.argmax(self.counts))

    def _labels(self, labels) -> np.ndarray:
        arr = np.asarray(labels)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"labels must be a 1-D array of integer class labels, got "
                             f"shape {arr.shape} dtype {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes - 1}], got "
                             f"{int(arr.min())}..{int(arr.max())}")
        self.received += int(arr.size)
        if self.done or not arr.size:
            return arr[:0]
        self.looks += 1
        return arr[: self._cap - self.queries]

    def next_draws(self) -> int:
        """How many draws before anything can be decided (>= 1; 0 once done)."""
        raise NotImplementedError

    def observe(self, labels) -> None:
        """Take labels in draw order (any number, more or fewer than ``next_draws``)."""
        raise NotImplementedError


def check_thresholds(name: str, values) -> np.ndarray:
    """A non-empty 1-D float array of thresholds (inf allowed, nan refused)."""
    arr = np.atleast_1d(np.asarray(values, dtype=float))
    if arr.ndim != 1 or arr.size == 0 or np.isnan(arr).any():
        raise ValueError(f"{name} must be a non-empty 1-D list of numbers (inf allowed), "
                         f"got {values!r}")
    return arr


class DecisionTest(RuleState):
    """Decide, for a set of thresholds, whether the input's probability clears each one.

    Parameters
    ----------
    thresholds : sequence of float
        Majority and flag modes: certify ``p > t`` (t >= 1 or inf: never).  Benign mode:
        certify ``p_c < t`` (t <= 0: never).  Detector mode: both sides of the same t unless
        ``benign_thresholds`` gives the benign side's own.
    alpha : float
        Probability, over the draws, of any wrong claim (all thresholds, classes and
        sides together).
    n_max : int
        Cap on the draws.
    num_classes : int
    mode : {"majority", "flag", "benign", "detector"}
        ``majority``: the class is chosen from the same draws (every class is tested; the
        choice is paid for in the level, see module docstring); thresholds must be >= 1/2.
        ``flag`` / ``benign`` / ``detector``: class ``target_class`` is fixed; flag
        certifies ``p_c > t``, benign ``p_c < t``, detector either.
    target_class : int, optional
        The detector's class (required unless ``mode == "majority"``).
    benign_thresholds : sequence of float, optional
        Detector mode: the benign side's thresholds (same length as ``thresholds``).
    futility : float
        Level of the upper bound that gives a threshold up (cost and power only).
    point_mass : float
        Weight of the alternative p = 1 (p = 0 on the benign side) in the mixture.
    prior : (float, float)
        Beta shape of the mixture's continuous part, restricted above the lowest threshold.
    price : float, optional
        Draws that settling one threshold is worth (for many thresholds at once, e.g. a
        table of certified accuracies).  At each price look (every 10 % of draws from 64
        on), the thresholds are given up whose certification, at the optimistic rate
        (the upper bound at level ``futility``), would come so late that
        ``price * thresholds kept - draws still needed`` is smaller than without them.
        None: settle every threshold the cap can.  Cost and power only, never validity.
    boundary : str
        A registered boundary family (:mod:`hybridcert.sequential.boundaries`).
        ``mixture``: the mixture confidence sequence, exact at every draw up to ``dense``
        and then every ``growth`` factor (best for few thresholds and short runs).
        ``looks``: Clopper–Pearson at level / K at K looks (16, then every ``look_growth``
        factor), union bound over the looks (cheaper when runs are long, e.g. many
        thresholds near the input's rate).  ``spending``: at the same kind of looks, each
        threshold's exact alpha-spending boundary (module docstring): spends the whole
        level, so it is the cheapest for long runs (tables of many thresholds); the
        reported bound is the highest certified threshold.
    look_growth : float, optional
        Spacing of the looks (default 1.25 for ``looks``, 1.1 for ``spending``).
    choice_share : float
        Spending family, majority mode with thresholds near 1/2: the share of alpha for the
        thresholds where two classes can both be claimed (below the lowest cut above which
        choosing the class is free); the others get the rest without paying for the choice
        (see ``_tier_levels``).  0: one tier, every threshold at the same level.
    dense, growth : int, float
        The schedule at which the mixture boundary is computed exactly.

    Attributes
    ----------
    label : int
        Majority: the class that certified, else ``ABSTAIN``.  Flag / benign / detector:
        ``target_class`` when only flag-side claims were made, :func:`benign_label` (the
        other class of two, ``NOT_FLAGGED`` with more) when only benign-side ones, else
        ``ABSTAIN``.
    certified : ndarray of bool
        Per threshold.
    outcome : ndarray of int
        Per threshold: ``ABOVE`` (1), ``BELOW`` (-1) or ``OPEN`` (0: given up / undecided).
    decided_at : ndarray of int
        Draw at which each threshold was settled (certified or given up); -1 while open.
    status : list of str
        Per threshold, how it ended: ``"certified"``; ``"refuted"`` (given up, and on every
        arm the KT upper bound at level ``futility``, at the draw that arm was given up, lies
        below the threshold: :func:`refutes`; a true threshold is refuted with probability at
        most ``futility``, a reason and not a claim at level alpha); ``"gave_up"`` (the
        price); ``"cap"`` (given up because even the cap could not certify it while its upper
        bound still reaches it, or open at ``n_max``); ``"open"`` while undecided.
    leader : int
        Most frequent class so far (a point prediction, not a certified one).
    level : float
        The per-arm level after paying for the class choice / two sides.
    threshold_levels : list of ndarray
        Per arm, the level of each threshold: ``level`` everywhere, except where the
        spending family splits the thresholds into two tiers (``choice_share``).
    """

    def __init__(self, thresholds: Sequence[float], alpha: float, n_max: int,
                 num_classes: int = 2, mode: str = "majority", target_class: int | None = None,
                 benign_thresholds: Sequence[float] | None = None, futility: float = 0.01,
                 point_mass: float = 0.5, prior: tuple[float, float] = (1.0, 1.0),
                 price: float | None = None, boundary: str = "mixture",
                 look_growth: float | None = None, choice_share: float = 0.1,
                 dense: int = DENSE, growth: float = GROWTH):
        super().__init__(num_classes, n_max)
        if not 0 <= choice_share < 1:
            raise ValueError(f"choice_share must lie in [0, 1), got {choice_share!r}")
        family = get_boundary(boundary)
        self.alpha = check_alpha(alpha)
        family.check(self.alpha, DECISION)
        look_growth = family.look_growth if look_growth is None else look_growth
        if not look_growth > 1:
            raise ValueError(f"look_growth must be > 1, got {look_growth!r}")
        self.boundary = boundary
        self.futility = check_level("futility", futility)
        self.price = None if price is None else check_positive("price", price)
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        self.mode = mode
        if not 0 <= point_mass < 1:
            raise ValueError(f"point_mass must lie in [0, 1), got {point_mass!r}")
        a, b = (check_positive("prior", v) for v in prior)
        dense = check_count("dense", dense, 1)
        if not growth > 1:
            raise ValueError(f"growth must be > 1, got {growth!r}")
        self.thresholds = check_thresholds("thresholds", thresholds)
        if mode == "majority":
            if target_class is not None:
                raise ValueError("target_class must be None in majority mode (the class is "
                                 "chosen from the draws)")
            if (self.thresholds < 0.5).any():
                raise ValueError(f"thresholds must be >= 0.5 in majority mode, got "
                                 f"{float(self.thresholds.min())!r}")
            # arm c: draws of class c, claims p_c > t
            arms = [(c, False, self.thresholds) for c in range(self.num_classes)]
        else:
            if target_class is None or not 0 <= int(target_class) < self.num_classes:
                raise ValueError(f"target_class must be a class in [0, {self.num_classes - 1}] "
                                 f"in {mode} mode, got {target_class!r}")
            target_class = int(target_class)
            above = self.thresholds
            below = above if benign_thresholds is None else check_thresholds(
                "benign_thresholds", benign_thresholds)
            if benign_thresholds is not None and (mode != "detector" or
                                                  below.shape != above.shape):
                raise ValueError("benign_thresholds must be given only in detector mode, one "
                                 "per threshold")
            if ((above <= 0).any() and mode in ("flag", "detector")) or \
                    ((below >= 1).any() and mode in ("benign", "detector")):
                raise ValueError("thresholds must lie in (0, 1) on a flag side and a benign "
                                 "side (>= 1 or <= 0 only on the side that can never hold)")
            arms = []
            if mode in ("flag", "detector"):
                arms.append((target_class, False, above))
            if mode in ("benign", "detector"):
                # the benign side is the flag side of "not class c": p_not > 1 - t
                arms.append((target_class, True, 1 - below))
        self.target_class = target_class
        self._arm_spec = arms
        specs = tuple(tuple(float(v) for v in t) for _, _, t in arms)
        self.level, floors = _arm_level(specs, self.alpha, self.n_max, float(point_mass), a, b,
                                        boundary, float(look_growth))
        self._floors = floors
        if family.per_threshold_levels and mode == "majority":
            tiers = _tier_levels(specs, self.alpha, self.n_max, float(point_mass), a, b,
                                 boundary, float(look_growth), float(choice_share))
        else:
            tiers = tuple(tuple(self.level for _ in t) for t in specs)
        #: per arm, the level of each threshold (one value unless spending splits tiers)
        self.threshold_levels = [np.array(t) for t in tiers]
        self._plans = [_plan(t, self.level, self.n_max, float(point_mass), a, b,
                             self.futility, dense, float(growth), boundary,
                             float(look_growth), tier if family.per_threshold_levels else None)
                       for t, tier in zip(specs, tiers, strict=True)]
        n_t, n_a = len(self.thresholds), len(arms)
        self._arm_count = np.zeros(n_a, dtype=np.int64)
        self._cert_at = np.full((n_a, n_t), -1, dtype=np.int64)     # draw of the crossing
        self._closed = np.zeros((n_a, n_t), dtype=bool)            # certified or given up
        self.outcome = np.zeros(n_t, dtype=np.int8)
        self.decided_at = np.full(n_t, -1, dtype=np.int64)
        self.certified = np.zeros(n_t, dtype=bool)
        self._winner = np.full(n_t, -1, dtype=np.int64)             # arm that certified
        self._priced = np.zeros(n_t, dtype=bool)                   # given up by the price
        self._refuted = np.zeros(n_t, dtype=bool)                  # see `refutes`
        self._give_k = np.zeros((n_a, n_t), dtype=np.int64)        # arm count at its give-up
        self._give_n = np.zeros((n_a, n_t), dtype=np.int64)        # ... and the draw
        looks = schedule_points(self.n_max, dense=1, growth=PRICE_GROWTH)
        self._price_looks = looks[(looks >= PRICE_START) & (looks < self.n_max)] \
            if self.price is not None else np.zeros(0, dtype=np.int64)

    # -- state machine -----------------------------------------------------------------
    def next_draws(self) -> int:
        """Draws before the rule can possibly be done: for each open threshold, the earlier
        of the first draw at which some arm could cross (all draws its class) and the first
        at which every arm could have given up (all draws against it); the latest of these."""
        if self.done:
            return 0
        n = self.queries
        open_t = self.decided_at < 0
        cross = np.full(len(self.thresholds), self.n_max, dtype=np.int64)
        give = np.zeros(len(self.thresholds), dtype=np.int64)
        # Arms that split every draw between them (the classes; a detector's two sides) can
        # only all give up where their give-up counts add up to the draws.
        partition = self.mode in ("majority", "detector") and len(self._plans) > 1
        all_live = open_t & ~self._closed.any(axis=0)
        if partition and all_live.any():
            start = int(np.searchsorted(self._plans[0].sched, n + 1, side="left"))
            room = sum(plan.give[all_live][:, start:] for plan in self._plans)
            fits = room >= self._plans[0].sched[start:]
            for arm, plan in enumerate(self._plans):
                fits &= plan.give[all_live][:, start:] >= self._arm_count[arm]
            give[all_live] = self._plans[0].sched[start:][np.argmax(fits, axis=1)]
        for arm, plan in enumerate(self._plans):
            live = open_t & ~self._closed[arm]
            if not live.any():
                continue
            k = int(self._arm_count[arm])
            start = int(np.searchsorted(plan.sched, n + 1, side="left"))
            seg_hi = plan.sched[start:]
            seg_lo = np.concatenate([[n], plan.sched[start:-1]]) + 1
            cand = np.maximum(seg_lo, plan.cert[live][:, start:] - k + n)
            feasible = cand <= seg_hi
            first = np.where(feasible.any(axis=1),
                             np.take_along_axis(cand, np.argmax(feasible, axis=1)[:, None],
                                                axis=1)[:, 0], self.n_max)
            cross[live] = np.minimum(cross[live], first)
            if partition:
                live &= ~all_live
            can_give = plan.give[live][:, start:] >= k
            when = seg_hi[np.argmax(can_give, axis=1)]       # the cap always gives up
            give[live] = np.maximum(give[live], when)
        settle = int(np.minimum(cross, give)[open_t].max())
        nxt = self._price_looks[np.searchsorted(self._price_looks, n + 1):]
        if nxt.size:
            settle = min(settle, int(nxt[0]))
        return max(1, settle - n)

    def observe(self, labels) -> None:
        arr = self._labels(labels)
        pos = 0
        while pos < arr.size and not self.done:
            nxt = self._price_looks[np.searchsorted(self._price_looks, self.queries + 1):]
            stop = arr.size if not nxt.size else min(arr.size, pos + int(nxt[0]) - self.queries)
            self._advance(arr[pos:stop])
            pos = stop
            if not self.done and nxt.size and self.queries == nxt[0]:
                self._price_look()

    def _price_look(self) -> None:
        """Give up the thresholds not worth their projected draws (``price``)."""
        n = self.queries
        when = np.full(len(self.thresholds), np.inf)
        open_t = self.decided_at < 0
        for arm, plan in enumerate(self._plans):
            live = open_t & ~self._closed[arm]
            if not live.any():
                continue
            k = int(self._arm_count[arm])
            rate = kt_upper(n, k, self.futility)
            start = int(np.searchsorted(plan.sched, n + 1, side="left"))
            ahead = plan.sched[start:]
            can = k + rate * (ahead - n) >= plan.cert[live][:, start:]
            first = np.where(can.any(axis=1), ahead[np.argmax(can, axis=1)], np.inf)
            when[live] = np.minimum(when[live], first)
        idx = np.nonzero(open_t)[0]
        order = idx[np.argsort(when[idx], kind="stable")]
        costs = when[order] - n
        gain = self.price * np.arange(1, len(order) + 1) - costs
        best = int(np.argmax(np.concatenate([[0.0], np.where(np.isfinite(gain), gain,
                                                             -np.inf)])))
        for j in order[best:]:
            self.decided_at[j] = n
            self._closed[:, j] = True
            self._priced[j] = True
        self.done = bool((self.decided_at >= 0).all())
        if self.done:
            self._finish()

    def _advance(self, arr: np.ndarray) -> None:
        if not arr.size:
            return
        n0 = self.queries
        draws = n0 + 1 + np.arange(arr.size)
        onehot = np.zeros((self.num_classes, arr.size), dtype=np.int64)
        onehot[arr, np.arange(arr.size)] = 1
        class_cum = self.counts[:, None] + np.cumsum(onehot, axis=1)
        inf = np.iinfo(np.int64).max
        n_t = len(self.thresholds)
        t_cross = np.full((len(self._plans), n_t), inf)
        t_give = np.full((len(self._plans), n_t), inf)
        k_give = np.zeros((len(self._plans), n_t), dtype=np.int64)
        arm_cum = []
        for arm, ((cls, negate, _), plan) in enumerate(zip(self._arm_spec, self._plans,
                                                          strict=True)):
            cum = class_cum[cls] if not negate else draws - class_cum[cls]
            arm_cum.append(cum)
            open_ = np.nonzero(~self._closed[arm] & (self.decided_at < 0))[0]
            if not open_.size:
                continue
            s_idx = np.searchsorted(plan.sched, draws, side="left")
            hit = cum[None, :] >= plan.cert[open_][:, s_idx]
            first = np.where(hit.any(axis=1), draws[np.argmax(hit, axis=1)], inf)
            t_cross[arm, open_] = first
            lo, hi = np.searchsorted(plan.sched, [n0 + 1, n0 + arr.size + 1], side="left")
            if hi > lo:
                pts = plan.sched[lo:hi]
                at = cum[pts - n0 - 1]
                gave = at[None, :] <= plan.give[open_][:, lo:hi]
                first_give = np.argmax(gave, axis=1)
                t_give[arm, open_] = np.where(gave.any(axis=1), pts[first_give], inf)
                k_give[arm, open_] = at[first_give]
        self._resolve(t_cross, t_give, k_give)
        end = n0 + arr.size if not self.done else int(self.decided_at.max())
        used = end - n0
        self.queries = end
        self.counts = class_cum[:, used - 1].copy()
        for arm in range(len(self._plans)):
            self._arm_count[arm] = arm_cum[arm][used - 1]
        if self.done:
            self._finish()

    def _resolve(self, t_cross, t_give, k_give) -> None:
        inf = np.iinfo(np.int64).max
        for j in np.nonzero(self.decided_at < 0)[0]:
            crosses = [(t_cross[a, j], a) for a in range(len(self._plans))
                       if not self._closed[a, j] and t_cross[a, j] <= t_give[a, j]
                       and t_cross[a, j] < inf]
            if crosses:
                when, arm = min(crosses)
                self._settle(j, when, arm)
                continue
            ends = []
            for a in range(len(self._plans)):
                if self._closed[a, j]:
                    continue
                if t_give[a, j] < inf:
                    ends.append(t_give[a, j])
                else:
                    ends.append(None)
            for a in range(len(self._plans)):
                if not self._closed[a, j] and t_give[a, j] < inf:
                    self._closed[a, j] = True
                    self._give_n[a, j], self._give_k[a, j] = t_give[a, j], k_give[a, j]
            if all(e is not None for e in ends):
                self.decided_at[j] = max(ends) if ends else self.queries
                # every arm was given up (a crossing settles the threshold at once)
                self._refuted[j] = all(
                    refutes(self._give_n[a, j], self._give_k[a, j], plan.thresholds[j],
                            self.futility) for a, plan in enumerate(self._plans))
        self.done = bool((self.decided_at >= 0).all())

    @property
    def status(self) -> list[str]:
        """Per threshold, how it ended (class docstring; ``"open"`` while undecided)."""
        out = []
        for j in range(len(self.thresholds)):
            if self.certified[j]:
                out.append(CERTIFIED)
            elif self.decided_at[j] < 0:
                out.append(STILL_OPEN)
            elif self._priced[j]:
                out.append(GAVE_UP)
            elif self._refuted[j]:
                out.append(REFUTED)
            else:
                out.append(CAP)
        return out

    def _settle(self, j, when, arm) -> None:
        cls, negate, _ = self._arm_spec[arm]
        self.decided_at[j] = when
        self.certified[j] = True
        self.outcome[j] = BELOW if negate else ABOVE
        self._winner[j] = arm
        self._closed[:, j] = True

    def _finish(self) -> None:
        won = self._winner[self.certified]
        if self.mode == "majority":
            if won.size:
                # the arm that certified first (the only one on the 1 - alpha event)
                first = won[np.argmin(self.decided_at[self.certified])]
                self.label = int(self._arm_spec[first][0])
                self.p_lower = self._arm_lower(int(first))
        else:
            for arm, (_, negate, _) in enumerate(self._arm_spec):
                if not (won == arm).any():
                    continue
                bound = self._arm_lower(arm)
                if negate:
                    self.p_upper = 1 - bound
                else:
                    self.p_lower = bound
            flagged = (self.outcome == ABOVE).any()
            benign = (self.outcome == BELOW).any()
            if flagged != benign:
                self.label = self.target_class if flagged else benign_label(
                    self.target_class, self.num_classes)

    def _arm_lower(self, arm: int) -> float:
        """max(confidence-sequence bound now, highest threshold certified by this arm); the
        bound alone only where the guarantee covers it (above the arm's floor)."""
        plan = self._plans[arm]
        bound = plan.lower_bound(self.queries, int(self._arm_count[arm]))
        if len(self._plans) > 1 and bound <= self._floors[arm]:
            bound = 0.0
        mine = plan.thresholds[(self._winner == arm) & self.certified]
        return float(max(bound, mine.max(initial=0.0)))

    def per_draw_boundary(self, threshold: int = 0, arm: int = 0) -> np.ndarray:
        """The count of arm ``arm`` (class ``arm`` in majority mode; flag side, then benign
        side, in detector mode) that certifies ``threshold`` at each draw n = 0..n_max."""
        return self._plans[arm].per_draw(threshold)

    # -- many tests at once (hybridcert.sequential.batched) ------------------------------
    def shared(self) -> list:
        """The read-only objects (per-arm boundary plans) that copies of this rule may share
        (:func:`~hybridcert.sequential.batched.fresh_copy`)."""
        return list(self._plans)

    def batch_key(self) -> tuple | None:
        """Tests with equal keys share their boundaries and are checked together by
        :meth:`quiet`; None once done."""
        if self.done:
            return None
        return (tuple(id(plan) for plan in self._plans),
                tuple((cls, negate) for cls, negate, _ in self._arm_spec),
                self.num_classes, self.n_max, self._cap, self.price)

    @staticmethod
    def quiet(tests: Sequence[DecisionTest], parts: Sequence[np.ndarray]) -> np.ndarray:
        """Per test (all of one :meth:`batch_key`, none done): True when ``observe(part)``
        would settle nothing — no crossing, no give-up, no price look and no cap within its
        part — so that :meth:`move_on` leaves the state ``observe`` would.

        One comparison for every label of all the parts laid end to end (per test: its
        running counts, per draw the boundary at that draw)."""
        first = tests[0]
        sizes = np.fromiter((p.size for p in parts), dtype=np.int64, count=len(parts))
        labels = np.concatenate(parts)
        if labels.min() < 0 or labels.max() >= first.num_classes:
            return np.zeros(len(tests), dtype=bool)     # let observe say what is wrong
        seg = np.repeat(np.arange(len(tests)), sizes)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        n0 = np.fromiter((t.queries for t in tests), dtype=np.int64, count=len(tests))
        draws = n0[seg] + 1 + (np.arange(labels.size) - starts[seg])
        quiet = sizes <= first._cap - n0
        if first.price is not None and first._price_looks.size:
            looks = first._price_looks
            at = np.searchsorted(looks, n0 + 1)
            nxt = np.where(at < looks.size, looks[np.minimum(at, looks.size - 1)],
                           np.iinfo(np.int64).max)
            quiet &= nxt > n0 + sizes
        draws = np.minimum(draws, first.n_max)          # rows past the cap: not quiet anyway
        hit = np.zeros(labels.size, dtype=bool)
        class_cum = {}
        for arm, ((cls, negate, _), plan) in enumerate(zip(first._arm_spec, first._plans,
                                                           strict=True)):
            if cls not in class_cum:
                mine = (labels == cls).astype(np.int64)
                running = np.cumsum(mine)
                before = running[starts] - mine[starts]
                counts = np.fromiter((t.counts[cls] for t in tests), dtype=np.int64,
                                     count=len(tests))
                class_cum[cls] = counts[seg] + running - before[seg]
            cum = draws - class_cum[cls] if negate else class_cum[cls]
            open_ = np.stack([~t._closed[arm] & (t.decided_at < 0) for t in tests])  # (m, n_t)
            at = np.searchsorted(plan.sched, draws, side="left")
            rows_open = open_[seg].T                                                 # (n_t, R)
            cert = np.where(rows_open, plan.cert[:, at], np.iinfo(np.int64).max)
            hit |= cum >= cert.min(axis=0)
            point = plan.sched[at] == draws
            give = np.where(rows_open, plan.give[:, at], np.iinfo(np.int64).min)
            hit |= point & (cum <= give.max(axis=0))
        quiet &= np.bincount(seg, weights=hit, minlength=len(tests)) == 0
        return quiet

    @staticmethod
    def next_draws_many(tests: Sequence[DecisionTest], window: int = 64) -> np.ndarray:
        """``[t.next_draws() for t in tests]`` (all of one :meth:`batch_key`, none done) in
        one array computation over the next ``window`` schedule points of every test.  A
        threshold's earliest settling draw is the earlier of its crossing and its give-up,
        so it is known once either lies within the window; a test with a threshold where
        neither does (rare: the answer is usually a few points ahead) asks its own
        :meth:`next_draws`."""
        first = tests[0]
        m, n_t = len(tests), len(first.thresholds)
        plans = first._plans
        sched = plans[0].sched
        if any(plan.sched is not sched and not np.array_equal(plan.sched, sched)
               for plan in plans):
            return np.array([t.next_draws() for t in tests], dtype=np.int64)
        n = np.fromiter((t.queries for t in tests), dtype=np.int64, count=m)
        open_t = np.stack([t.decided_at < 0 for t in tests])                  # (m, n_t)
        closed = np.stack([t._closed for t in tests])                        # (m, A, n_t)
        k = np.stack([t._arm_count for t in tests])                          # (m, A)
        start = np.searchsorted(sched, n + 1, side="left")                   # (m,)
        steps = np.arange(window)
        index = start[:, None] + steps                                       # (m, W)
        valid = (index < sched.size)[:, None, :]
        index = np.minimum(index, sched.size - 1)
        short = (start + window < sched.size)[:, None]    # the window ends before the cap
        hi = sched[index]                                                    # (m, W)
        lo = np.where(steps == 0, n[:, None], sched[np.maximum(index - 1, 0)]) + 1
        cross = np.full((m, n_t), first.n_max, dtype=np.int64)
        give = np.zeros((m, n_t), dtype=np.int64)
        crossed = np.zeros((m, n_t), dtype=bool)       # some arm's crossing lies in the window
        cross_later = np.zeros((m, n_t), dtype=bool)   # some arm's lies beyond it
        give_later = np.zeros((m, n_t), dtype=bool)    # some arm's give-up lies beyond it

        def first_hit(hit):
            hit &= valid
            return hit.any(axis=2), np.argmax(hit, axis=2)

        partition = first.mode in ("majority", "detector") and len(plans) > 1
        all_live = open_t & ~closed.any(axis=1)
        if partition and all_live.any():
            room = sum(plan.give[:, index].transpose(1, 0, 2) for plan in plans)
            fits = room >= hi[:, None, :]
            for arm, plan in enumerate(plans):
                fits &= plan.give[:, index].transpose(1, 0, 2) >= k[:, arm, None, None]
            found, at = first_hit(fits)
            give = np.where(all_live, np.take_along_axis(hi, np.where(found, at, 0), axis=1),
                            give)
            give_later |= all_live & ~found & short
        for arm, plan in enumerate(plans):
            live = open_t & ~closed[:, arm]
            if not live.any():
                continue
            kk = k[:, arm, None, None]
            cand = np.maximum(lo[:, None, :], plan.cert[:, index].transpose(1, 0, 2) - kk
                              + n[:, None, None])
            found, at = first_hit(cand <= hi[:, None, :])
            when = np.where(found, np.take_along_axis(cand, at[..., None], axis=2)[..., 0],
                            first.n_max)
            cross = np.where(live, np.minimum(cross, when), cross)
            crossed |= live & found
            cross_later |= live & ~found & short
            if partition:
                live = live & ~all_live
            found, at = first_hit(plan.give[:, index].transpose(1, 0, 2) >= kk)
            when = np.take_along_axis(hi, np.where(found, at, 0), axis=1)
            give = np.where(live, np.maximum(give, when), give)
            give_later |= live & ~found & short
        # Beyond the window: later than any point in it, so it does not change the earlier
        # of the two when the other lies in the window.
        unknown = open_t & give_later & cross_later & ~crossed
        settle = np.where(open_t, np.where(give_later, cross,
                                           np.where(cross_later & ~crossed, give,
                                                    np.minimum(cross, give))),
                          np.iinfo(np.int64).min).max(axis=1)
        looks = first._price_looks
        if looks.size:
            at = np.searchsorted(looks, n + 1)
            settle = np.where(at < looks.size,
                              np.minimum(settle, looks[np.minimum(at, looks.size - 1)]), settle)
        out = np.maximum(1, settle - n)
        for i in np.nonzero(unknown.any(axis=1))[0]:
            out[i] = tests[i].next_draws()
        return out

    def move_on(self, part: np.ndarray, counts: np.ndarray | None = None) -> None:
        """The state ``observe(part)`` leaves when it settles nothing (:meth:`quiet`);
        ``counts``: ``part``'s per-class counts, if already known."""
        size = int(part.size)
        if counts is None:
            counts = np.bincount(part, minlength=self.num_classes)
        self.received += size
        if self.done:
            return
        self.looks += 1
        self.queries += size
        self.counts = self.counts + counts
        for arm, (cls, negate, _) in enumerate(self._arm_spec):
            self._arm_count[arm] = self.queries - self.counts[cls] if negate \
                else self.counts[cls]


class BoundedDecision(RuleState):
    """Decide the targets; answer the base question (the class at the zero budget) only with
    the draws the targets take.

    ``certify --mode decision`` and the service ask the class itself (the zero budget, whose
    threshold is 1/2 for a majority vote) as well as the user's targets.  Settling the class at
    an ambiguous input (pA near 1/2) takes tens of thousands of draws, and its threshold near
    1/2 makes every class a candidate, so a rule holding both pays for the class choice on the
    targets too.  Here two :class:`DecisionTest` read the same draws:

    * the **targets** at level ``(1 - base_share) * alpha``, with their own floor (the lowest
      target) and their own class-choice accounting; the rule is done when they are;
    * the **base** threshold at level ``base_share * alpha``; whatever it has not settled when
      the targets are is left open (status ``"gave_up"``: not certified, which is never wrong).

    A certified target certifies the base too (the zero budget lies in every target region).
    Valid with probability at least ``1 - alpha`` for every claim together: each test's claims
    hold with its own level at any stopping time, and a union bound adds the two levels.

    Parameters
    ----------
    base, thresholds
        The base threshold and the targets' (the flag side in flag / detector mode, the
        benign side in benign mode, as for :class:`DecisionTest`).
    alpha, n_max, num_classes, mode, target_class
        As for :class:`DecisionTest`.
    base_benign, benign_thresholds : optional
        Detector mode: the benign side's base threshold and targets.
    base_share : float
        Share of alpha spent on the base question, in (0, 1).
    price : float, optional
        As for :class:`DecisionTest`, on the targets only.
    **options
        Passed to both tests (``boundary``, ``futility``, ``point_mass``, ``prior``,
        ``look_growth``, ``choice_share``, ``dense``, ``growth``).

    Attributes
    ----------
    thresholds, certified, outcome, decided_at, status
        Per threshold, the base first (as a :class:`DecisionTest` holding ``[base] +
        thresholds``); the base's status is ``"certified"`` (by its own test or by a
        certified target), its own test's when that test settled it, else ``"gave_up"``.
    label, p_lower, p_upper
        As for :class:`DecisionTest`, from both tests' claims (abstain if they disagree,
        which happens only on the alpha event).
    targets_test, base_test : DecisionTest
    """

    def __init__(self, base: float, thresholds: Sequence[float], alpha: float, n_max: int,
                 num_classes: int = 2, mode: str = "majority", target_class: int | None = None,
                 base_benign: float | None = None,
                 benign_thresholds: Sequence[float] | None = None, base_share: float = 0.1,
                 price: float | None = None, **options):
        super().__init__(num_classes, n_max)
        alpha = check_alpha(alpha)
        if not 0 < base_share < 1:
            raise ValueError(f"base_share must lie in (0, 1), got {base_share!r}")
        targets = check_thresholds("thresholds", thresholds)
        if (base_benign is None) != (benign_thresholds is None):
            raise ValueError("give base_benign and benign_thresholds together (detector mode)")
        common = dict(num_classes=num_classes, mode=mode, target_class=target_class, **options)
        self.targets_test = DecisionTest(targets, (1 - base_share) * alpha, n_max,
                                         benign_thresholds=benign_thresholds, price=price,
                                         **common)
        self.base_test = DecisionTest(
            [float(base)], base_share * alpha, n_max,
            benign_thresholds=None if base_benign is None else [float(base_benign)], **common)
        self.alpha, self.base_share, self.mode = alpha, float(base_share), mode
        self.target_class = target_class
        self.thresholds = np.concatenate([[float(base)], targets])
        n_t = len(self.thresholds)
        self.certified = np.zeros(n_t, dtype=bool)
        self.outcome = np.zeros(n_t, dtype=np.int8)
        self.decided_at = np.full(n_t, -1, dtype=np.int64)
        self.status = [STILL_OPEN] * n_t

    def next_draws(self) -> int:
        return 0 if self.done else self.targets_test.next_draws()

    def observe(self, labels) -> None:
        arr = self._labels(labels)
        if not arr.size:
            return
        targets = self.targets_test
        before = targets.queries
        targets.observe(arr)
        used = targets.queries - before
        if used:
            self.base_test.observe(arr[:used])    # the base sees the targets' draws only
        self.queries, self.counts = targets.queries, targets.counts.copy()
        if targets.done:
            self.done = True
            self._finish()

    def _finish(self) -> None:
        targets, base = self.targets_test, self.base_test
        side = OPEN
        if self.mode == "majority":
            labels = {r.label for r in (targets, base) if r.label != ABSTAIN}
            if len(labels) == 1:
                self.label = labels.pop()
                self.p_lower = max(r.p_lower for r in (targets, base) if r.label == self.label)
                side = ABOVE
        else:
            own = int(base.outcome[0])
            implied = {int(o) for o in targets.outcome if o != OPEN}
            side = own if own != OPEN else (implied.pop() if len(implied) == 1 else OPEN)
            every = implied | {own} | {side}
            flagged, benign = ABOVE in every, BELOW in every
            if flagged != benign:
                self.label = self.target_class if flagged else benign_label(
                    self.target_class, self.num_classes)
            self.p_lower = max(targets.p_lower, base.p_lower)
            self.p_upper = min(targets.p_upper, base.p_upper)
        if side != OPEN:
            when = list(targets.decided_at[targets.certified & (targets.outcome == side)])
            if base.certified[0] and base.outcome[0] == side:
                when.append(base.decided_at[0])
            status, at = CERTIFIED, min(when)
        elif base.decided_at[0] >= 0 and not base.certified[0]:
            status, at = base.status[0], int(base.decided_at[0])
        else:
            status, at = GAVE_UP, self.queries
        agree = targets.certified & ((targets.outcome == side) | (self.mode != "majority"))
        if self.mode == "majority" and side == OPEN:
            agree[:] = False                    # the two tests disagree on the class
        self.certified = np.concatenate([[side != OPEN], agree])
        self.outcome = np.concatenate([[side], np.where(agree, targets.outcome, OPEN)]
                                      ).astype(np.int8)
        self.decided_at = np.concatenate([[int(at)], targets.decided_at]).astype(np.int64)
        self.status = [status] + [s if not (s == CERTIFIED and not ok) else GAVE_UP
                                  for s, ok in zip(targets.status, agree, strict=True)]

    def per_draw_boundary(self, threshold: int = 0, arm: int = 0) -> np.ndarray:
        """As :meth:`DecisionTest.per_draw_boundary`, threshold 0 being the base (its own
        test's boundary) and 1.. the targets."""
        if threshold == 0:
            return self.base_test.per_draw_boundary(0, arm)
        return self.targets_test.per_draw_boundary(threshold - 1, arm)

    # -- many rules at once (hybridcert.sequential.batched) ------------------------------
    def shared(self) -> list:
        """As :meth:`DecisionTest.shared`, for both tests."""
        return self.targets_test.shared() + self.base_test.shared()

    def batch_key(self) -> tuple | None:
        """As :meth:`DecisionTest.batch_key` (None once the targets are settled)."""
        if self.done or self.targets_test.done:
            return None
        base = self.base_test
        return (self._cap, self.targets_test.batch_key(),
                "done" if base.done else base.batch_key())

    @staticmethod
    def quiet(rules: Sequence[BoundedDecision], parts: Sequence[np.ndarray]) -> np.ndarray:
        """As :meth:`DecisionTest.quiet`, for both tests (a done base test only counts what
        it receives)."""
        quiet = DecisionTest.quiet([r.targets_test for r in rules], parts)
        if not rules[0].base_test.done:
            quiet &= DecisionTest.quiet([r.base_test for r in rules], parts)
        return quiet

    @staticmethod
    def next_draws_many(rules: Sequence[BoundedDecision], window: int = 64) -> np.ndarray:
        """As :meth:`DecisionTest.next_draws_many` (the targets decide when it is done)."""
        return DecisionTest.next_draws_many([r.targets_test for r in rules], window)

    def move_on(self, part: np.ndarray) -> None:
        """As :meth:`DecisionTest.move_on`, for both tests."""
        counts = np.bincount(part, minlength=self.num_classes)
        self.targets_test.move_on(part, counts)
        self.base_test.move_on(part, counts)
        size = int(part.size)
        self.received += size
        self.looks += 1
        self.queries = self.targets_test.queries
        self.counts = self.targets_test.counts.copy()


class RadiusTest(RuleState):
    """Majority vote, stopping once the certified frontier is within ``tolerance`` of what
    the cap could plausibly show.

    Parameters
    ----------
    frontier : callable
        Maps a lower bound on the top class's probability to an array of certified
        quantities (e.g. eps*(r) for r = 0..R, clipped at the largest radius of interest);
        use -inf for an entry that is not certified.  Called at most twice per look.
    alpha, n_max, num_classes
        As for :class:`DecisionTest`.
    tolerance : float or array
        Largest acceptable shortfall per entry, in the frontier's units.
    futility, point_mass, prior
        As for :class:`DecisionTest` (the mixture is restricted to (1/2, 1)).
    boundary : str
        A registered family that gives a bound at every rate (``mixture`` or ``looks``).
        The bound on the top class: the mixture confidence sequence (valid at any look), or
        Clopper–Pearson at level / K at the K looks (union bound).
    first_look, look_growth : int, float
        Looks (where the frontier is evaluated) at ``first_look`` draws, then every
        ``look_growth`` factor (default 1.1 for the mixture, 1.25 for looks), and at
        ``n_max``.

    Notes
    -----
    What the cap could show: the bound at ``n_max`` if the rate were the top class's upper
    confidence bound at level ``futility``.  The reported ``p_lower`` is the bound at the
    stopping look.  The class is the most frequent one at that look; both classes are
    covered (level alpha / 2 each for two classes).
    """

    def __init__(self, frontier: Callable[[float], np.ndarray], alpha: float, n_max: int,
                 tolerance: float | np.ndarray, num_classes: int = 2, futility: float = 0.01,
                 point_mass: float = 0.5, prior: tuple[float, float] = (1.0, 1.0),
                 boundary: str = "mixture", first_look: int = 16,
                 look_growth: float | None = None):
        super().__init__(num_classes, n_max)
        self.alpha = check_alpha(alpha)
        family = get_boundary(boundary)
        family.check(self.alpha, RADIUS)
        self.futility = check_level("futility", futility)
        if not callable(frontier):
            raise ValueError(f"frontier must be a callable p -> array, got {frontier!r}")
        self.frontier = frontier
        self.tolerance = np.asarray(tolerance, dtype=float)
        if (~(self.tolerance > 0)).any():
            raise ValueError(f"tolerance must be > 0, got {tolerance!r}")
        a, b = (check_positive("prior", v) for v in prior)
        if not 0 <= point_mass < 1:
            raise ValueError(f"point_mass must lie in [0, 1), got {point_mass!r}")
        if look_growth is None:
            look_growth = family.radius_look_growth
        if not look_growth > 1:
            raise ValueError(f"look_growth must be > 1, got {look_growth!r}")
        first_look = check_count("first_look", first_look, 1)
        self.boundary = boundary
        self.mixture = Mixture(0.5, float(point_mass), a, b)
        self.looks_at = look_points(self.n_max, float(look_growth), first_look)
        self.level, _ = _arm_level(((0.5,),) * self.num_classes, self.alpha, self.n_max,
                                   float(point_mass), a, b, boundary, float(look_growth))

    def lower_bound(self, n: int, k: int) -> float:
        """Lower bound on a class seen k times in n draws (n a look)."""
        return get_boundary(self.boundary).lower_bound(n, k, self.level, self.mixture,
                                                       self.looks_at)

    def next_draws(self) -> int:
        if self.done:
            return 0
        nxt = self.looks_at[np.searchsorted(self.looks_at, self.queries + 1)]
        return int(nxt - self.queries)

    def observe(self, labels) -> None:
        arr = self._labels(labels)
        if not arr.size:
            return
        n0 = self.queries
        onehot = np.zeros((self.num_classes, arr.size), dtype=np.int64)
        onehot[arr, np.arange(arr.size)] = 1
        class_cum = self.counts[:, None] + np.cumsum(onehot, axis=1)
        lo, hi = np.searchsorted(self.looks_at, [n0 + 1, n0 + arr.size + 1])
        used = arr.size
        for n in self.looks_at[lo:hi]:
            counts = class_cum[:, n - n0 - 1]
            if self._settled(int(n), counts):
                used = int(n - n0)
                self.done = True
                break
        self.queries = n0 + used
        self.counts = class_cum[:, used - 1].copy()
        if self.queries >= self.n_max:
            self.done = True
        if self.done:
            self._finish()

    def _settled(self, n: int, counts: np.ndarray) -> bool:
        if n >= self.n_max:
            return True
        top = int(np.argmax(counts))
        k = int(counts[top])
        low = self.lower_bound(n, k)
        high = kt_upper(n, k, self.futility)
        reach_k = min(self.n_max, math.ceil(high * self.n_max))
        reach = self.lower_bound(self.n_max, reach_k)
        if reach <= 0.5:
            return True                       # not even the cap could certify the class
        now = np.asarray(self.frontier(low if low > 0.5 else 0.5), dtype=float)
        best = np.asarray(self.frontier(reach), dtype=float)
        with np.errstate(invalid="ignore"):
            gap = np.where(best == now, 0.0, best - now)
        return bool(np.all(gap <= self.tolerance))

    @property
    def status(self) -> str:
        """How the class ended: ``"certified"``; ``"refuted"`` when every class's KT upper
        bound at level ``futility`` lies below 1/2 (:func:`refutes`); else ``"cap"`` (not
        certifiable within the draw cap, or the cap reached); ``"open"`` while running."""
        if not self.done:
            return STILL_OPEN
        if self.label != ABSTAIN:
            return CERTIFIED
        if all(refutes(self.queries, int(k), 0.5, self.futility) for k in self.counts):
            return REFUTED
        return CAP

    def _finish(self) -> None:
        top = self.leader
        low = self.lower_bound(self.queries, int(self.counts[top]))
        if low > 0.5:
            self.label = top
            self.p_lower = low


