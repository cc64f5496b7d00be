"""The sequential decision of a run configuration, as the service asks it.

:class:`DecisionRules` wraps the :class:`~hybridcert.sequential.SequentialQuestion`
that ``hybridcert certify --mode decision`` asks (same noise, targets, detector, alpha, cap
and region), so the service and the command build the same rule and read a finished rule the
same way; the service only adds the words of a moderation answer (``"unsafe"``, ``"safe"``,
``"abstain"``).  Fresh rules are copies of one prototype: a rule's boundaries are computed
once per configuration, not per request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hybridcert.blocks import CertifiedRegion, HybridNoise
from hybridcert.runs.config import ConfigError, RunConfig
from hybridcert.sequential.batched import fresh_copy

#: The decision words of the service.
UNSAFE, SAFE, ABSTAIN_WORD = "unsafe", "safe", "abstain"


@dataclass
class Reading:
    """What a finished rule says about one input.

    Attributes
    ----------
    decision : str
        ``"unsafe"`` (the flagged class), ``"safe"`` (another class) or ``"abstain"``.
    label : int
        The certified class; -1 when abstaining (-2: a certified benign detector with more
        than two classes).
    certified : list of bool
        Per target region, in configuration order: the decision provably holds there.
    region : CertifiedRegion
        Every budget where the decision provably holds (empty when abstaining).
    p_lower, p_upper : float or None
        The bounds the rule reports (valid at its stopping time).
    endings : list of dict
        Per target region: ``{"status", "decided_at"}`` (how it ended: ``"certified"``,
        ``"refuted"``, ``"gave_up"`` or ``"cap"``, and the draw).
    status, decided_at : str, int
        How the decision at the zero budget ended, and the draw.
    notes : list of str
        The result's notes (targets beyond the text's noisable positions).
    """

    decision: str
    label: int
    certified: list[bool]
    region: CertifiedRegion
    p_lower: float | None
    p_upper: float | None
    endings: list[dict]
    status: str
    decided_at: int
    notes: list[str]


class DecisionRules:
    """Fresh stopping rules for one configuration, and the reading of finished ones.

    Parameters
    ----------
    config : RunConfig
        Mode ``decision`` with ``targets``; ``rule``, ``threshold``, ``flagged_class``,
        ``alpha``, ``n`` (the per-input cap), ``max_tokens``, ``num_classes``.
    noise : HybridNoise
        The record's blocks (``build_noise(config, adapter)``).
    """

    def __init__(self, config: RunConfig, noise: HybridNoise):
        from hybridcert.runs.runner import detector_of
        from hybridcert.sequential.question import SequentialQuestion

        if config.mode != "decision":
            raise ConfigError(f"the service makes sequential decisions: mode must be "
                              f"'decision', got {config.mode!r}")
        self.config, self.noise = config, noise
        self.detector = detector_of(config)
        self.flagged_class = int(config.flagged_class)
        try:
            self.question = SequentialQuestion(
                noise, config.num_classes, config.alpha, config.n,
                targets=config.target_budgets(), detector=self.detector,
                max_tokens=config.max_tokens, boundary=config.boundary, price=config.price)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        self.budgets = self.question.budgets
        self._prototype = self.question.new_rule()

    def new(self):
        """A fresh rule (a copy of the prototype: the same state as ``new_rule()``, sharing
        its boundaries so that the driver updates the rules of many requests together)."""
        return fresh_copy(self._prototype)

    def targets(self) -> list[dict]:
        """The configured targets as JSON: ``{"l2": eps, "tokens": r}`` for one noised image
        block and one noised token block, else ``{"budget": {block: size}}``."""
        return [_target_json(self.noise, budget) for budget in self.budgets]

    def read(self, rule, record) -> Reading:
        """The decision, certified targets and region of a finished rule on a prepared
        record (``SequentialQuestion.result``, in the service's words)."""
        result = self.question.result(rule, self.noise.noised_positions(record))
        certified = [bool(t["certified"]) for t in result.targets]
        if self.detector is None:
            label = int(result.label)
            if label < 0:
                decision = ABSTAIN_WORD
            else:
                decision = UNSAFE if label == self.flagged_class else SAFE
        else:
            decision = {"flag": UNSAFE, "benign": SAFE}.get(result.decision, ABSTAIN_WORD)
            label = int(result.label)
        endings = [{"status": t["status"], "decided_at": int(t["decided_at"])}
                   for t in result.targets]
        return Reading(decision, label, certified, result.region, _number(result.p_lower),
                       _number(result.p_upper), endings, result.status,
                       int(result.decided_at), list(result.notes))


def _target_json(noise: HybridNoise, budget: dict) -> dict:
    continuous = [b.name for b in noise.noised_continuous]
    tokens = [b.name for b in noise.noised_tokens]
    if len(continuous) <= 1 and len(tokens) <= 1:
        return {"l2": float(budget.get(continuous[0], 0.0)) if continuous else 0.0,
                "tokens": int(budget.get(tokens[0], 0)) if tokens else 0}
    return {"budget": {k: (float(v) if k in continuous else int(v))
                       for k, v in budget.items() if v}}


def _number(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value
