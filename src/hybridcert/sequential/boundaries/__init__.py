"""Boundary families of the sequential rules, by name (one class and one line each)."""

from hybridcert.sequential.boundaries.base import (
    DECISION,
    RADIUS,
    REGISTRY,
    Boundary,
    boundary_names,
    get_boundary,
    register,
)
from hybridcert.sequential.boundaries.looks import LooksBoundary
from hybridcert.sequential.boundaries.mixture import Mixture, MixtureBoundary
from hybridcert.sequential.boundaries.spending import (
    SPEND_MIN_ALPHA,
    SpendingBoundary,
    spending_boundary,
)

register(MixtureBoundary())
register(LooksBoundary())
register(SpendingBoundary())

__all__ = ["DECISION", "RADIUS", "REGISTRY", "SPEND_MIN_ALPHA", "Boundary", "LooksBoundary",
           "Mixture", "MixtureBoundary", "SpendingBoundary", "boundary_names", "get_boundary",
           "register", "spending_boundary"]
