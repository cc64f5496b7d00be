"""One array update per forward batch for the decision rules of many jobs.

The driver hands every job of a batch its labels.  Driving each rule alone
(:meth:`DecisionTest.observe <hybridcert.sequential.rules.DecisionTest.observe>`) costs one
Python call and some twenty small array operations per job and batch.  Most of those calls
settle nothing: no open threshold's count reaches its certification boundary and none falls
to its give-up boundary at a schedule point within the new draws, and no price look falls
among them.  :func:`observe_many` checks that for all the rules of one kind at once (rules
sharing their boundaries, as the copies of one prototype do), on the batch's labels laid end
to end (per job: its running counts, per draw the boundary at that draw, one comparison for
every row of the batch), and for the rules where nothing settles it only moves the counts on:
the state ``observe`` would have left (counts, draws used and received, looks).  A rule where
something settles is driven by its own ``observe``, on the same labels.  So every rule ends in
exactly the state its own ``observe`` gives it (``tests/sequential/test_batched.py`` compares
both on many seeded streams).
"""

from __future__ import annotations

import copy
from collections import defaultdict

import numpy as np

from hybridcert.sequential.rules import BoundedDecision, DecisionTest


def fresh_copy(prototype):
    """A fresh rule: a deep copy of an unused ``prototype`` that shares its boundaries (the
    read-only per-arm plans), so that the copies are updated together by
    :func:`observe_many`."""
    memo: dict = {}
    for test in _tests(prototype):
        for plan in test._plans:
            memo[id(plan)] = plan
    return copy.deepcopy(prototype, memo)


def observe_many(rules: list, parts: list[np.ndarray]) -> list[BaseException | None]:
    """``rule.observe(part)`` for each pair, batched where the rules allow it.

    Returns
    -------
    list
        Per rule, the error its ``observe`` raised (None: none).
    """
    errors: list[BaseException | None] = [None] * len(rules)
    groups: dict[tuple, list[int]] = defaultdict(list)
    alone = []
    for i, (rule, part) in enumerate(zip(rules, parts, strict=True)):
        key = _key(rule, part)
        if key is None:
            alone.append(i)
        else:
            groups[key].append(i)
    for members in groups.values():
        if len(members) == 1:
            alone.extend(members)
            continue
        quiet = _quiet([rules[i] for i in members], [parts[i] for i in members])
        for i, calm in zip(members, quiet, strict=True):
            if calm:
                _move_on(rules[i], parts[i])
            else:
                alone.append(i)
    for i in alone:
        try:
            rules[i].observe(parts[i])
        except Exception as err:  # noqa: BLE001 - the rule refused its labels
            errors[i] = err
    return errors


def _tests(rule) -> list[DecisionTest]:
    if type(rule) is DecisionTest:
        return [rule]
    if type(rule) is BoundedDecision:
        return [rule.targets_test, rule.base_test]
    return []


def _test_key(test: DecisionTest) -> tuple:
    return (tuple(id(plan) for plan in test._plans),
            tuple((cls, negate) for cls, negate, _ in test._arm_spec),
            test.num_classes, test.n_max, test._cap, test.price)


def _key(rule, part) -> tuple | None:
    """Rules with equal keys are checked together; None: drive this rule alone."""
    if rule.done or not isinstance(part, np.ndarray) or part.ndim != 1 or not part.size \
            or part.dtype != np.int64:
        return None
    if type(rule) is DecisionTest:
        return ("test", _test_key(rule))
    if type(rule) is BoundedDecision and not rule.targets_test.done:
        base = rule.base_test
        return ("bounded", rule._cap, _test_key(rule.targets_test),
                "done" if base.done else _test_key(base))
    return None


def _quiet(rules: list, parts: list[np.ndarray]) -> np.ndarray:
    """Per rule: True when its ``observe`` on its part would settle nothing."""
    tests = [_tests(rule) for rule in rules]
    quiet = np.ones(len(rules), dtype=bool)
    for level in range(len(tests[0])):
        members = [t[level] for t in tests]
        if members[0].done:                 # a done base test only counts what it receives
            continue
        quiet &= _quiet_tests(members, parts)
    return quiet


def _quiet_tests(tests: list[DecisionTest], parts: list[np.ndarray]) -> np.ndarray:
    """Per test (all of one key, none done): no crossing, no give-up, no price look and no
    cap within its part."""
    first = tests[0]
    sizes = np.fromiter((p.size for p in parts), dtype=np.int64, count=len(parts))
    labels = np.concatenate(parts)
    if labels.min() < 0 or labels.max() >= first.num_classes:
        return np.zeros(len(tests), dtype=bool)     # let observe say what is wrong
    seg = np.repeat(np.arange(len(tests)), sizes)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    n0 = np.fromiter((t.queries for t in tests), dtype=np.int64, count=len(tests))
    draws = n0[seg] + 1 + (np.arange(labels.size) - starts[seg])
    quiet = sizes <= first._cap - n0
    if first.price is not None and first._price_looks.size:
        looks = first._price_looks
        at = np.searchsorted(looks, n0 + 1)
        nxt = np.where(at < looks.size, looks[np.minimum(at, looks.size - 1)], np.iinfo(
            np.int64).max)
        quiet &= nxt > n0 + sizes
    draws = np.minimum(draws, first.n_max)          # rows past the cap: not quiet anyway
    hit = np.zeros(labels.size, dtype=bool)
    class_cum = {}
    for arm, ((cls, negate, _), plan) in enumerate(zip(first._arm_spec, first._plans,
                                                       strict=True)):
        if cls not in class_cum:
            mine = (labels == cls).astype(np.int64)
            running = np.cumsum(mine)
            before = running[starts] - mine[starts]
            counts = np.fromiter((t.counts[cls] for t in tests), dtype=np.int64,
                                 count=len(tests))
            class_cum[cls] = counts[seg] + running - before[seg]
        cum = draws - class_cum[cls] if negate else class_cum[cls]
        open_ = np.stack([~t._closed[arm] & (t.decided_at < 0) for t in tests])   # (m, n_t)
        at = np.searchsorted(plan.sched, draws, side="left")
        rows_open = open_[seg].T                                                    # (n_t, R)
        cert = np.where(rows_open, plan.cert[:, at], np.iinfo(np.int64).max)
        hit |= cum >= cert.min(axis=0)
        point = plan.sched[at] == draws
        give = np.where(rows_open, plan.give[:, at], np.iinfo(np.int64).min)
        hit |= point & (cum <= give.max(axis=0))
    quiet &= np.bincount(seg, weights=hit, minlength=len(tests)) == 0
    return quiet


def _move_on(rule, part: np.ndarray) -> None:
    """The state ``rule.observe(part)`` leaves when it settles nothing."""
    size = int(part.size)
    counts = np.bincount(part, minlength=rule.num_classes)
    for test in _tests(rule):
        test.received += size
        if test.done:
            continue
        test.looks += 1
        test.queries += size
        test.counts = test.counts + counts
        for arm, (cls, negate, _) in enumerate(test._arm_spec):
            test._arm_count[arm] = test.queries - test.counts[cls] if negate \
                else test.counts[cls]
    if type(rule) is BoundedDecision:
        rule.received += size
        rule.looks += 1
        rule.queries = rule.targets_test.queries
        rule.counts = rule.targets_test.counts.copy()
