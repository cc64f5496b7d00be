"""One array update per forward batch for the decision rules of many jobs.

The driver hands every job of a batch its labels.  Driving each rule alone
(:meth:`DecisionTest.observe <hybridcert.sequential.rules.DecisionTest.observe>`) costs one
Python call and some twenty small array operations per job and batch.  Most of those calls
settle nothing: no open threshold's count reaches its certification boundary and none falls
to its give-up boundary at a schedule point within the new draws, and no price look falls
among them.  :func:`observe_many` groups the rules that share their boundaries (equal
``batch_key()``, as the copies of one prototype have: :func:`fresh_copy`), asks the rule's
class which of them settle nothing (``quiet``: one comparison for every label of the group,
laid end to end), and for those only moves the counts on (``move_on``: the state ``observe``
would have left).  A rule where something settles is driven by its own ``observe``, on the
same labels.  So every rule ends in exactly the state its own ``observe`` gives it
(``tests/sequential/test_batched.py`` compares both on many seeded streams).  The rule
classes own that logic (:class:`~hybridcert.sequential.rules.DecisionTest`,
:class:`~hybridcert.sequential.rules.BoundedDecision`); this module only groups and
dispatches, and drives any other rule alone.
"""

from __future__ import annotations

import copy
from collections import defaultdict

import numpy as np


def fresh_copy(prototype):
    """A fresh rule: a deep copy of an unused ``prototype`` that shares its read-only parts
    (the boundaries: ``shared()``), so that the copies are updated together by
    :func:`observe_many`.  A rule set (``.rules``) shares those of each of its rules."""
    memo: dict = {}
    for part in _shared(prototype):
        memo[id(part)] = part
    return copy.deepcopy(prototype, memo)


def _shared(rule) -> list:
    if hasattr(rule, "shared"):
        return list(rule.shared())
    inner = getattr(rule, "rules", None)
    if isinstance(inner, dict):
        return [part for r in inner.values() for part in _shared(r)]
    return []


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
        kind = type(rules[members[0]])
        quiet = kind.quiet([rules[i] for i in members], [parts[i] for i in members])
        for i, calm in zip(members, quiet, strict=True):
            if calm:
                rules[i].move_on(parts[i])
            else:
                alone.append(i)
    for i in alone:
        try:
            rules[i].observe(parts[i])
        except Exception as err:  # noqa: BLE001 - the rule refused its labels
            errors[i] = err
    return errors


def _key(rule, part) -> tuple | None:
    """Rules with equal keys are checked together; None: drive this rule alone."""
    if rule.done or not isinstance(part, np.ndarray) or part.ndim != 1 or not part.size \
            or part.dtype != np.int64 or not hasattr(rule, "batch_key"):
        return None
    key = rule.batch_key()
    return None if key is None else (type(rule), key)


def next_draws_many(rules: list) -> list[int]:
    """``[rule.next_draws() for rule in rules]``, computed together (``next_draws_many`` of
    the rule's class) for the rules that share their boundaries (equal ``batch_key()``)."""
    out = [0] * len(rules)
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, rule in enumerate(rules):
        key = None if rule.done or not hasattr(type(rule), "next_draws_many") \
            or not hasattr(rule, "batch_key") else rule.batch_key()
        if key is None:
            out[i] = int(rule.next_draws())
        else:
            groups[(type(rule), key)].append(i)
    for members in groups.values():
        if len(members) == 1:
            out[members[0]] = int(rules[members[0]].next_draws())
            continue
        values = type(rules[members[0]]).next_draws_many([rules[i] for i in members])
        for i, value in zip(members, values, strict=True):
            out[i] = int(value)
    return out
