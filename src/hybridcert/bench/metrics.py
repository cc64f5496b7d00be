"""What the benchmark's tables are made of: per-input certified indicators, the sample-size
ceiling of a sequential rule, and rates with intervals."""

from __future__ import annotations

import numpy as np

from hybridcert.bench.stats import seed_intervals
from hybridcert.blocks import HybridNoise
from hybridcert.certificate import Rule
from hybridcert.sequential.rules import ABOVE, DecisionTest


def ceiling_probability(zero_threshold: float, alpha: float, n_max: int, boundary: str,
                        mode: str = "flag", tol: float = 1e-7) -> float:
    """The largest threshold the sequential rule can certify at all: the highest ``t`` that
    ``DecisionTest([zero_threshold, t], ...)`` certifies after ``n_max`` draws that all agree
    (found by bisection to ``tol``; rounded down).  No input can be certified at a region
    whose threshold exceeds it, whatever the model: this is the sample-size ceiling."""
    if mode not in ("flag", "majority"):
        raise ValueError(f"mode must be 'flag' or 'majority', got {mode!r}")
    draws = np.ones(n_max, dtype=np.int64)

    def certifies(t: float) -> bool:
        kwargs = {"target_class": 1} if mode == "flag" else {}
        rule = DecisionTest([zero_threshold, t], alpha, n_max, mode=mode, boundary=boundary,
                            **kwargs)
        rule.observe(draws)
        return bool(rule.outcome[1] == ABOVE)

    lo, hi = zero_threshold, 1.0
    if not certifies(lo):
        return float("nan")
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if certifies(mid):
            lo = mid
        else:
            hi = mid
    return float(lo)


def eps_ceiling(noise: HybridNoise, p_ceiling: float, rule: Rule, tokens) -> list[float]:
    """Per token budget ``r``: the largest L2 radius a bound of ``p_ceiling`` certifies (NaN
    where not even eps = 0 is)."""
    if not np.isfinite(p_ceiling):
        return [float("nan")] * len(tokens)
    region = noise.frontier([p_ceiling], rule=rule, max_tokens=max(tokens))[0]
    out = []
    for r in tokens:
        g = region.gamma_at(int(r))
        out.append(float("nan") if np.isnan(g) else float(region.l2_radius(int(r))))
    return out


def rate_table(indicators, replicates: int = 2000, seed: int = 0) -> dict:
    """Mean over seeds and 95 % interval of per-seed, per-input indicators ``(seeds, inputs,
    cells)``, with every seed's rate and its interval over inputs
    (:func:`~hybridcert.bench.stats.seed_intervals`; an empty input set gives NaN)."""
    v = np.asarray(indicators, dtype=float)
    if v.shape[1] == 0:
        nan = np.full(v.shape[2:], np.nan)
        each = np.full((v.shape[0],) + v.shape[2:], np.nan)
        return {"mean": nan, "low": nan, "high": nan, "per_seed": each, "per_seed_low": each,
                "per_seed_high": each, "method": "t" if v.shape[0] > 1 else "bootstrap"}
    return seed_intervals(v, replicates=replicates, seed=seed)


__all__ = ["ceiling_probability", "eps_ceiling", "rate_table"]
