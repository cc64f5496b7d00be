"""What a certificate must guarantee: :class:`Rule` (docs/THEORY.md sections 3 and 4b).

Every certificate compares a Neyman–Pearson bound with a level:

========== ================================================ =============================
kind       holds at a perturbation iff                      ``p`` the rule reads
========== ================================================ =============================
majority   ``lower(pA) > upper(pB)`` (two classes: ``> 1/2``) lower confidence bound on pA
flag       ``lower(pc) >= tau``                             lower confidence bound on pc
benign     ``upper(pc) < tau``                              UPPER confidence bound on pc
========== ================================================ =============================

``flag`` certifies that a thresholded detector (flag class ``c`` iff
``P(f = c under noise) >= tau``) keeps flagging the perturbed input; ``benign`` that an
unflagged input cannot be pushed into a flag.  The benign side needs an *upper* confidence
bound on ``pc``: passing a lower bound there over-claims.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hybridcert._validation import check_probability

KINDS = ("majority", "flag", "benign")


@dataclass(frozen=True)
class Rule:
    """The condition a certificate guarantees.

    Parameters
    ----------
    kind : {"majority", "flag", "benign"}
    tau : float, optional
        Detection threshold in (0, 1), required by "flag" and "benign", absent for
        "majority".

    Examples
    --------
    >>> Rule.flag(4.6e-5)
    Rule(kind='flag', tau=4.6e-05)
    """

    kind: str = "majority"
    tau: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"rule kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.kind == "majority":
            if self.tau is not None:
                raise ValueError(f"the majority rule takes no tau, got tau={self.tau!r}")
            return
        if self.tau is None or isinstance(self.tau, bool):
            raise ValueError(f"the {self.kind} rule needs a threshold tau in (0, 1), "
                             f"got {self.tau!r}")
        try:
            tau = float(check_probability("tau", self.tau, open_low=True, open_high=True))
        except (TypeError, ValueError) as err:
            if "tau must lie" in str(err):
                raise
            raise ValueError(f"tau must be a number in (0, 1), got {self.tau!r}") from None
        object.__setattr__(self, "tau", tau)

    @classmethod
    def majority(cls) -> Rule:
        """``lower(pA) > upper(pB)``; ``pB = 1 - pA`` (two classes) unless given."""
        return cls("majority")

    @classmethod
    def flag(cls, tau: float) -> Rule:
        """``lower(pc) >= tau``: the detector still flags the perturbed input."""
        return cls("flag", tau)

    @classmethod
    def benign(cls, tau: float) -> Rule:
        """``upper(pc) < tau``: the perturbed input is still not flagged (``p`` must be an
        upper confidence bound)."""
        return cls("benign", tau)

    @property
    def level(self) -> float:
        """The level the bound is compared with: 1/2 (majority) or ``tau``."""
        return 0.5 if self.tau is None else float(self.tau)

    @property
    def reads_upper(self) -> bool:
        """True when ``p`` is an upper confidence bound (benign rule)."""
        return self.kind == "benign"

    def holds(self, low: np.ndarray, high: np.ndarray | None = None) -> np.ndarray:
        """Decide from a rounded-down ``lower`` (majority, flag) or rounded-up ``upper``
        (benign; and the runner-up's upper bound for majority with several classes)."""
        if self.kind == "majority":
            return low > (0.5 if high is None else high)
        if self.kind == "flag":
            return low >= self.level
        return high < self.level


#: The default rule: two-class (or several-class with ``p_upper``) majority vote.
MAJORITY = Rule()


def check_rule(rule) -> Rule:
    """``rule`` itself, or a one-line error if it is not a :class:`Rule`."""
    if rule is None:
        return MAJORITY
    if not isinstance(rule, Rule):
        raise ValueError(f"rule must be a hybridcert.certificate.Rule (e.g. Rule.flag(tau)), "
                         f"got {rule!r}")
    return rule
