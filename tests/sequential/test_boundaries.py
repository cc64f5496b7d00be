"""Boundary families by name: adding one is one class plus one registry line, and every rule,
the question and the run config take it.

The toy family here (Hoeffding's bound at geometric looks, a union bound over the looks) is
checked against its closed form and, exactly, against the error it must keep: the per-draw
boundary's crossing probability at p = t, summed by dynamic programming over the counts.
"""

import math

import numpy as np
import pytest
import torch

from hybridcert import Gaussian
from hybridcert.runs.config import ConfigError, RunConfig
from hybridcert.sequential import SequentialQuestion, certify_sequential
from hybridcert.sequential.boundaries import RADIUS, REGISTRY, Boundary, get_boundary, register
from hybridcert.sequential.bounds import look_points
from hybridcert.sequential.rules import ABSTAIN, DecisionTest
from hybridcert.smoothing import SmoothedClassifier
from tests.sequential.test_rules import crossing_probability, drive


class Hoeffding(Boundary):
    """Certify ``p > t`` at look n (of K) once ``k/n - sqrt(log(K/level) / (2n)) > t``;
    decisions only (it gives no bound between thresholds)."""

    name = "hoeffding"

    def check(self, alpha, mode):
        if mode == RADIUS:
            raise ValueError("boundary hoeffding is for the decision mode")

    def crossing_counts(self, t, reachable, sched, n_max, level, levels, mixture):
        width = np.sqrt(math.log(len(sched) / level) / (2 * sched))
        k = np.floor((t[:, None] + width[None, :]) * sched[None, :]).astype(np.int64) + 1
        return np.where(reachable[:, None], k, n_max + 1)

    def earliest_claim(self, floor, alpha, n_max, mixture, look_growth):
        return 1                      # no earlier than draw 1: conservative for the choice


@pytest.fixture
def hoeffding():
    register(Hoeffding())             # the one registry line
    yield REGISTRY["hoeffding"]
    del REGISTRY["hoeffding"]


def test_a_new_family_decides_by_its_own_closed_form(hoeffding):
    t, alpha, n_max = 0.7, 0.01, 2000
    rule = drive(DecisionTest([t], alpha, n_max, boundary="hoeffding"),
                 np.ones(n_max, dtype=np.int64))
    looks = look_points(n_max, hoeffding.look_growth)
    width = np.sqrt(np.log(len(looks) / rule.level) / (2 * looks))
    first = int(looks[np.argmax(1 - width > t)])           # all successes: k = n
    assert rule.label == 1 and rule.certified[0] and rule.queries == first
    # its error at p = t, exactly: each class's boundary crosses with probability <= level
    for arm in (0, 1):
        assert crossing_probability(rule.per_draw_boundary(0, arm), t) <= rule.level
    # and an input at the threshold is not certified (no claim: the run gives up)
    rng = np.random.default_rng(0)
    wrong = sum(bool(drive(DecisionTest([t], alpha, n_max, boundary="hoeffding"),
                           (rng.random(n_max) < t).astype(np.int64)).certified[0])
                for _ in range(50))
    assert wrong <= 2


def test_the_question_and_the_config_take_a_registered_family(hoeffding):
    clf = SmoothedClassifier(lambda b: (b["image"].sum(dim=1) > -10).long(),
                             {"image": Gaussian(0.5)}, 2)
    result = certify_sequential(clf, {"image": torch.zeros(2)}, 0.01, targets=[(0.1, 0)],
                                boundary="hoeffding", n_max=5000)
    assert result.label == 1 and result.targets[0]["certified"]
    question = SequentialQuestion(clf.noise, 2, 0.01, 5000, targets=[(0.1, 0)],
                                  boundary="hoeffding")
    assert question.new_rule().targets_test.boundary == "hoeffding"
    with pytest.raises(ValueError, match="hoeffding is for the decision mode"):
        SequentialQuestion(clf.noise, 2, 0.01, 5000, boundary="hoeffding")
    base = {"model": "tests.runs.toy_model:factory", "sigma": 0.25, "keep_prob": 0.3}
    RunConfig.from_dict({**base, "mode": "decision", "targets": [[0.1, 0]],
                         "boundary": "hoeffding"})
    with pytest.raises(ConfigError, match="hoeffding is for the decision mode"):
        RunConfig.from_dict({**base, "mode": "radius", "boundary": "hoeffding"})


def test_unknown_and_duplicate_names_are_refused():
    with pytest.raises(ValueError, match="boundary must be one of mixture, looks, spending"):
        get_boundary("stitched")
    with pytest.raises(ValueError, match="must be new"):
        register(get_boundary("looks"))
    assert DecisionTest([0.7], 0.01, 100).label == ABSTAIN


def test_every_rule_is_a_stopping_rule():
    """The drivers need only the StoppingRule protocol: the rules and the baselines have it."""
    from hybridcert.sequential.baselines import Adaptive, Betting, BonferroniLooks, FixedN
    from hybridcert.sequential.rules import BoundedDecision, RadiusTest, StoppingRule

    rules = [DecisionTest([0.7], 0.01, 100), BoundedDecision(0.5, [0.7], 0.01, 100),
             RadiusTest(lambda p: np.zeros(1), 0.01, 100, 0.1),
             BonferroniLooks(0.01, 100, [0.7]), FixedN([0.7], 0.01, 100),
             Betting(0.7, 0.005, 100, 1), Adaptive(0.7, 0.01, 100, 1)]
    for rule in rules:
        assert isinstance(rule, StoppingRule)
        assert rule.next_draws() >= 1 and not rule.done
    assert not isinstance(object(), StoppingRule)
