"""Sequential certification keeps the fixed-n guarantee (same closed-form checks)."""

import numpy as np
import pytest
import torch
from scipy.stats import binom, norm

from hybridcert import Gaussian, Substitution
from hybridcert.smoothing import ABSTAIN, SmoothedClassifier, Vocabulary
from hybridcert.smoothing.sequential import certify_sequential, schedule, threshold

RUNS, ALPHA = 300, 0.1
ALLOWED = int(binom.ppf(1 - 1e-6, RUNS, ALPHA))   # see test_validity.py for the argument
SIGMA = 0.5
W = torch.tensor([0.6, 0.8])


def linear_classifier():
    return SmoothedClassifier(lambda b: (b["image"] @ W - 1.0 > 0).long(),
                              {"image": Gaussian(SIGMA)}, 2)


def test_schedule_and_threshold():
    assert schedule(100, 1000) == [100, 200, 400, 800, 1000]
    assert schedule(100, 100) == [100]
    with pytest.raises(ValueError, match="n_min"):
        schedule(0, 10)
    with pytest.raises(ValueError, match="growth"):
        schedule(1, 10, growth=1.0)
    # Gaussian only: p* = Phi(eps / sigma).
    assert threshold(Gaussian(0.5).likelihood_ratio(0.3)) == pytest.approx(norm.cdf(0.6),
                                                                           abs=1e-12)
    # Substitution, r = 1, eps = 0: p* = 1/2 + (a - beta).
    a, v = 0.2, 256
    assert threshold(Substitution(a, v).likelihood_ratio(1)) == pytest.approx(
        0.5 + a - (1 - a) / (v - 1), abs=1e-11)


@pytest.mark.parametrize("margin", [0.35, 0.6])
def test_decision_mode_is_valid(margin):
    """Target eps = 0.25: truly certified iff the true margin exceeds 0.25.  A run fails
    when it claims the target although the true margin does not reach it, or returns the
    wrong class."""
    clf = linear_classifier()
    record = {"image": (margin + 1.0) * W}
    failures = certified = 0
    queries = []
    for seed in range(RUNS):
        result = certify_sequential(clf, record, 32, ALPHA, seed=seed, targets=[(0.25, 0)],
                                    n_min=50, n_max=3200)
        queries.append(result.queries)
        if result.certified_targets[0]:
            certified += 1
            failures += result.label != 1 or margin <= 0.25
    assert failures <= ALLOWED
    assert certified >= RUNS // 2
    if margin == 0.6:         # an easy decision stops long before the cap
        assert np.median(queries) < 3200 / 4


def test_decision_mode_rarely_claims_an_unreachable_target():
    """True margin 0.2 < target 0.25: every certified claim is a failure."""
    clf = linear_classifier()
    record = {"image": (0.2 + 1.0) * W}
    claims = sum(certify_sequential(clf, record, 32, ALPHA, seed=s, targets=[(0.25, 0)],
                                    n_min=50, n_max=3200).certified_targets[0] for s in range(RUNS))
    assert claims <= ALLOWED


def test_radius_mode_is_valid_and_saves_queries():
    clf = linear_classifier()
    margin = 0.5
    record = {"image": (margin + 1.0) * W}
    failures = 0
    queries = []
    for seed in range(RUNS // 2):
        result = certify_sequential(clf, record, 32, ALPHA, seed=seed, tolerance=0.1,
                                    n_min=50, n_max=6400)
        queries.append(result.queries)
        if result.label != ABSTAIN:
            failures += result.label != 1 or result.l2_radius[0] > margin
    assert failures <= int(binom.ppf(1 - 1e-6, RUNS // 2, ALPHA))
    assert np.median(queries) < 6400


def test_hybrid_targets_use_the_joint_threshold():
    vocab = Vocabulary(torch.arange(5))
    clf = SmoothedClassifier(lambda b: torch.ones(len(b["text"]), dtype=torch.long),
                             {"image": Gaussian(SIGMA), "text": Substitution(0.3, 5)}, 2,
                             {"text": vocab})
    from hybridcert.smoothing import TokenBlock

    record = {"image": torch.zeros(2), "text": TokenBlock(torch.tensor([0, 1, 2]))}
    result = certify_sequential(clf, record, 16, 0.01, targets=[(0.25, 1), (0.5, 2)],
                                n_min=100, n_max=20000)
    assert result.label == 1 and all(result.certified_targets)
    assert result.queries < 20000 + 16


def _constant_radius(n, level):
    """Cohen radius of a classifier that is always right: count = n, so the Clopper–Pearson
    lower bound is level^(1/n) in closed form."""
    return SIGMA * norm.ppf(level ** (1 / n))


@pytest.mark.parametrize("eps", [0.9, 1.3, 1.9])
def test_decision_mode_stops_once_the_cap_could_not_clear_the_target(eps):
    """Always-correct base model, so p_high = 1 at every look and only the cap's bound
    level^(1/n_max) says whether eps is reachable: the stopping look and the answer follow
    from closed forms — certified at the first look whose radius exceeds eps, or, for an eps
    beyond the cap's radius, given up at the very first look."""
    clf = SmoothedClassifier(lambda b: torch.ones(len(b["image"]), dtype=torch.long),
                             {"image": Gaussian(SIGMA)}, 2)
    looks = schedule(100, 51_200)
    level = 0.01 / len(looks)
    reachable = [n for n in looks if _constant_radius(n, level) > eps]
    result = certify_sequential(clf, {"image": torch.zeros(2)}, 16, 0.01, targets=[(eps, 0)],
                                n_min=100, n_max=51_200)
    assert result.certified_targets == [bool(reachable)]
    assert result.queries == 16 + (reachable[0] if reachable else looks[0])
    if eps == 1.3:
        assert looks[0] < reachable[0] < looks[-1]      # neither first look nor cap


@pytest.mark.parametrize("tolerance, max_radius", [(0.3, None), (0.1, None), (0.05, 1.2)])
def test_radius_mode_stops_where_the_cap_could_add_at_most_tolerance(tolerance, max_radius):
    """Always-correct base model: the stopping look follows from closed forms alone —
    the first look n_k with min(R(n_max), cap) - min(R(n_k), cap) <= tolerance."""
    clf = SmoothedClassifier(lambda b: torch.ones(len(b["image"]), dtype=torch.long),
                             {"image": Gaussian(SIGMA)}, 2)
    looks = schedule(100, 51_200)
    level = 0.01 / len(looks)
    cap = np.inf if max_radius is None else max_radius
    best = min(_constant_radius(looks[-1], level), cap)
    expected = next(n for n in looks if best - min(_constant_radius(n, level), cap) <= tolerance)
    result = certify_sequential(clf, {"image": torch.zeros(2)}, 16, 0.01, tolerance=tolerance,
                                n_min=100, n_max=51_200, max_radius=max_radius)
    assert result.queries == 16 + expected
    assert expected < looks[-1]              # the case is not trivially at the cap
    assert result.l2_radius[0] == pytest.approx(_constant_radius(expected, level), abs=1e-9)


def test_radius_mode_arguments_are_checked():
    clf = linear_classifier()
    with pytest.raises(ValueError, match="tolerance"):
        certify_sequential(clf, {"image": W}, 16, 0.01, tolerance=0)
    with pytest.raises(ValueError, match="tolerance"):
        certify_sequential(clf, {"image": W}, 16, 0.01, tolerance=float("inf"))
    with pytest.raises(ValueError, match="max_radius"):
        certify_sequential(clf, {"image": W}, 16, 0.01, max_radius=-1.0)
