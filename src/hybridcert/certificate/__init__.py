"""The joint Neyman–Pearson certificate: bounds, certified frontier and baselines."""

from hybridcert.certificate.baselines import per_modality_check, sequential_bound
from hybridcert.certificate.bounds import lower_bound, upper_bound
from hybridcert.certificate.frontier import Frontier, certified_frontier, is_certified

__all__ = ["Frontier", "certified_frontier", "is_certified", "lower_bound",
           "per_modality_check", "sequential_bound", "upper_bound"]
