"""The rules of many jobs updated together (``observe_many``) end in exactly the state each
rule's own ``observe`` gives it, on many seeded label streams cut at random, for every kind
of decision rule the driver batches (majority, flag, benign and detector sides; mixture,
looks and spending boundaries; a price; BoundedDecision), and the shortcut is taken; and
their ``next_draws`` computed together (``next_draws_many``) are each rule's own."""

import numpy as np
import pytest

from hybridcert.sequential.batched import fresh_copy, next_draws_many, observe_many
from hybridcert.sequential.rules import BoundedDecision, DecisionTest

THRESHOLDS = [0.5, 0.6, 0.7, 0.8]
RULES = {
    "majority-mixture": lambda: DecisionTest(THRESHOLDS, 0.01, 3000),
    "majority-3-classes": lambda: DecisionTest(THRESHOLDS, 0.01, 3000, num_classes=3),
    "majority-looks-price": lambda: DecisionTest(THRESHOLDS, 0.01, 3000, boundary="looks",
                                                 price=200),
    "majority-spending": lambda: DecisionTest(THRESHOLDS[1:], 0.01, 3000,
                                              boundary="spending"),
    "flag": lambda: DecisionTest([0.3, 0.5, 0.7], 0.01, 3000, mode="flag", target_class=1),
    "benign": lambda: DecisionTest([0.3, 0.5, 0.7], 0.01, 3000, mode="benign",
                                   target_class=1),
    "detector-price": lambda: DecisionTest([0.3, 0.5, 0.7], 0.01, 3000, mode="detector",
                                           target_class=1, price=150),
    "bounded": lambda: BoundedDecision(0.5, THRESHOLDS[1:], 0.01, 3000),
    "bounded-detector": lambda: BoundedDecision(0.4, [0.5, 0.6], 0.01, 3000, mode="detector",
                                                target_class=1, base_benign=0.4,
                                                benign_thresholds=[0.3, 0.2]),
}
STATE = ("done", "label", "queries", "received", "looks", "p_lower", "p_upper")
ARRAYS = ("counts", "certified", "decided_at", "outcome")


def _state(rule) -> dict:
    out = {k: getattr(rule, k) for k in STATE}
    out.update({k: np.asarray(getattr(rule, k)).tolist() for k in ARRAYS})
    out["status"] = list(rule.status)
    for name in ("targets_test", "base_test"):
        if hasattr(rule, name):
            out[name] = _state(getattr(rule, name))
    if hasattr(rule, "_arm_count"):
        out["arms"] = rule._arm_count.tolist()
        out["closed"] = rule._closed.tolist()
    return out


@pytest.mark.parametrize("kind", sorted(RULES))
def test_rules_updated_together_end_as_each_alone(kind, monkeypatch):
    moved = []
    prototype = RULES[kind]()
    real = type(prototype).move_on
    monkeypatch.setattr(type(prototype), "move_on", lambda rule, part, *rest: (
        moved.append(1), real(rule, part, *rest)))
    classes = prototype.num_classes
    rng = np.random.default_rng(sum(map(ord, kind)))
    jobs = 40
    p = rng.uniform(0.05, 0.95, jobs)          # each job's chance of class 1
    streams = []
    for j in range(jobs):
        other = rng.integers(0, classes, 3000)
        other[other == 1] = 0
        streams.append(np.where(rng.random(3000) < p[j], 1, other).astype(np.int64))
    together = [fresh_copy(prototype) for _ in range(jobs)]
    alone = [RULES[kind]() for _ in range(jobs)]
    drawn = np.zeros(jobs, dtype=np.int64)
    while not all(r.done for r in together):
        running = [j for j in range(jobs) if not together[j].done]
        needs = [together[j].next_draws() for j in running]
        assert next_draws_many([together[j] for j in running]) == needs, kind
        # a narrow window: most answers lie beyond it and are asked of each rule
        narrow = type(prototype).next_draws_many([together[j] for j in running], window=2)
        assert narrow.tolist() == needs, kind
        parts = []
        for j in running:
            take = int(rng.integers(1, 2 * together[j].next_draws() + 2))
            parts.append(streams[j][drawn[j]: drawn[j] + take])
            drawn[j] += take
        errors = observe_many([together[j] for j in running], parts)
        assert errors == [None] * len(running)
        for j, part in zip(running, parts, strict=True):
            alone[j].observe(part)
            assert _state(together[j]) == _state(alone[j]), (kind, j)
    assert moved, "the batched update was never taken"


def test_an_error_is_the_rule_s_own():
    rules = [fresh_copy(RULES["majority-mixture"]()) for _ in range(3)]
    parts = [np.array([0, 1, 0]), np.array([0, 7, 1]), np.array([1, 1, 1])]
    errors = observe_many(rules, parts)
    assert errors[0] is None and errors[2] is None
    assert isinstance(errors[1], ValueError) and "labels must lie" in str(errors[1])
    assert rules[0].queries == 3 and rules[2].queries == 3 and rules[1].queries == 0
