"""The sequential decision rule of a run configuration, and what its outcome certifies.

:class:`DecisionRules` turns a validated :class:`~hybridcert.runs.config.RunConfig` (mode
``decision``) into fresh :class:`~hybridcert.smoothing.stopping.DecisionTest` rules: one
threshold ``p*`` per target region (``noise.threshold(budget, rule)``), level ``alpha``, cap
``n`` draws.  The same construction must drive ``certify --mode decision`` for the service
and the command to agree (see docs/SERVICE.md).

A finished rule is read back as a decision (``"unsafe"``, ``"safe"`` or ``"abstain"``), the
targets it certified and the certified region of its reported bound
(``noise.frontier([p], rule=...)``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np

from hybridcert.blocks import CertifiedRegion, HybridNoise
from hybridcert.runs.config import ConfigError, RunConfig

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
        The certified class, or -1.
    certified : list of bool
        Per target region, in configuration order: the decision provably holds there.
    region : CertifiedRegion
        Every budget where the decision provably holds (empty when abstaining).
    p_lower, p_upper : float or None
        The bounds the rule reports (valid at its stopping time).
    """

    decision: str
    label: int
    certified: list[bool]
    region: CertifiedRegion
    p_lower: float | None
    p_upper: float | None


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
        from hybridcert.certificate import Rule
        from hybridcert.smoothing.stopping import DecisionTest

        if config.mode != "decision":
            raise ConfigError(f"the service makes sequential decisions: mode must be "
                              f"'decision', got {config.mode!r}")
        self.config, self.noise = config, noise
        self.budgets = [noise.budget(b) for b in config.target_budgets()]
        self.flagged_class = int(config.flagged_class)
        if config.rule == "majority":
            self.flag_rule = self.benign_rule = None
            self.mode = "majority"
            self.thresholds = [noise.threshold(b) for b in self.budgets]
            prototype = DecisionTest(self.thresholds, config.alpha, config.n,
                                     config.num_classes, mode="majority")
        else:
            tau = float(config.threshold)
            self.mode = config.rule
            self.flag_rule = Rule.flag(tau) if config.rule in ("flag", "detector") else None
            self.benign_rule = Rule.benign(tau) if config.rule in ("benign", "detector") \
                else None
            _check_detector_thresholds(noise, self.flag_rule, self.benign_rule, tau)
            flag = [noise.threshold(b, self.flag_rule) for b in self.budgets] \
                if self.flag_rule else None
            benign = [noise.threshold(b, self.benign_rule) for b in self.budgets] \
                if self.benign_rule else None
            # A flag side that can never hold is +inf; a benign side that cannot is -inf.
            self.thresholds = flag if flag is not None else benign
            prototype = DecisionTest(
                self.thresholds, config.alpha, config.n, config.num_classes, mode=config.rule,
                target_class=self.flagged_class,
                benign_thresholds=benign if config.rule == "detector" else None)
        self._prototype = prototype

    def new(self):
        """A fresh rule (a copy of one prototype: building the rule's boundaries once)."""
        return copy.deepcopy(self._prototype)

    def targets(self) -> list[dict]:
        """The configured targets as JSON: ``{"l2": eps, "tokens": r}`` for the one-image,
        one-text case, else ``{"budget": {block: size}}``."""
        out = []
        for budget in self.budgets:
            out.append(_target_json(self.noise, budget))
        return out

    def read(self, rule, record) -> Reading:
        """The decision, certified targets and region of a finished rule on a prepared
        record."""
        from hybridcert.smoothing.stopping import ABOVE, BELOW

        positions = [self.noise.noised_positions(record)]
        max_tokens = self.config.max_tokens
        empty = CertifiedRegion.empty(self.noise)
        p_lower = _number(rule.p_lower)
        p_upper = _number(rule.p_upper)
        if self.mode == "majority":
            label = int(rule.label)
            if label < 0:
                return Reading(ABSTAIN_WORD, -1, [False] * len(self.budgets), empty, p_lower,
                               None)
            region = self.noise.frontier([rule.p_lower], max_tokens=max_tokens,
                                         noised_positions=positions)[0]
            decision = UNSAFE if label == self.flagged_class else SAFE
            return Reading(decision, label, [bool(c) for c in rule.certified], region,
                           p_lower, None)
        outcome = np.asarray(rule.outcome)
        flagged, benign = bool((outcome == ABOVE).any()), bool((outcome == BELOW).any())
        if flagged == benign:
            return Reading(ABSTAIN_WORD, -1, [False] * len(self.budgets), empty, p_lower,
                           p_upper)
        if flagged:
            region = self.noise.frontier([rule.p_lower], rule=self.flag_rule,
                                         max_tokens=max_tokens, noised_positions=positions)[0]
            return Reading(UNSAFE, self.flagged_class, [bool(o == ABOVE) for o in outcome],
                           region, p_lower, p_upper)
        region = self.noise.frontier([rule.p_upper], rule=self.benign_rule,
                                     max_tokens=max_tokens, noised_positions=positions)[0]
        other = 1 - self.flagged_class if self.config.num_classes == 2 else -2
        return Reading(SAFE, other, [bool(o == BELOW) for o in outcome], region, p_lower,
                       p_upper)


def _check_detector_thresholds(noise: HybridNoise, flag, benign, tau: float) -> None:
    """At no perturbation a detector certificate holds exactly when the bound is on the
    right side of tau; an engine that ignores the rule fails this and is refused."""
    zero = noise.budget({})
    for rule in (flag, benign):
        if rule is None:
            continue
        p_star = float(noise.threshold(zero, rule))
        if not math.isfinite(p_star) or abs(p_star - tau) > 1e-9 * max(tau, 1e-300) + 1e-15:
            raise ConfigError(f"--threshold: this build's certificate engine does not give "
                              f"{rule.kind} thresholds (p* at no perturbation is {p_star!r}, "
                              f"not tau = {tau!r}); use the majority rule")


def _target_json(noise: HybridNoise, budget: dict) -> dict:
    continuous = [b.name for b in noise.noised_continuous]
    tokens = [b.name for b in noise.noised_tokens]
    others = {k: v for k, v in budget.items() if v and k not in continuous[:1] + tokens[:1]}
    if len(continuous) <= 1 and len(tokens) <= 1 and not others:
        return {"l2": float(budget.get(continuous[0], 0.0)) if continuous else 0.0,
                "tokens": int(budget.get(tokens[0], 0)) if tokens else 0}
    return {"budget": {k: (float(v) if k in continuous else int(v)) for k, v in budget.items()}}


def _number(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value
