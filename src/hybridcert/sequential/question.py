"""Anytime-valid sequential certification: stop drawing as soon as the answer is settled.

The statistics are in :mod:`hybridcert.sequential.rules` and the boundary families of
:mod:`hybridcert.sequential.boundaries` (confidence sequences valid at every draw, no separate
selection sample; docs/SEQUENTIAL.md has the construction and the proofs).  This module poses
the question for one record and its noise, and is the one place where a question (mode x
rule x boundary x targets x alpha) is checked (:func:`check_question`):

* **decision** — is the input certified at target regions?  Each target (a per-block budget)
  has a threshold ``p*`` from the certificate engine.  The run stops once every target is
  settled; the class itself (the zero budget) is certified by a certified target, or by its
  own test if that settled within the same draws, else the answer abstains
  (:class:`~hybridcert.sequential.rules.BoundedDecision`).  Every target and the class say
  how they ended (``status``) and at which draw.
* **radius** — the certified region, to a tolerance of what the sample cap could still add.
* **detector** (``Detector``): the same decision for a thresholded detector, on the flag side,
  the benign side or both.

:class:`SequentialQuestion` builds the rule and turns a finished rule into the one result type
(:class:`~hybridcert.smoothing.Certification`); :func:`certify_sequential` drives it with the
record's own stream of noisy copies.  The HTTP service drives the same rule with copies from
the same stream batched across requests, so both give the same answer for the same input and
seed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

import numpy as np

from hybridcert._validation import check_alpha, check_positive
from hybridcert.blocks import CertifiedRegion, HybridNoise
from hybridcert.sequential.boundaries import DECISION, RADIUS, get_boundary
from hybridcert.sequential.rules import (
    ABSTAIN,
    CERTIFIED,
    GAVE_UP,
    BoundedDecision,
    DecisionTest,
    RadiusTest,
    StoppingRule,
    benign_label,
)
from hybridcert.smoothing.core import Detector, SmoothedClassifier, Stage
from hybridcert.smoothing.results import Certification

#: The sequential modes.
MODES = (DECISION, RADIUS)


def check_question(alpha: float, mode: str, boundary: str, rule: str = "majority",
                   has_targets: bool = True) -> float:
    """Check a sequential question; return alpha.  ValueError (one line naming the
    parameter) otherwise.

    Parameters
    ----------
    alpha : float
        In (0, 1).
    mode : {"decision", "radius"}
    boundary : str
        A registered boundary family (:mod:`hybridcert.sequential.boundaries`), which
        checks what it cannot do (``Boundary.check(alpha, mode)``).
    rule : {"majority", "flag", "benign", "detector"}
        The radius mode is for majority votes only.
    has_targets : bool
        The decision mode needs targets.
    """
    alpha = check_alpha(alpha)
    if mode not in MODES:
        raise ValueError(f"mode must be decision or radius, got {mode!r}")
    get_boundary(boundary).check(alpha, mode)
    if mode == RADIUS and rule != "majority":
        raise ValueError("the sequential radius mode is for majority votes; a detector needs "
                         "targets (decision mode, e.g. --mode decision --target 0.25,1)")
    if mode == DECISION and not has_targets:
        raise ValueError("mode 'decision' needs targets, e.g. --target 0.25,1")
    return alpha


def target_budget(noise: HybridNoise, target) -> dict[str, float]:
    """A target region as a per-block budget: ``{block: size}`` or the pair ``(eps, r)``."""
    if isinstance(target, Mapping):
        return noise.budget(target)
    eps, r = target
    return noise.pair_budget(eps, r)


class SequentialQuestion:
    """What a sequential run asks of one record, for a given noise.

    Parameters
    ----------
    noise : HybridNoise
    num_classes : int
    alpha : float
        Probability of any wrong claim (class, targets and region together).
    n_max : int
        Cap on the base-model queries.
    targets : sequence of (eps, r) or {block: size}, optional
        Decision mode.  None: radius mode (majority vote only).
    detector : Detector, optional
        Smooth a thresholded detector instead of a majority vote (decision mode).
    tolerance : float
        Radius mode: largest acceptable shortfall of the region against what the cap could
        show, in the units of the Gaussian block (several: of the one with the smallest sigma).
    max_tokens : int
        Largest token budget of the region.
    max_radius : float, optional
        Radius mode: radii beyond it are of no interest (the frontier is clipped there when
        deciding to stop; the reported region is not).
    first_look : int
        Radius mode: draws before the first look.
    boundary : {"mixture", "looks", "spending"}
        The confidence sequence: a mixture martingale checked at (almost) every draw, or
        Clopper–Pearson at geometric looks with the level split over them (better for long
        runs), or (decision mode only) exact alpha-spending boundaries at the targets'
        thresholds (the cheapest for large tables; docs/SEQUENTIAL.md).
    price : float, optional
        Decision mode with many targets (a table): give up a target once settling it is
        projected to cost more than this many draws (a trade of accuracy for queries; validity
        is unaffected).
    base_share : float
        Decision mode, when the zero budget is not itself a target: the share of alpha spent
        on certifying the class at the zero budget within the targets' draws (the targets get
        the rest; see :class:`~hybridcert.sequential.rules.BoundedDecision`).
    """

    def __init__(self, noise: HybridNoise, num_classes: int, alpha: float, n_max: int, *,
                 targets: Sequence | None = None, detector: Detector | None = None,
                 tolerance: float = 0.01, max_tokens: int = 16,
                 max_radius: float | None = None, first_look: int = 16,
                 boundary: str = "mixture", price: float | None = None,
                 base_share: float = 0.1):
        self.noise, self.num_classes = noise, int(num_classes)
        self.base_share = base_share
        mode = RADIUS if targets is None else DECISION
        self.alpha = check_question(alpha, mode, boundary,
                                    "majority" if detector is None else detector.name,
                                    has_targets=targets is None or len(targets) > 0)
        self.n_max = int(n_max)
        self.detector, self.max_tokens = detector, max_tokens
        self.tolerance = check_positive("tolerance", tolerance)
        self.max_radius = None if max_radius is None else check_positive("max_radius",
                                                                         max_radius)
        self.first_look = first_look
        self.boundary, self.price = boundary, price
        if targets is None:
            self.budgets = None
            return
        self.budgets = [target_budget(noise, t) for t in targets]
        # The zero budget first: the returned class (or flag) is itself certified.
        self._all = [noise.budget({})] + self.budgets
        if detector is None:
            self.thresholds = np.array([noise.threshold(b) for b in self._all])
            self.benign = None
        else:
            flag, benign = detector.rules()
            self.thresholds = np.array([noise.threshold(b, flag) if flag else np.inf
                                        for b in self._all])
            self.benign = np.array([noise.threshold(b, benign) if benign else -np.inf
                                    for b in self._all])

    @property
    def mode(self) -> str:
        return "radius" if self.budgets is None else "decision"

    def new_rule(self) -> StoppingRule:
        """A fresh stopping rule for one input (feed it labels in draw order).

        Decision mode: done once every target is settled.  When the zero budget is one of the
        targets, one :class:`DecisionTest` holds them all; otherwise a
        :class:`BoundedDecision` answers the class at the zero budget only within the
        targets' draws (threshold 0 of the rule, either way)."""
        if self.budgets is None:
            return RadiusTest(self._frontier_values, self.alpha, self.n_max, self.tolerance,
                              num_classes=self.num_classes, first_look=self.first_look,
                              boundary=self.boundary)
        options = {"num_classes": self.num_classes, "boundary": self.boundary}
        if self.detector is None:
            thresholds, benign = self.thresholds, None
        else:
            sides = self.detector.sides
            options["mode"] = self.detector.name
            options["target_class"] = self.detector.flagged_class
            thresholds = self.benign if sides == "benign" else self.thresholds
            benign = self.benign if sides == "both" else None
        zero_is_target = bool(np.any(thresholds[1:] == thresholds[0]) and (
            benign is None or np.any((thresholds[1:] == thresholds[0])
                                     & (benign[1:] == benign[0]))))
        if zero_is_target:
            return DecisionTest(thresholds, self.alpha, self.n_max, benign_thresholds=benign,
                                price=self.price, **options)
        return BoundedDecision(thresholds[0], thresholds[1:], self.alpha, self.n_max,
                               base_benign=None if benign is None else benign[0],
                               benign_thresholds=None if benign is None else benign[1:],
                               base_share=self.base_share, price=self.price, **options)

    def result(self, rule: StoppingRule, noised_positions: Mapping[str, int] | None = None,
               time_s: float = 0.0) -> Certification:
        """The finished rule as a :class:`Certification` (region from the rule's bound)."""
        positions = None if noised_positions is None else [noised_positions]
        empty = CertifiedRegion.empty(self.noise)
        counts = rule.counts.copy()
        if self.detector is not None:
            return self._detector_result(rule, positions, counts, time_s, noised_positions)
        region = empty
        if rule.label != ABSTAIN:
            region = self.noise.frontier([rule.p_lower], max_tokens=self.max_tokens,
                                         noised_positions=positions)[0]
        label = rule.label if region.certified else ABSTAIN
        answers = []
        if self.budgets is None:          # radius mode: the class is all it settles
            status = CERTIFIED if label != ABSTAIN else (
                GAVE_UP if rule.status == CERTIFIED else rule.status)
            decided_at = rule.queries
        else:
            answers = [_answer(b, label != ABSTAIN and ok, st, at)
                       for b, ok, st, at in zip(self.budgets, rule.certified[1:],
                                                rule.status[1:], rule.decided_at[1:],
                                                strict=True)]
            status, decided_at = _answer(None, label != ABSTAIN, rule.status[0],
                                         rule.decided_at[0])["status"], rule.decided_at[0]
        result = Certification(label, rule.p_lower, None,
                               region if label != ABSTAIN else empty, counts, rule.queries,
                               looks=rule.looks, time_s=time_s, mode=self.mode,
                               rule="majority", status=status, decided_at=int(decided_at))
        result.attach_targets(answers, noised_positions)
        return result

    def _detector_result(self, rule, positions, counts, time_s,
                         noised_positions) -> Certification:
        flag, benign = self.detector.rules()
        outcome = rule.outcome              # per threshold: 1 flag side, -1 benign side
        decision, region = "abstain", CertifiedRegion.empty(self.noise)
        if outcome[0] == 1:
            decision = "flag"
            region = self.noise.frontier([rule.p_lower], rule=flag, max_tokens=self.max_tokens,
                                         noised_positions=positions)[0]
        elif outcome[0] == -1:
            decision = "benign"
            region = self.noise.frontier([rule.p_upper], rule=benign,
                                         max_tokens=self.max_tokens,
                                         noised_positions=positions)[0]
        if not region.certified:
            decision, region = "abstain", CertifiedRegion.empty(self.noise)
        c = self.detector.flagged_class
        label = {"flag": c, "abstain": ABSTAIN,
                 "benign": benign_label(c, self.num_classes)}[decision]
        side = 1 if decision == "flag" else -1
        answers = [_answer(b, decision != "abstain" and o == side, st, at)
                   for b, o, st, at in zip(self.budgets, outcome[1:], rule.status[1:],
                                           rule.decided_at[1:], strict=True)]
        status = _answer(None, decision != "abstain", rule.status[0],
                         rule.decided_at[0])["status"]
        result = Certification(label, rule.p_lower if decision != "benign" else None,
                               rule.p_upper if decision != "flag" else None, region, counts,
                               rule.queries, looks=rule.looks, time_s=time_s,
                               mode="decision", rule=self.detector.name, decision=decision,
                               status=status, decided_at=int(rule.decided_at[0]))
        result.attach_targets(answers, noised_positions)
        return result

    def _frontier_values(self, p: float) -> np.ndarray:
        """Radius mode: the region at bound ``p`` as a flat array of radii (-inf: not
        certified), clipped at ``max_radius``."""
        region = self.noise.frontier([p], max_tokens=self.max_tokens)[0]
        sigmas = [b.noise.sigma for b in self.noise.noised_continuous]
        scale = min(sigmas) if sigmas else 0.0
        values = np.where(np.isnan(region.gamma), -np.inf, region.gamma * scale).ravel()
        if self.max_radius is not None:
            values = np.minimum(values, self.max_radius)
        return values


def _answer(budget, certified: bool, status: str, decided_at) -> dict:
    """One target's answer.  ``status`` is the rule's; a threshold the rule certified but the
    answer does not claim (another side or class won, or the region is empty: possible only
    on the alpha event) is reported as given up, so ``certified`` and ``status`` agree."""
    if not certified and status == CERTIFIED:
        status = GAVE_UP
    return {"budget": budget, "certified": bool(certified),
            "status": CERTIFIED if certified else status, "decided_at": int(decided_at)}


def certify_sequential(clf: SmoothedClassifier, x, alpha: float, seed: int = 0, *,
                       targets: Sequence | None = None, detector: Detector | None = None,
                       n_max: int = 100_000, tolerance: float = 0.01, max_tokens: int = 16,
                       max_radius: float | None = None, first_look: int = 16,
                       boundary: str = "mixture", price: float | None = None
                       ) -> Certification:
    """Sequential certification of one record (see :class:`SequentialQuestion`).

    The labels come from the record's stream ``(seed, Stage.SEQUENTIAL)`` of noisy copies in
    draw order; the answer depends on the seed and the record only.  Valid with probability
    at least ``1 - alpha`` whatever the stopping time.
    """
    start = time.perf_counter()
    question = SequentialQuestion(clf.noise, clf.num_classes, alpha, n_max, targets=targets,
                                  detector=detector, tolerance=tolerance,
                                  max_tokens=max_tokens, max_radius=max_radius,
                                  first_look=first_look, boundary=boundary, price=price)
    record = clf.validate(x)
    stream = clf.stream(record, seed, Stage.SEQUENTIAL)
    rule = question.new_rule()
    while not rule.done:
        rule.observe(stream.labels(rule.next_draws()))
    return question.result(rule, clf.noise.noised_positions(record),
                           time.perf_counter() - start)

