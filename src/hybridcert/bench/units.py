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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from hybridcert.bench.baselines import grid_thresholds
from hybridcert.bench.engine import Job, LabelFn, run_jobs
from hybridcert.blocks import HybridNoise
from hybridcert.certificate import MAJORITY
from hybridcert.sequential.question import SequentialQuestion
from hybridcert.sequential.rules import ABOVE, DecisionTest
from hybridcert.smoothing import Detector, SmoothedClassifier, certification_rows


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
    """

    alpha: float = 0.001
    n_max: int = 10_000
    boundary: str = "looks"
    price_detector: float | None = 1000.0
    price_majority: float | None = 500.0


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
                 progress: Callable[[int], None] | None = None) -> dict:
    """Certify ``records`` with ``clf``: detector (if ``tau``) and majority vote at ``cells``
    and, with ``baselines``, the sequential-composition and per-modality thresholds.

    Returns
    -------
    dict
        ``results``: {setting: list of Certification} (``detector``, ``majority``);
        ``outcomes``: {rule name: (inputs, cells) bool arrays of certified cells} for every
        rule (joint ones included, from their results); ``drawn``: copies per input;
        ``seconds``: wall time; ``thresholds``: {setting: {method: array per cell}}.
    """
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
    run_jobs(clf, jobs, labels_fn=labels_fn, progress=progress)
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


def unit_rows(unit: dict, labels: Sequence[int], ids: Sequence[str]) -> dict[str, list[dict]]:
    """Per-input export rows (:func:`hybridcert.smoothing.result_row`) of each setting."""
    return {name: certification_rows(certs, [int(v) for v in labels], list(ids))
            for name, certs in unit["results"].items()}


__all__ = ["Settings", "certify_unit", "unit_rows"]
