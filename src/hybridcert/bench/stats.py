"""95 % intervals over training seeds and test inputs (a two-level bootstrap).

A benchmark figure is a mean over seeds of a mean over inputs of a per-input indicator
(certified at a cell, flagged, ...).  Its variability has two sources: which model training
produced (seed) and which inputs were drawn (test sample).  Each bootstrap replicate draws
the seeds with replacement and, independently, the inputs with replacement (the same inputs
for every seed: they are paired), and recomputes the figure; the interval is the 2.5 and 97.5
percentiles of the replicates (percentile bootstrap).  With one seed it is the ordinary
bootstrap over inputs.  With three seeds the seed level is coarse (27 distinct seed draws):
the intervals say how much the figures move, not more.
"""

from __future__ import annotations

import numpy as np


def seed_input_bootstrap(values, replicates: int = 2000, seed: int = 0,
                         level: float = 0.95) -> dict[str, np.ndarray]:
    """Point estimate and percentile interval of the mean over seeds and inputs.

    Parameters
    ----------
    values : array_like, shape (seeds, inputs) or (seeds, inputs, cells)
        Per-seed, per-input values (e.g. 0/1 indicators); the same inputs in every seed.
    replicates : int
        Bootstrap replicates.
    seed : int
        Seed of the resampling.
    level : float
        Coverage of the interval.

    Returns
    -------
    dict
        ``mean``, ``low``, ``high``: arrays of shape ``values.shape[2:]`` (scalars for 2-D
        input).
    """
    v = np.asarray(values, dtype=float)
    if v.ndim not in (2, 3) or v.shape[0] < 1 or v.shape[1] < 1:
        raise ValueError(f"values must have shape (seeds, inputs[, cells]) with at least one "
                         f"of each, got {v.shape}")
    if isinstance(replicates, bool) or not isinstance(replicates, int) or replicates < 1:
        raise ValueError(f"replicates must be an integer >= 1, got {replicates!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level!r}")
    flat = v.reshape(v.shape[0], v.shape[1], -1)
    seeds, inputs, cells = flat.shape
    rng = np.random.default_rng(seed)
    input_weights = np.stack([np.bincount(rng.integers(0, inputs, inputs), minlength=inputs)
                              for _ in range(replicates)]).astype(float) / inputs
    seed_weights = np.stack([np.bincount(rng.integers(0, seeds, seeds), minlength=seeds)
                             for _ in range(replicates)]).astype(float) / seeds
    per_seed = np.einsum("bn,snc->bsc", input_weights, flat)
    stats = np.einsum("bs,bsc->bc", seed_weights, per_seed)
    tail = (1 - level) / 2
    out = {"mean": flat.mean(axis=(0, 1)),
           "low": np.quantile(stats, tail, axis=0),
           "high": np.quantile(stats, 1 - tail, axis=0)}
    shape = v.shape[2:]
    return {k: (val.reshape(shape) if shape else float(val[0])) for k, val in out.items()}


__all__ = ["seed_input_bootstrap"]
