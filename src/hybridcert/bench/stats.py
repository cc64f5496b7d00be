"""95 % intervals of the benchmark's rates: over training seeds, and over inputs within a seed.

A benchmark figure is a mean over training seeds of a per-seed rate, itself a mean over test
inputs of a per-input indicator (certified at a cell, flagged, ...).  The two sources of
variability are reported separately:

* **over seeds** (which model training produced): a Student-t interval on the per-seed rates
  (``mean +- t_{0.975, S-1} * sd / sqrt(S)``, clipped to the rate's range), the headline
  interval whenever there are two seeds or more.  Unlike a percentile bootstrap over three
  seeds (27 distinct resamples, whose 2.5-97.5 % range can exclude a seed's own value), it
  widens honestly with few seeds;
* **over inputs, within one seed** (which test inputs were drawn): a percentile bootstrap of
  that seed's rate, printed beside the seed's value.  With one seed it is the only interval
  there is, and it is the figure's interval.

The inputs are the same for every seed, so the t-interval is about the expected rate over
training seeds on these inputs; the within-seed bootstrap says how much the input sample moves
each seed's rate.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import stats as _scipy_stats


def t_interval(per_seed, level: float = 0.95, bounds: tuple[float, float] | None = None
               ) -> dict[str, np.ndarray]:
    """Mean and Student-t interval over seeds (axis 0) of per-seed values.

    Parameters
    ----------
    per_seed : array_like, shape (seeds, ...)
        One value per seed (and per cell).
    level : float
        Coverage of the interval, in (0, 1).
    bounds : (float, float), optional
        Range of the quantity (e.g. (0, 1) for a rate): the interval is clipped to it.

    Returns
    -------
    dict
        ``mean``, ``low``, ``high`` (arrays of shape ``per_seed.shape[1:]``); the bounds are
        NaN with one seed (no spread to estimate).
    """
    v = np.asarray(per_seed, dtype=float)
    if v.ndim < 1 or v.shape[0] < 1:
        raise ValueError(f"per_seed must have at least one seed on axis 0, got shape {v.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    mean = v.mean(axis=0)
    seeds = v.shape[0]
    if seeds < 2:
        nan = np.full(mean.shape, np.nan)
        return {"mean": mean, "low": nan, "high": nan.copy()}
    half = _scipy_stats.t.ppf(0.5 + level / 2, seeds - 1) * v.std(axis=0, ddof=1) / np.sqrt(seeds)
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = np.clip(low, *bounds), np.clip(high, *bounds)
    return {"mean": mean, "low": low, "high": high}


def input_bootstrap(values, replicates: int = 2000, seed: int = 0, level: float = 0.95
                    ) -> dict[str, np.ndarray]:
    """Mean over inputs and its percentile bootstrap interval, for one seed.

    Parameters
    ----------
    values : array_like, shape (inputs, cells)
        Per-input values of one seed.

    Returns
    -------
    dict
        ``mean``, ``low``, ``high``: arrays of shape (cells,).
    """
    v = np.asarray(values, dtype=float)
    if v.ndim != 2 or v.shape[0] < 1:
        raise ValueError(f"values must have shape (inputs, cells) with at least one input, "
                         f"got {v.shape}")
    _check(replicates, level)
    stats = _weights(v.shape[0], replicates, seed) @ v
    tail = (1 - level) / 2
    return {"mean": v.mean(axis=0), "low": np.quantile(stats, tail, axis=0),
            "high": np.quantile(stats, 1 - tail, axis=0)}


def seed_intervals(values, replicates: int = 2000, seed: int = 0, level: float = 0.95,
                   bounds: tuple[float, float] | None = (0.0, 1.0)) -> dict:
    """A figure's mean over seeds with its interval, and every seed's own value with its
    interval over inputs.

    Parameters
    ----------
    values : array_like, shape (seeds, inputs) or (seeds, inputs, cells)
        Per-seed, per-input values (e.g. 0/1 indicators); the same inputs in every seed.
    replicates, seed : int
        Bootstrap replicates and the resampling's seed (the same input resamples for every
        seed).
    level : float
        Coverage of every interval.
    bounds : (float, float), optional
        Range of the quantity: the t-interval is clipped to it.

    Returns
    -------
    dict
        ``mean``, ``low``, ``high``: the mean over seeds and its interval (t over seeds with
        two seeds or more, else the one seed's bootstrap over inputs); ``per_seed``,
        ``per_seed_low``, ``per_seed_high``: shape (seeds, ...), each seed's rate and its
        bootstrap interval over inputs; ``method``: ``"t"`` or ``"bootstrap"``.  Shapes
        follow ``values.shape[2:]`` (scalars for 2-D input).
    """
    v = np.asarray(values, dtype=float)
    if v.ndim not in (2, 3) or v.shape[0] < 1 or v.shape[1] < 1:
        raise ValueError(f"values must have shape (seeds, inputs[, cells]) with at least one "
                         f"of each, got {v.shape}")
    _check(replicates, level)
    flat = v.reshape(v.shape[0], v.shape[1], -1)
    each = [input_bootstrap(flat[s], replicates, seed, level) for s in range(flat.shape[0])]
    per_seed = {k: np.stack([e[k] for e in each]) for k in ("mean", "low", "high")}
    if flat.shape[0] >= 2:
        out = t_interval(per_seed["mean"], level, bounds)
        method = "t"
    else:
        out = {k: per_seed[k][0] for k in ("mean", "low", "high")}
        method = "bootstrap"
    shape = v.shape[2:]

    def shaped(a, lead=()):
        a = np.asarray(a)
        return a.reshape(lead + shape) if shape or lead else float(a.ravel()[0])

    result = {k: shaped(out[k]) for k in ("mean", "low", "high")}
    lead = (flat.shape[0],)
    result.update(per_seed=shaped(per_seed["mean"], lead),
                  per_seed_low=shaped(per_seed["low"], lead),
                  per_seed_high=shaped(per_seed["high"], lead), method=method)
    return result


@lru_cache(maxsize=16)
def _weights(inputs: int, replicates: int, seed: int) -> np.ndarray:
    """Bootstrap resamples of ``inputs`` inputs as weights, shape (replicates, inputs): the
    same resamples for every seed and cell of a table (read-only)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, inputs, (replicates, inputs))
    rows = np.repeat(np.arange(replicates), inputs)
    counts = np.bincount(rows * inputs + draws.ravel(), minlength=replicates * inputs)
    weights = counts.reshape(replicates, inputs).astype(float) / inputs
    weights.flags.writeable = False
    return weights


def _check(replicates, level) -> None:
    if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 1:
        raise ValueError(f"replicates must be an integer >= 1, got {replicates!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")


__all__ = ["input_bootstrap", "seed_intervals", "t_interval"]
