"""Statistical validity (THEORY.md 5.5): base classifiers whose smoothed probability is known
in closed form; over many seeded runs, certified-but-wrong outcomes stay below alpha.

Margin: each run fails independently with probability <= alpha, so the number of failures
in N runs is stochastically below Binomial(N, alpha).  The test allows the 1 - 1e-6
quantile of that binomial: a correct implementation fails it with probability <= 1e-6 (and,
with fixed seeds, deterministically passes), while an estimator that ignored the confidence
level (failing about half the time near the boundary) would exceed it many times over.
"""

import numpy as np
import pytest
import torch
from scipy.stats import binom, norm

from hybridcert import Gaussian, Substitution
from hybridcert.smoothing import ABSTAIN, SmoothedClassifier, TokenBlock, Vocabulary

RUNS, ALPHA, N0, N = 300, 0.1, 32, 300
ALLOWED = int(binom.ppf(1 - 1e-6, RUNS, ALPHA))
SIGMA, KEEP, VOCAB, LENGTH = 0.5, 0.6, 5, 6
BETA = (1 - KEEP) / (VOCAB - 1)
W = torch.tensor([0.6, 0.8])   # unit normal of the continuous rule


def count_distribution(m):
    """P(count = k) of zeros after substitution noise, m zeros among LENGTH positions."""
    kept = np.array([binom.pmf(k, m, KEEP) for k in range(LENGTH + 1)])
    new = np.array([binom.pmf(k, LENGTH - m, BETA) for k in range(LENGTH + 1)])
    return np.convolve(kept, new)[: LENGTH + 1]


def smoothed_p1(margin, m, weight):
    """P(f = 1) for f = [w.z - b + weight * count > 0] with w.x - b = margin."""
    ks = np.arange(LENGTH + 1)
    return float(count_distribution(m) @ norm.cdf((margin + weight * ks) / SIGMA))


def rule(offset, weight):
    def model(batch):
        score = batch["image"] @ W - offset
        if weight:
            score = score + weight * (batch["text"] == 0).sum(1)
        return (score > 0).long()
    return model


def run_validity(margin, m, weight, threshold_shift=0.0):
    noises = {"image": Gaussian(SIGMA)}
    vocabularies = {}
    if weight:
        noises["text"] = Substitution(KEEP, VOCAB)
        vocabularies["text"] = Vocabulary(torch.arange(VOCAB))
    offset = 1.0
    image = (margin + offset) * W
    record = {"image": image, "text": TokenBlock(torch.tensor([0] * m + [1] * (LENGTH - m)))}
    clf = SmoothedClassifier(rule(offset, weight), noises, 2, vocabularies, batch_size=512)
    true_class = int(smoothed_p1(margin, m, weight) > 0.5)

    def is_wrong(result):
        wrong = result.label != true_class
        sign = 1 if result.label == 1 else -1
        for r, eps in enumerate(result.l2_radius):
            # Worst point of the certified region: move the margin towards the boundary
            # by eps and flip r tokens against the returned class.
            worst_m = max(0, m - r) if sign == 1 else min(LENGTH, m + r)
            p1 = smoothed_p1(margin - sign * eps, worst_m if weight else m, weight)
            wrong |= (p1 <= 0.5) if sign == 1 else (p1 >= 0.5)
        return wrong

    return count_failures(clf, record, is_wrong)


def count_failures(clf, record, is_wrong):
    """(certified-but-wrong runs, certified runs) over RUNS seeds."""
    failures = certified = 0
    for seed in range(RUNS):
        result = clf.certify(record, N0, N, ALPHA, seed=seed, max_tokens=LENGTH)
        if result.label == ABSTAIN:
            continue
        certified += 1
        failures += bool(is_wrong(result))
    return failures, certified


@pytest.mark.parametrize(("margin", "m", "weight"), [
    (0.42, 0, 0.0),     # continuous rule: p1 = Phi(0.84) = 0.80
    (-0.3, 0, 0.0),     # the other class
    (-1.1, 4, 0.55),    # a rule that needs both modalities
])
def test_certified_but_wrong_rate_is_below_alpha(margin, m, weight):
    failures, certified = run_validity(margin, m, weight)
    assert certified >= RUNS // 2  # the test exercises real certificates
    assert failures <= ALLOWED, (failures, ALLOWED)


def test_count_rule_on_tokens_only():
    """A rule on the discrete block alone: smoothed probability is a binomial tail."""
    m, needed = 5, 3
    p1 = float(count_distribution(m)[needed:].sum())
    truth = [float(count_distribution(max(0, m - r))[needed:].sum()) > 0.5
             for r in range(LENGTH + 1)]
    clf = SmoothedClassifier(lambda b: ((b["text"] == 0).sum(1) >= needed).long(),
                             {"text": Substitution(KEEP, VOCAB)}, 2,
                             {"text": Vocabulary(torch.arange(VOCAB))})
    record = {"text": TokenBlock(torch.tensor([0] * m + [1] * (LENGTH - m)))}
    failures, certified = count_failures(
        clf, record,
        lambda result: result.label != int(p1 > 0.5) or not all(truth[: result.max_tokens + 1]))
    assert certified >= RUNS // 2
    assert failures <= ALLOWED


def test_a_point_estimate_would_fail_the_same_check():
    """The check has teeth: using the empirical frequency instead of the confidence bound
    over-claims in far more than ALLOWED runs on the continuous rule."""
    from hybridcert.certificate import certified_frontier

    clf = SmoothedClassifier(rule(1.0, 0.0), {"image": Gaussian(SIGMA)}, 2)
    record = {"image": (0.42 + 1.0) * W}
    true_radius = 0.42
    over = 0
    for seed in range(RUNS):
        counts = clf.sample_counts(clf.validate(record), N, seed, stage=1)
        radius = certified_frontier(counts[1] / N, sigma=SIGMA, discrete=None).l2_radius[0, 0]
        over += radius > true_radius
    assert over > 2 * ALLOWED
