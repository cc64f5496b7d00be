"""The smoothed detector (issue 13.2): class 1 is flagged iff P(f = 1) >= tau.  With base
classifiers whose smoothed probability is known in closed form (the image+text rule of
test_validity.py), over many seeded runs a certified flag region (resp. benign region) must
contain no point where the true smoothed detector stops flagging (resp. flags), except with
probability alpha — at tau in {1e-3, 0.05, 0.3}, on both sides.  A point estimate in place of
the confidence bound must fail the same check."""

import pytest
import torch
from scipy.optimize import brentq
from scipy.stats import binom

from hybridcert import Gaussian, Substitution
from hybridcert.smoothing import ABSTAIN, Detector, SmoothedClassifier, TokenBlock, Vocabulary
from tests.smoothing.test_validity import KEEP, LENGTH, VOCAB, W, rule, smoothed_p1

RUNS, ALPHA = 200, 0.1
ALLOWED = int(binom.ppf(1 - 1e-6, RUNS, ALPHA))
M, WEIGHT, OFFSET = 3, 0.3, 1.0


def classifier():
    return SmoothedClassifier(rule(OFFSET, WEIGHT),
                              {"image": Gaussian(0.5), "text": Substitution(KEEP, VOCAB)}, 2,
                              {"text": Vocabulary(torch.arange(VOCAB))}, batch_size=1024)


def record_at(p1):
    """The record whose true smoothed P(f = 1) is p1."""
    margin = brentq(lambda t: smoothed_p1(t, M, WEIGHT) - p1, -6, 6)
    image = (margin + OFFSET) * W
    return margin, {"image": image, "text": TokenBlock(torch.tensor([0] * M + [1] * (LENGTH - M)))}


def wrong(result, margin, tau, side):
    """Does the returned region contain a point where the true detector disagrees?"""
    if result.decision != side:
        return side == "flag" and result.decision == "benign" and \
            smoothed_p1(margin, M, WEIGHT) >= tau
    for r, eps in enumerate(result.l2_radius):
        if side == "flag":      # worst point: away from flagging, r zeros removed
            p = smoothed_p1(margin - eps, max(0, M - r), WEIGHT)
            if p < tau:
                return True
        else:                   # worst point: towards flagging, r zeros added
            p = smoothed_p1(margin + eps, min(LENGTH, M + r), WEIGHT)
            if p >= tau:
                return True
    return False


@pytest.mark.parametrize(("tau", "p1", "side", "n"), [
    (1e-3, 0.02, "flag", 600),
    (0.05, 0.2, "flag", 300),
    (0.3, 0.6, "flag", 300),
    (1e-3, 1e-5, "benign", 4000),
    (0.05, 0.01, "benign", 600),
    (0.3, 0.12, "benign", 300),
])
def test_detector_regions_are_valid(tau, p1, side, n):
    clf = classifier()
    margin, record = record_at(p1)
    detector = Detector(tau, flagged_class=1, sides=side)
    failures = certified = 0
    for seed in range(RUNS):
        result = clf.certify_detector(record, n, ALPHA, detector, seed=seed, max_tokens=LENGTH)
        if result.decision == side:
            certified += 1
            assert result.label == (1 if side == "flag" else 0)
        failures += wrong(result, margin, tau, side)
    assert certified >= RUNS // 2, certified
    assert failures <= ALLOWED, (failures, ALLOWED)


def test_both_sides_split_alpha_and_abstain_near_tau():
    clf = classifier()
    _, record = record_at(0.05)
    result = clf.certify_detector(record, 300, ALPHA, Detector(0.05, sides="both"), seed=0)
    assert result.decision == "abstain" and result.label == ABSTAIN
    assert result.p_lower < 0.05 <= result.p_upper
    flagged = clf.certify_detector(record_at(0.4)[1], 300, ALPHA, Detector(0.05, sides="both"),
                                   seed=0)
    alone = clf.certify_detector(record_at(0.4)[1], 300, ALPHA, Detector(0.05), seed=0)
    assert flagged.decision == alone.decision == "flag"
    assert flagged.p_lower < alone.p_lower          # alpha / 2 per side: a looser bound


def test_a_point_estimate_would_fail_the_same_check():
    from hybridcert.certificate import Rule

    clf = classifier()
    tau = 0.05
    margin, record = record_at(0.08)
    over = 0
    for seed in range(RUNS):
        counts = clf.sample_counts(clf.validate(record), 300, seed, stage=1)
        region = clf.noise.frontier(counts[1] / 300, rule=Rule.flag(tau), max_tokens=LENGTH)[0]
        if not region.certified:
            continue
        eps = region.l2_radius(0)
        over += smoothed_p1(margin - eps, M, WEIGHT) < tau

