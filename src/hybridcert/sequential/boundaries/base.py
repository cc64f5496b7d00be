"""The interface every boundary family implements, and the registry that names them.

A family turns a threshold ``t`` and a level into the counts that certify ``p > t`` at each
point of its schedule (the rules in :mod:`hybridcert.sequential.rules` do the rest: giving
up, the class choice, the union over thresholds).  Adding a family is one subclass of
:class:`Boundary` plus one :func:`register` line; every rule, the question, the config and
the CLI take it by name.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hybridcert.sequential.bounds import look_points

#: The modes a boundary can be asked for (:meth:`Boundary.check`).
DECISION, RADIUS = "decision", "radius"


class Boundary:
    """One boundary family (stateless; one registered instance per family).

    Attributes
    ----------
    name : str
        The name users give (``--boundary``, ``boundary =`` in a config).
    look_growth : float
        Default spacing of its looks (``look_growth`` of the rules), decision mode.
    radius_look_growth : float
        Default spacing of the radius mode's looks.
    per_threshold_levels : bool
        True when each threshold may carry its own level (the spending family's tiers).
    """

    name: str = ""
    look_growth: float = 1.25
    radius_look_growth: float = 1.25
    per_threshold_levels: bool = False

    def check(self, alpha: float, mode: str) -> None:
        """Refuse (ValueError naming the parameter) what this family cannot do: ``alpha``
        (already in (0, 1)) and ``mode`` ("decision" or "radius")."""

    def schedule(self, n_max: int, dense: int, growth: float, look_growth: float
                 ) -> np.ndarray:
        """Increasing draw counts at which the boundary is computed (ending at ``n_max``)."""
        return look_points(n_max, look_growth)

    def crossing_counts(self, t: np.ndarray, reachable: np.ndarray, sched: np.ndarray,
                        n_max: int, level: float, levels: Sequence[float] | None,
                        mixture) -> np.ndarray:
        """Per threshold ``t[j]`` (rows) and schedule point (columns), the lowest count that
        certifies ``p > t[j]`` there; anything above the point's draw count when none does.
        Rows of unreachable thresholds are ignored.  ``levels``: one level per threshold
        (only when :attr:`per_threshold_levels`), else ``level`` for all.  ``mixture``: the
        rule's :class:`~hybridcert.sequential.boundaries.mixture.Mixture` alternative."""
        raise NotImplementedError

    def earliest_claim(self, floor: float, alpha: float, n_max: int, mixture,
                       look_growth: float) -> int:
        """Earliest draw at which a claim at the lowest threshold ``floor`` is possible at
        level ``alpha`` (all draws successes; ``n_max + 1``: never), ``mixture`` being the
        arm's alternative (floor ``floor``).  Used to pay for the class choice (``tau`` in
        docs/SEQUENTIAL.md)."""
        raise NotImplementedError

    def lower_bound(self, n: int, k: int, level: float, mixture, looks: np.ndarray) -> float:
        """A lower confidence bound on the rate after ``k`` of ``n`` that holds together with
        the rule's claims (0 when it has none to give)."""
        return 0.0


REGISTRY: dict[str, Boundary] = {}


def register(boundary: Boundary) -> Boundary:
    """Add a family to the registry under its ``name`` (returned, for use as a decorator on
    an instance)."""
    if not boundary.name or boundary.name in REGISTRY:
        raise ValueError(f"boundary name must be new and non-empty, got {boundary.name!r}")
    REGISTRY[boundary.name] = boundary
    return boundary


def boundary_names() -> tuple[str, ...]:
    """The registered names, in registration order."""
    return tuple(REGISTRY)


def get_boundary(name: str) -> Boundary:
    """The registered family called ``name``; ValueError naming the choices otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(f"boundary must be one of {', '.join(REGISTRY)}, got {name!r}"
                         ) from None
