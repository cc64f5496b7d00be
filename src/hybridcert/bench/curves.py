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

from hybridcert.bench.calibrate import choose_threshold
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


def unit_bounds(unit: dict, noise: HybridNoise, alpha: float,
                budgets: Sequence[tuple[float, int]] = CURVE_BUDGETS) -> np.ndarray | None:
    """:func:`budget_bounds` of a fixed-n unit's stored counts (None for a sequential
    unit)."""
    counts = fixed_counts(unit)
    if counts is None:
        return None
    flagged, n = counts
    return budget_bounds(noise, flag_bounds(flagged, n, alpha), budgets)


__all__ = ["CURVE_BUDGETS", "HIGH_POINTS", "LOW_POINTS", "TAU_HIGH", "TAU_LOW", "VAL_RATES",
           "budget_bounds", "certified", "fixed_counts", "flag_bounds", "tau_ceiling",
           "tau_grid", "unit_bounds", "validation_rate", "validation_taus"]
