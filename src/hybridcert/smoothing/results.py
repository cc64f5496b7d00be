"""The one result type of certification — fixed n and sequential, majority vote and
detector — and the one row format that the store, the exports and the reports use."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from hybridcert.blocks import CertifiedRegion
from hybridcert.sequential.rules import ABSTAIN, CAP, CERTIFIED


@dataclass
class Certification:
    """What certification found for one input.

    Attributes
    ----------
    label : int
        Majority vote: the class, or ``ABSTAIN`` (-1).  Detector: the flagged class when the
        flag is certified, the other class (two classes; ``NOT_FLAGGED`` with more) when the
        benign side is certified, else ``ABSTAIN``.
    p_lower : float or None
        Lower confidence bound on the top class (majority) or the flagged class (detector).
    p_upper : float or None
        Majority vote with more than two classes: upper bound on every other class (their
        maximum).  Detector: upper bound on the flagged class.  None: not computed.
    region : CertifiedRegion
        Where the answer provably holds (empty when abstaining).
    counts : ndarray
        Class counts of the estimation draws.
    queries : int
        Base-model evaluations spent on this input (selection included).
    looks : int
        Times the sequential rule looked at the data (1 for fixed n).
    targets : list of dict
        Decision mode: ``{"budget": {block: size}, "certified": bool, "status": str,
        "decided_at": int}`` per target region (``status`` as below).
    time_s : float
        Seconds spent on this input (its share of the shared forward passes).
    mode, rule : str
        ``fixed``, ``decision`` or ``radius``; ``majority``, ``flag``, ``benign`` or
        ``detector`` (both sides).
    decision : str or None
        Detector: ``"flag"``, ``"benign"`` or ``"abstain"``.
    status : str
        How the answer at the zero budget (the class, or the detector's decision) ended:
        ``"certified"``; ``"refuted"`` (false at the stopping rule's futility level: the
        upper confidence bound on the rate at that level fell below the threshold ``p*``
        itself — a reason, not a claim at alpha); ``"gave_up"`` (stopped open by a cost rule:
        the price, or every target settled); ``"cap"`` (not certifiable within the draw cap,
        or the cap — fixed n's sample — reached).  Default: ``"certified"`` unless
        abstaining, then ``"cap"`` (fixed n).
    notes : list of str
        What the answer's reader must know about it: each target asking more token changes
        than the record has noisable positions (:func:`coverage_notes`).
    decided_at : int
        The draw at which that happened (default: ``queries``).
    """

    label: int
    p_lower: float | None
    p_upper: float | None
    region: CertifiedRegion
    counts: np.ndarray
    queries: int
    looks: int = 1
    targets: list[dict] = field(default_factory=list)
    time_s: float = 0.0
    mode: str = "fixed"
    rule: str = "majority"
    decision: str | None = None
    status: str | None = None
    decided_at: int | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self):
        if self.status is None:
            self.status = CERTIFIED if self.label != ABSTAIN else CAP
        if self.decided_at is None:
            self.decided_at = int(self.queries)

    # -- views ----------------------------------------------------------------------------
    @property
    def max_tokens(self) -> int:
        """One noised token block: largest certified r (-1 when nothing is certified)."""
        return self.region.max_tokens

    @property
    def l2_radius(self) -> list[float]:
        """One token block and one Gaussian block: ``[eps*(0), ..., eps*(r_max)]``."""
        return self.region.frontier() if self.region.certified else []

    @property
    def radius(self) -> float:
        """L2 radius at zero token changes (0 when abstaining)."""
        return self.l2_radius[0] if self.l2_radius else 0.0

    @property
    def certified_targets(self) -> list[bool]:
        """Decision mode: whether each target region is certified."""
        return [bool(t["certified"]) for t in self.targets]

    def frontier(self) -> list[dict]:
        """The certified region as rows (see :meth:`CertifiedRegion.rows`)."""
        return self.region.rows()

    def to_row(self) -> dict:
        """JSON-ready fields of the result (the store, exports and reports use only this)."""
        one_block = len(self.region.token_blocks) <= 1
        return {
            "predict": int(self.label),
            "decision": self.decision,
            "p_lower": _number(self.p_lower),
            "p_upper": _number(self.p_upper),
            "radius": self.region.l2_radius(0 if one_block else {}) if self.region.certified
            else 0.0,
            "max_tokens": self.region.max_tokens if one_block
            else self.region.max_tokens_by_block,
            "frontier": self.region.rows(),
            "targets": self.targets,
            "counts": [int(c) for c in np.asarray(self.counts).ravel()],
            "queries": int(self.queries),
            "status": self.status,
            "decided_at": int(self.decided_at),
            "looks": int(self.looks),
            "time": round(float(self.time_s), 6),
            "mode": self.mode,
            "rule": self.rule,
            **({"notes": list(self.notes)} if self.notes else {}),
        }

    def attach_targets(self, targets: list[dict],
                       noised_positions: Mapping[str, int] | None) -> None:
        """Set the per-target answers and the notes of the targets beyond the record's
        noisable positions (the one place both are attached: fixed n, sequential, service)."""
        self.targets = targets
        self.notes = coverage_notes([t["budget"] for t in targets], noised_positions or {})


@dataclass
class Prediction:
    label: int
    counts: np.ndarray
    p_value: float


def coverage_notes(budgets: Sequence[Mapping[str, float]],
                   noised_positions: Mapping[str, int]) -> list[str]:
    """One line per target and token block whose budget exceeds the record's noisable
    positions there: the target is certified, but no more positions than these can change,
    so it covers changes of those only (none, for a text without a noisable position).

    Parameters
    ----------
    budgets : list of {block: size}
        The targets, in order (numbered from 1).
    noised_positions : {token block: int}
        How many positions the record noises per token block
        (:meth:`~hybridcert.blocks.HybridNoise.noised_positions`).
    """
    notes = []
    for number, budget in enumerate(budgets, start=1):
        for block, have in noised_positions.items():
            asks = budget.get(block, 0)
            if asks > have:
                covers = (f"covers changes of those {have} only" if have
                          else "covers no change there")
                notes.append(f"{block}: target {number} asks {asks:g} token change(s); the "
                             f"{block} has {have} noisable position(s), so it {covers}")
    return notes


def result_row(idx: int, input_id, label, result: Certification) -> dict:
    """One export row: ``idx``, ``id``, ``label`` (None when unlabelled), the result's
    fields and ``correct`` (None when unlabelled)."""
    row = {"idx": int(idx), "id": str(input_id), "label": label}
    row.update(result.to_row())
    row["correct"] = None if label is None else int(row["predict"] == label)
    return row


def _number(value):
    if value is None:
        return None
    value = float(value)
    if math.isnan(value):
        return None
    return value
