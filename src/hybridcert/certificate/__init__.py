"""The joint Neyman–Pearson certificate: bounds, rules, certified regions and baselines.

General entry points (any number of token blocks, any rule):

* :class:`Rule` — what must hold: ``Rule.majority()``, ``Rule.flag(tau)``,
  ``Rule.benign(tau)``;
* :func:`is_certified`, :func:`certified_gamma`, :func:`frontier_grid`,
  :func:`threshold_probability`;
* :func:`certified_frontier` — one continuous and one token block, radii in L2 units;
* :func:`lower_bound`, :func:`upper_bound` — the bounds themselves.
"""

from hybridcert.certificate.baselines import (
    discrete_threshold,
    per_modality_check,
    sequential_bound,
    sequential_radius,
)
from hybridcert.certificate.bounds import GAMMA_SEPARATED, lower_bound, upper_bound
from hybridcert.certificate.frontier import (
    DEFAULT_MAX_TOKENS,
    MAX_TOKENS,
    Frontier,
    Grid,
    certified_frontier,
    certified_gamma,
    frontier_grid,
    is_certified,
)
from hybridcert.certificate.rules import MAJORITY, Rule
from hybridcert.certificate.thresholds import threshold_probability

__all__ = ["DEFAULT_MAX_TOKENS", "GAMMA_SEPARATED", "MAJORITY", "MAX_TOKENS", "Frontier",
           "Grid", "Rule", "certified_frontier", "certified_gamma", "discrete_threshold",
           "frontier_grid", "is_certified", "lower_bound", "per_modality_check",
           "sequential_bound", "sequential_radius", "threshold_probability", "upper_bound"]
