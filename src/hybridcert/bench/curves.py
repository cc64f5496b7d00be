"""Operating curves of the detector, read from the counts a fixed-n unit stores.

At a fixed n the draws of an input do not depend on tau: its count ``k`` of flagged copies out
of ``n`` gives one Clopper-Pearson lower bound ``p`` (one-sided, at the unit's alpha, as
:func:`~hybridcert.bench.units.certify_fixed` computes it), and for every budget ``(eps, r)``
the certificate engine's Neyman-Pearson bound ``lower_bound(p, ratio(eps, r))``
(:mod:`hybridcert.certificate`) is the smallest flagged probability any classifier with that
``p`` can have after a change within the budget.  The flag at ``tau`` is certified at the
budget iff that bound is ``>= tau`` (``Rule.flag(tau)``; the same decision as ``p >=
threshold_probability(...)``, the unit's own rule), so one pass over the stored counts gives
the certified decisions at every tau: no new draws.

Each tau's certificate holds at alpha on its own; the curve is a family of them (reading off
the best tau after looking at the test inputs would not be).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hybridcert.bench.calibrate import choose_pair, choose_threshold
from hybridcert.blocks import HybridNoise
from hybridcert.certificate import lower_bound
from hybridcert.smoothing.core import lower_confidence_bound

#: Budgets (eps, r) of the curves: image-only, token-only and joint changes.
CURVE_BUDGETS: tuple[tuple[float, int], ...] = ((0.0, 0), (0.0, 1), (0.0, 2), (0.25, 0),
                                                (0.25, 1))
#: Ends of the tau grid: the hybrid-smoothing paper's guard threshold and 0.999.
TAU_LOW, TAU_HIGH = 4.6e-5, 0.999
#: Validation false-flag rates whose taus the operating-point tables show.
VAL_RATES: tuple[float, ...] = (0.01, 0.05, 0.10)


#: Points of the tau grid log-spaced in tau (up to 1/2) and in 1 - tau (from 1/2).
LOW_POINTS, HIGH_POINTS = 24, 16


def tau_grid(extra: Sequence[float] = (), low_points: int = LOW_POINTS,
             high_points: int = HIGH_POINTS) -> np.ndarray:
    """The sweep's taus: log-spaced from :data:`TAU_LOW` to 1/2 (``low_points``) and, where
    the detectors' taus lie, log-spaced in ``1 - tau`` from 1/2 to :data:`TAU_HIGH`
    (``high_points``), plus the taus in ``extra`` (e.g. the calibrated ones); sorted, unique."""
    low = np.geomspace(TAU_LOW, 0.5, low_points)
    high = 1.0 - np.geomspace(0.5, 1.0 - TAU_HIGH, high_points)
    values = [float(t) for t in extra if t is not None and np.isfinite(t) and 0 < t < 1]
    return np.unique(np.concatenate([low, high, values]))


def flag_bounds(flagged, n: int, alpha: float) -> np.ndarray:
    """One-sided Clopper-Pearson lower bounds at ``alpha`` of ``flagged`` counts out of
    ``n`` (the fixed-n detector's bound)."""
    return np.array([lower_confidence_bound(int(k), int(n), alpha) for k in flagged],
                    dtype=float)


def budget_bounds(noise: HybridNoise, p_lower, budgets: Sequence[tuple[float, int]]
                  ) -> np.ndarray:
    """Per budget and input: the certificate engine's lower bound on the flagged probability
    after any change within the budget, ``lower_bound(p, ratio)``; shape (budgets, inputs).
    A budget the noise cannot cover (e.g. a token change under image-only smoothing) bounds
    nothing: 0."""
    p = np.asarray(p_lower, dtype=float)
    out = np.zeros((len(budgets), p.size))
    for b, (eps, r) in enumerate(budgets):
        if (eps and not noise.noised_continuous) or (r and not noise.noised_tokens):
            continue
        out[b] = np.atleast_1d(lower_bound(p, noise.ratio(noise.pair_budget(eps, r))))
    return out


def certified(bounds: np.ndarray, taus) -> np.ndarray:
    """``(taus, budgets, inputs)`` bool: the flag at each tau is certified at each budget
    (``Rule.flag(tau)``: the bound is at least tau)."""
    t = np.asarray(taus, dtype=float)
    return np.asarray(bounds)[None, :, :] >= t[:, None, None]


def tau_ceiling(noise: HybridNoise, n: int, alpha: float,
                budgets: Sequence[tuple[float, int]]) -> np.ndarray:
    """Per budget, the largest tau whose flag ``n`` draws can certify at all, whatever the
    model: the engine's bound of the best possible ``p`` (all ``n`` draws flagged)."""
    top = lower_confidence_bound(int(n), int(n), alpha)
    return budget_bounds(noise, [top], budgets)[:, 0]


def fixed_counts(unit: dict, setting: str = "detector") -> tuple[np.ndarray, int] | None:
    """``(flagged counts per input, n)`` of a fixed-n unit (None for a sequential unit, whose
    counts stop at a data-dependent time and so carry no fixed-n bound)."""
    if unit.get("mode") != "fixed" or setting not in unit.get("rows", {}):
        return None
    rows = unit["rows"][setting]
    n = {int(row["queries"]) for row in rows}
    if len(n) != 1:
        return None
    return np.array([int(row["counts"][1]) for row in rows]), n.pop()


def validation_taus(calibration: dict, rates: Sequence[float] = VAL_RATES) -> dict | None:
    """The taus for the validation false-flag ``rates`` (:func:`choose_threshold` on the
    stored validation estimates; the 5 % one is the unit's calibrated tau), or None when the
    calibration stored no estimates."""
    scores = calibration.get("scores")
    if scores is None:
        return None
    copies = np.asarray(calibration["copies_each"], dtype=np.int64)
    out = {}
    for rate in rates:
        chosen = choose_threshold(np.asarray(scores, float), copies, rate)
        out[float(rate)] = {"tau": chosen["tau"], "rate": chosen["rate"],
                            "feasible": chosen["feasible"]}
    return out


def validation_rate(calibration: dict, tau: float, style: str | None = None) -> float:
    """Share of the benign validation records whose estimate is ``>= tau`` (NaN without
    stored estimates), optionally within one art style (``openmoji``, ``noto``)."""
    scores = calibration.get("scores")
    if scores is None:
        return float("nan")
    s = np.asarray(scores, dtype=float)
    if style is not None:
        mask = np.asarray(calibration.get("styles", []), dtype=object) == style
        if not mask.any():
            return float("nan")
        s = s[mask]
    return float(np.mean(s >= tau))


def calibration_bootstrap(bounds, labels, calibration: dict, rate: float = 0.05,
                          replicates: int = 2000, seed: int = 0, level: float = 0.95
                          ) -> dict | None:
    """One seed's certified recall and false-flag rate at its validation tau, with the
    threshold's own calibration error propagated into the interval.

    Each replicate re-runs the calibration on a resample of the validation data and reads the
    test inputs' stored bounds at the tau it gives: the benign validation records are drawn
    with replacement within each art style (the calibration's sampling design), each drawn
    record's flagged count is redrawn from ``Binomial(copies, estimate)`` (its Monte Carlo
    error), :func:`choose_threshold` picks the replicate's tau for ``rate``, and the test
    inputs are drawn with replacement within each class.  The percentile interval of the
    replicates' rates covers both which validation records set tau and which test inputs
    measured it; the interval over test inputs alone treats tau as exact.

    Parameters
    ----------
    bounds : array_like, shape (budgets, inputs)
        The unit's budget bounds (:func:`unit_bounds`).
    labels : array_like of int, shape (inputs,)
        1 unsafe, 0 benign.
    calibration : dict
        The unit's stored calibration (``scores``, ``copies_each``, optionally ``styles``).

    Returns
    -------
    dict or None
        ``tau`` (the calibrated tau for ``rate``), ``tau_low``, ``tau_high`` (the replicates'
        percentile range); ``recall`` and ``false_flags``, each ``{"value", "low", "high"}``
        arrays over budgets; None without stored validation estimates.
    """
    scores = calibration.get("scores")
    if scores is None:
        return None
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 1:
        raise ValueError(f"replicates must be an integer >= 1, got {replicates!r}")
    scores = np.asarray(scores, dtype=float)
    copies = np.asarray(calibration["copies_each"], dtype=np.int64)
    styles = np.asarray(calibration.get("styles") or [""] * scores.size, dtype=object)
    b = np.asarray(bounds, dtype=float)
    y = np.asarray(labels)
    if b.ndim != 2 or b.shape[1] != y.size:
        raise ValueError(f"bounds must have shape (budgets, {y.size}), got {b.shape}")
    rng = np.random.default_rng(seed)
    strata = [np.flatnonzero(styles == s) for s in np.unique(styles)]
    classes = {c: np.flatnonzero(y == c) for c in (1, 0)}
    taus = np.empty(replicates)
    rates = {c: np.full((replicates, b.shape[0]), np.nan) for c in classes}
    for j in range(replicates):
        drawn = np.concatenate([rng.choice(g, g.size) for g in strata])
        counts = rng.binomial(copies[drawn], scores[drawn])
        taus[j] = choose_threshold(counts / copies[drawn], copies[drawn], rate)["tau"]
        for c, members in classes.items():
            if members.size:
                picked = b[:, rng.choice(members, members.size)]
                rates[c][j] = (picked >= taus[j]).mean(axis=1)
    tau = choose_threshold(scores, copies, rate)["tau"]
    tail = (1 - level) / 2
    out = {"tau": tau, "tau_low": float(np.quantile(taus, tail)),
           "tau_high": float(np.quantile(taus, 1 - tail))}
    for c, what in ((1, "recall"), (0, "false_flags")):
        if classes[c].size:
            out[what] = {"value": (b[:, classes[c]] >= tau).mean(axis=1),
                         "low": np.quantile(rates[c], tail, axis=0),
                         "high": np.quantile(rates[c], 1 - tail, axis=0)}
    return out


def unit_bounds(unit: dict, noise: HybridNoise, alpha: float,
                budgets: Sequence[tuple[float, int]] = CURVE_BUDGETS) -> np.ndarray | None:
    """:func:`budget_bounds` of a fixed-n unit's stored counts (None for a sequential
    unit)."""
    counts = fixed_counts(unit)
    if counts is None:
        return None
    flagged, n = counts
    return budget_bounds(noise, flag_bounds(flagged, n, alpha), budgets)


def and_bounds(entry: dict, image_noise: HybridNoise, text_noise: HybridNoise, alpha: float,
               budgets: Sequence[tuple[float, int]] = CURVE_BUDGETS
               ) -> tuple[np.ndarray, np.ndarray] | None:
    """The factorized AND's two branches read from their stored fixed-n counts (each at
    ``alpha``, the branch's own: half the joint certificate's): per budget ``(eps, r)`` and
    input, the image branch's bound after an image change of ``eps`` and the text branch's
    after ``r`` token changes; None when a branch is not at a fixed n."""
    out = []
    for modality, noise in (("image", image_noise), ("text", text_noise)):
        counts = fixed_counts(entry["branches"][modality])
        if counts is None:
            return None
        flagged, n = counts
        own = [(e, 0) if modality == "image" else (0.0, r) for e, r in budgets]
        out.append(budget_bounds(noise, flag_bounds(flagged, n, alpha), own))
    return out[0], out[1]


def and_certified(bounds: tuple[np.ndarray, np.ndarray], pairs) -> np.ndarray:
    """``(pairs, budgets, inputs)`` bool: the AND's flag (both branches flag) at each pair
    ``(tau_image, tau_text)`` is certified at each budget: each branch's bound clears its
    own tau."""
    image, text = (np.asarray(b) for b in bounds)
    t = np.asarray(pairs, dtype=float).reshape(-1, 2)
    return (image[None] >= t[:, 0, None, None]) & (text[None] >= t[:, 1, None, None])


def and_pairs(validation: dict, rates: Sequence[float] = VAL_RATES) -> dict | None:
    """The AND's pair of thresholds for each validation false-flag rate in ``rates``
    (:func:`~hybridcert.bench.calibrate.choose_pair` on the branches' stored validation
    estimates, as the benchmark chooses it), or None without stored estimates."""
    if not validation:
        return None
    return {float(rate): choose_pair(validation["image"], validation["text"],
                                     validation["labels"], validation["copies"],
                                     min(max(float(rate), 1e-9), 1 - 1e-9))
            for rate in rates}


__all__ = ["CURVE_BUDGETS", "HIGH_POINTS", "LOW_POINTS", "TAU_HIGH", "TAU_LOW", "VAL_RATES",
           "and_bounds", "and_certified", "and_pairs", "budget_bounds", "calibration_bootstrap",
           "certified", "fixed_counts", "flag_bounds", "tau_ceiling", "tau_grid", "unit_bounds",
           "validation_rate", "validation_taus"]
