"""One benchmark unit: one model, one noise (a threat model), a set of test inputs.

Every input gets one label stream (seed ``input_seed(run_seed, id)``, stage
``Stage.SEQUENTIAL``: the copies ``hybridcert certify --mode decision`` would draw) and the
stream answers, in one pass of shared forward passes (:func:`~hybridcert.bench.engine.run_jobs`):

* ``detector``: the thresholded detector's flag side at the 25 grid cells (joint
  certificate, :class:`~hybridcert.sequential.SequentialQuestion`);
* ``majority``: the majority vote at the same cells;
* ``detector_sequential`` / ``majority_sequential``: the same questions at the thresholds of
  sequential composition (sound, looser);
* ``detector_per_modality`` / ``majority_per_modality``: the UNSOUND per-modality check's
  thresholds (its claims are counted, never reported as certificates).

Each rule is valid on its own (docs/SEQUENTIAL.md); they only share draws.

With ``Settings(mode="fixed")`` every input draws exactly ``n_max`` copies from the same
stream and every rule above is read from that one count (:func:`certify_fixed`): a certificate
at a fixed n, so two rules whose thresholds are equal at a cell decide it identically.  The
sequential rule with its price then reads the first draws of the same stream
(``detector_stopping`` / ``majority_stopping``), for a table of its own: the draws it saves
and the decisions it loses against fixed n on the same inputs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from hybridcert.bench.baselines import grid_thresholds
from hybridcert.bench.engine import Job, LabelFn, run_jobs
from hybridcert.blocks import CertifiedRegion, HybridNoise
from hybridcert.certificate import MAJORITY
from hybridcert.sequential.question import SequentialQuestion
from hybridcert.sequential.rules import ABOVE, DecisionTest, RuleState
from hybridcert.smoothing import Detector, SmoothedClassifier, certification_rows
from hybridcert.smoothing.core import detector_results, lower_confidence_bound
from hybridcert.smoothing.results import ABSTAIN, Certification

#: Modes of :class:`Settings`.
MODES = ("sequential", "fixed")


@dataclass
class Settings:
    """How a unit certifies.

    Parameters
    ----------
    alpha : float
        Probability of any wrong claim per input and rule.
    n_max : int
        Cap on the draws per input (a sequential decision stops earlier when settled).
    boundary : {"looks", "mixture"}
        Confidence-sequence family (docs/SEQUENTIAL.md).
    price_detector, price_majority : float or None
        Draws one grid cell is worth (``DecisionTest(price=...)``); None: settle every cell
        the cap can.
    mode : {"sequential", "fixed"}
        "sequential": every rule is a sequential decision of its own (capped at ``n_max``);
        "fixed": every input draws exactly ``n_max`` copies and every rule is read from
        their count (:func:`certify_fixed`); the sequential rules (boundary, prices) run on
        the same stream for comparison only.
    """

    alpha: float = 0.001
    n_max: int = 10_000
    boundary: str = "looks"
    price_detector: float | None = 1000.0
    price_majority: float | None = 500.0
    mode: str = "sequential"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")


def _baseline_rule(thresholds, alpha, n_max, detector: Detector | None, boundary, price):
    if detector is None:
        return DecisionTest(thresholds, alpha, n_max, mode="majority", boundary=boundary,
                            price=price)
    return DecisionTest(thresholds, alpha, n_max, mode="flag",
                        target_class=detector.flagged_class, boundary=boundary, price=price)


def certify_unit(clf: SmoothedClassifier, records: Sequence[dict], seeds: Sequence[int],
                 cells: Sequence[tuple[float, int]], settings: Settings,
                 tau: float | None, *, majority: bool = True, baselines: bool = True,
                 labels_fn: LabelFn | None = None,
                 progress: Callable[[int], None] | None = None, batch_size: int = 128) -> dict:
    """Certify ``records`` with ``clf``: detector (if ``tau``) and majority vote at ``cells``
    and, with ``baselines``, the sequential-composition and per-modality thresholds
    (``batch_size`` copies per forward pass, :func:`~hybridcert.bench.engine.run_jobs`).

    Returns
    -------
    dict
        ``results``: {setting: list of Certification} (``detector``, ``majority``);
        ``outcomes``: {rule name: (inputs, cells) bool arrays of certified cells} for every
        rule (joint ones included, from their results); ``drawn``: copies per input;
        ``seconds``: wall time; ``thresholds``: {setting: {method: array per cell}}.
    """
    if settings.mode == "fixed":
        return certify_fixed(clf, records, seeds, cells, settings, tau, majority=majority,
                             baselines=baselines, labels_fn=labels_fn, progress=progress,
                             batch_size=batch_size)
    noise: HybridNoise = clf.noise
    start = time.perf_counter()
    questions: dict[str, SequentialQuestion] = {}
    extra: dict[str, np.ndarray] = {}
    thresholds: dict[str, dict] = {}
    detector = Detector(tau, 1, "flag") if tau is not None else None
    price_detector = settings.price_detector
    if detector is not None:
        questions["detector"] = SequentialQuestion(
            noise, 2, settings.alpha, settings.n_max, targets=list(cells), detector=detector,
            boundary=settings.boundary, price=price_detector)
    if majority:
        questions["majority"] = SequentialQuestion(
            noise, 2, settings.alpha, settings.n_max, targets=list(cells),
            boundary=settings.boundary, price=settings.price_majority)
    for name, question in questions.items():
        rule = detector.rules()[0] if name == "detector" else MAJORITY
        grid = grid_thresholds(noise, cells, rule) if baselines else \
            {"joint": np.array([noise.threshold(noise.pair_budget(e, r), rule)
                                for e, r in cells])}
        thresholds[name] = grid
        if baselines:
            zero = question.thresholds[0]
            for method in ("sequential", "per_modality"):
                extra[f"{name}_{method}"] = np.concatenate([[zero], grid[method]])
    jobs = []
    for record, seed in zip(records, seeds, strict=True):
        rules = {name: q.new_rule() for name, q in questions.items()}
        for name, values in extra.items():
            setting = name.split("_")[0]
            price = price_detector if setting == "detector" else settings.price_majority
            rules[name] = _baseline_rule(values, settings.alpha, settings.n_max,
                                         detector if setting == "detector" else None,
                                         settings.boundary, price)
        jobs.append(Job(record, int(seed), rules))
    run_jobs(clf, jobs, labels_fn=labels_fn, batch_size=batch_size, progress=progress)
    results: dict[str, list] = {name: [] for name in questions}
    outcomes: dict[str, list] = {name: [] for name in list(questions) + list(extra)}
    for job in jobs:
        positions = noise.noised_positions(job.record)
        for name, question in questions.items():
            cert = question.result(job.rules[name], positions, job.seconds)
            results[name].append(cert)
            outcomes[name].append(cert.certified_targets)
        for name in extra:
            rule = job.rules[name]
            certified = rule.outcome[1:] == ABOVE
            # a majority baseline claims its cells for the class it certified at zero budget
            outcomes[name].append(certified & bool(rule.outcome[0] == ABOVE))
    return {"results": results,
            "labels_of": {name: [int(c.label) for c in certs] for name, certs in results.items()},
            "baseline_labels": {name: [int(job.rules[name].label) for job in jobs]
                                for name in extra},
            "outcomes": {k: np.array(v, dtype=bool).reshape(len(jobs), len(cells))
                         for k, v in outcomes.items()},
            "drawn": np.array([job.drawn for job in jobs]),
            "queries": {name: np.array([job.rules[name].queries for job in jobs])
                        for name in jobs[0].rules} if jobs else {},
            "seconds": time.perf_counter() - start, "thresholds": thresholds}


class FixedDraws(RuleState):
    """Exactly ``n`` draws, counted per class (asked for ``look`` at a time, so a window of
    inputs never holds more than ``look`` copies each); a fixed-n certificate reads the
    counts."""

    def __init__(self, num_classes: int, n: int, look: int = 512):
        super().__init__(num_classes, n)
        self.look = int(look)

    def next_draws(self) -> int:
        return 0 if self.done else min(self.look, self.n_max - self.queries)

    def observe(self, labels) -> None:
        arr = self._labels(labels)
        self.counts += np.bincount(arr, minlength=self.num_classes).astype(np.int64)
        self.queries += int(arr.size)
        self.done = self.queries >= self.n_max


def _joint_thresholds(noise: HybridNoise, cells, rule) -> np.ndarray:
    return np.array([noise.threshold(noise.pair_budget(e, r), rule) for e, r in cells])


def certify_fixed(clf: SmoothedClassifier, records: Sequence[dict], seeds: Sequence[int],
                  cells: Sequence[tuple[float, int]], settings: Settings,
                  tau: float | None, *, majority: bool = True, baselines: bool = True,
                  labels_fn: LabelFn | None = None,
                  progress: Callable[[int], None] | None = None, batch_size: int = 128) -> dict:
    """:func:`certify_unit` at a fixed n: every input draws exactly ``settings.n_max`` copies
    of its stream (``Stage.SEQUENTIAL``, seed per input) and every rule is read from their
    one count.

    * detector (flag side): ``p_lower``, the one-sided Clopper-Pearson bound at ``alpha`` on
      the flagged class; a method certifies a cell iff ``p_lower`` is at least its threshold
      there (:func:`~hybridcert.bench.baselines.grid_thresholds`);
    * majority vote (two classes): the most frequent class of the same draws, bounded at
      ``alpha / 2`` (one side of a two-sided interval on ``P(class 1)``, which bounds both
      classes at once, so choosing the class from the same draws costs no validity);
      certified at a cell iff that bound is at least the method's threshold.

    So two methods whose thresholds are equal at a cell certify exactly the same inputs there.
    With ``baselines``, the sequential rules (``settings.boundary`` and prices, cap
    ``n_max``) read the first draws of the same streams: ``<setting>_stopping``.

    Returns the dict of :func:`certify_unit`, with ``p_lower`` ({setting: bound per input})
    and ``mode`` "fixed".
    """
    noise: HybridNoise = clf.noise
    n, alpha = settings.n_max, settings.alpha
    start = time.perf_counter()
    detector = Detector(tau, 1, "flag") if tau is not None else None
    names = (["detector"] if detector is not None else []) + (["majority"] if majority else [])
    if not names:
        raise ValueError("nothing to certify: give tau or majority=True")
    thresholds: dict[str, dict] = {}
    stopping: dict[str, SequentialQuestion] = {}
    for name in names:
        rule = detector.rules()[0] if name == "detector" else MAJORITY
        thresholds[name] = grid_thresholds(noise, cells, rule) if baselines else \
            {"joint": _joint_thresholds(noise, cells, rule)}
        if baselines:
            stopping[name] = SequentialQuestion(
                noise, 2, alpha, n, targets=list(cells),
                detector=detector if name == "detector" else None, boundary=settings.boundary,
                price=settings.price_detector if name == "detector" else settings.price_majority)
    jobs = [Job(record, int(seed), {"fixed": FixedDraws(2, n),
                                    **{f"{k}_stopping": q.new_rule() for k, q in stopping.items()}})
            for record, seed in zip(records, seeds, strict=True)]
    run_jobs(clf, jobs, labels_fn=labels_fn, batch_size=batch_size, progress=progress)
    counts = np.array([job.rules["fixed"].counts for job in jobs], dtype=np.int64).reshape(-1, 2)
    positions = [noise.noised_positions(job.record) for job in jobs]
    seconds = np.array([job.seconds for job in jobs])
    results: dict[str, list] = {}
    bounds: dict[str, np.ndarray] = {}
    if detector is not None:
        results["detector"] = detector_results(
            noise, detector, counts[:, 1], n, detector.level(alpha), positions, 16, counts,
            [n] * len(jobs), seconds, 2)
        bounds["detector"] = np.array([c.p_lower for c in results["detector"]], dtype=float)
    if majority:
        top = np.argmax(counts, axis=1) if len(jobs) else np.zeros(0, int)
        p_a = np.array([lower_confidence_bound(int(c[t]), n, alpha / 2)
                        for c, t in zip(counts, top, strict=True)], dtype=float)
        regions = noise.frontier(p_a, max_tokens=16, noised_positions=positions,
                                 batch_invariant=True) if len(jobs) else []
        results["majority"] = [
            Certification(int(t) if region.certified else ABSTAIN, float(p), None,
                          region if region.certified else CertifiedRegion.empty(noise),
                          c, n, time_s=float(sec), mode="fixed", rule="majority")
            for t, p, region, c, sec in zip(top, p_a, regions, counts, seconds, strict=True)]
        bounds["majority"] = p_a
    outcomes: dict[str, np.ndarray] = {}
    labels_of = {name: [int(c.label) for c in certs] for name, certs in results.items()}
    baseline_labels: dict[str, list] = {}
    for name in names:
        for method, values in thresholds[name].items():
            key = name if method == "joint" else f"{name}_{method}"
            outcomes[key] = bounds[name][:, None] >= np.asarray(values, dtype=float)[None, :]
            if key != name:
                baseline_labels[key] = labels_of[name]
    queries = {"fixed": np.full(len(jobs), n)}
    for name, question in stopping.items():
        key = f"{name}_stopping"
        certs = [question.result(job.rules[key], positions[i]) for i, job in enumerate(jobs)]
        outcomes[key] = np.array([c.certified_targets for c in certs], dtype=bool).reshape(
            len(jobs), len(cells))
        baseline_labels[key] = [int(c.label) for c in certs]
        queries[key] = np.array([job.rules[key].queries for job in jobs])
    return {"results": results, "labels_of": labels_of, "baseline_labels": baseline_labels,
            "outcomes": outcomes, "drawn": np.array([job.drawn for job in jobs]),
            "queries": queries, "seconds": time.perf_counter() - start,
            "thresholds": thresholds, "p_lower": bounds, "mode": "fixed"}


def unit_rows(unit: dict, labels: Sequence[int], ids: Sequence[str]) -> dict[str, list[dict]]:
    """Per-input export rows (:func:`hybridcert.smoothing.result_row`) of each setting."""
    return {name: certification_rows(certs, [int(v) for v in labels], list(ids))
            for name, certs in unit["results"].items()}


__all__ = ["MODES", "FixedDraws", "Settings", "certify_fixed", "certify_unit", "unit_rows"]
