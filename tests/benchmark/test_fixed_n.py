"""Certificates at a fixed n (``Settings(mode="fixed")``): every rule is read from the same
count of the same draws per input, so cells with equal thresholds decide identically; the
bounds are the Clopper-Pearson bounds of an independent recount, and the certified cells
follow the closed-form Gaussian certificate at r = 0; the majority vote's class chosen from the
same draws keeps its coverage."""

import numpy as np
import pytest
import torch
from scipy.stats import beta, norm

from hybridcert.bench.baselines import grid_thresholds
from hybridcert.bench.units import FixedDraws, Settings, certify_fixed, certify_unit
from hybridcert.blocks import Continuous, HybridNoise, TokenBlock, Tokens, Vocabulary
from hybridcert.certificate import MAJORITY, Rule
from hybridcert.noise import Gaussian, Substitution
from hybridcert.smoothing import SmoothedClassifier, Stage

VOCAB = Vocabulary(torch.arange(10, 60))
SIGMA = 0.3
NOISE = HybridNoise([Continuous("image", Gaussian(SIGMA)),
                     Tokens("text", Substitution(0.3, VOCAB.size), VOCAB)])
#: Cells of both kinds: one modality unchanged (sequential composition's threshold equals the
#: joint one) and both changed (sequential composition is looser).
CELLS = [(0.0, 0), (0.1, 0), (0.25, 0), (0.0, 1), (0.0, 2), (0.1, 1), (0.25, 2)]


class Toy(torch.nn.Module):
    """Unsafe score: image mean - 0.5, plus 0.3 per token 17 seen."""

    def forward(self, batch):
        seen = ((batch["text"] == 17) & (batch["text_attention"] > 0)).sum(1).float()
        score = batch["image"].mean((1, 2, 3)) - 0.5 + 0.3 * seen
        return torch.stack([-score, score], 1)


class ImageOnly(torch.nn.Module):
    """Label 1 iff the image mean exceeds 0.5: under Gaussian noise P(1) is closed-form."""

    def forward(self, batch):
        score = batch["image"].mean((1, 2, 3)) - 0.5
        return torch.stack([-score, score], 1)


def _records(n):
    out = []
    for i in range(n):
        ids = torch.tensor([17 if i % 2 else 20, 21, 22, 23, 0, 0])
        out.append({"image": torch.full((3, 2, 2), 0.45 + 0.03 * i),
                    "text": TokenBlock(ids, attention=(ids > 0).long())})
    return out


def test_every_rule_reads_one_count_and_equal_thresholds_decide_identically():
    clf = SmoothedClassifier(Toy(), NOISE, 2, batch_size=64)
    records, seeds = _records(8), [40 + i for i in range(8)]
    n, alpha, tau = 300, 0.01, 0.6
    unit = certify_unit(clf, records, seeds, CELLS, Settings(alpha=alpha, n_max=n,
                                                            mode="fixed", price_detector=50,
                                                            price_majority=50), tau)
    assert unit["mode"] == "fixed" and list(unit["drawn"]) == [n] * 8
    out = unit["outcomes"]
    for setting, rule in (("detector", Rule.flag(tau)), ("majority", MAJORITY)):
        grid = grid_thresholds(NOISE, CELLS, rule)
        methods = {"joint": out[setting], "sequential": out[f"{setting}_sequential"],
                   "per_modality": out[f"{setting}_per_modality"]}
        equal = 0
        for a in methods:
            for b in methods:
                for j in range(len(CELLS)):
                    for k in range(len(CELLS)):
                        if grid[a][j] == grid[b][k]:
                            equal += 1
                            assert np.array_equal(methods[a][:, j], methods[b][:, k]), \
                                (setting, a, b, CELLS[j], CELLS[k])
        # one modality unchanged: sequential composition has the joint threshold exactly
        one = [j for j, (e, r) in enumerate(CELLS) if e == 0 or r == 0]
        assert np.array_equal(grid["sequential"][one], grid["joint"][one])
        assert equal > 3 * len(CELLS)
    # the counts are those of the first n draws of each input's own stream (recounted here)
    for i, (record, seed) in enumerate(zip(records, seeds, strict=True)):
        labels = clf.stream(clf.validate(record), seed, Stage.SEQUENTIAL).labels(n)
        k = int(labels.sum())
        expected = beta.ppf(alpha, k, n - k + 1) if k else 0.0
        assert unit["p_lower"]["detector"][i] == pytest.approx(expected, rel=1e-12, abs=1e-15)
        top = max(k, n - k)
        assert unit["p_lower"]["majority"][i] == pytest.approx(
            beta.ppf(alpha / 2, top, n - top + 1), rel=1e-12)
        assert unit["labels_of"]["majority"][i] in (-1, int(k > n - k))
    # the sequential rule read the same streams and never more than n draws
    assert (unit["queries"]["detector_stopping"] <= n).all()
    assert unit["outcomes"]["detector_stopping"].shape == (8, len(CELLS))


def test_image_cells_follow_the_closed_form_gaussian_certificate():
    """At r = 0 a flag with bound p is certified at eps iff Phi(Phi^-1(p) - eps / sigma) >=
    tau (Cohen et al.'s bound, computed here with scipy, not the library)."""
    clf = SmoothedClassifier(Toy(), NOISE, 2, batch_size=64)
    records, tau = _records(10), 0.55
    unit = certify_fixed(clf, records, list(range(10)), CELLS,
                         Settings(alpha=0.01, n_max=400, mode="fixed"), tau, majority=True,
                         baselines=False)
    assert "detector_stopping" not in unit["outcomes"]
    checked = 0
    for i in range(len(records)):
        for setting, p in (("detector", unit["p_lower"]["detector"][i]),
                           ("majority", unit["p_lower"]["majority"][i])):
            for j, (e, r) in enumerate(CELLS):
                if r != 0 or p <= 0:
                    continue
                value = norm.cdf(norm.ppf(p) - e / SIGMA)
                level = tau if setting == "detector" else 0.5
                if abs(value - level) < 1e-9:
                    continue
                expected = value >= level if setting == "detector" else value > level
                assert bool(unit["outcomes"][setting][i, j]) == expected, (setting, i, e)
                checked += 1
    assert checked >= 40


def test_majority_class_chosen_from_the_same_draws_keeps_its_coverage():
    """ImageOnly on a constant image c: P(label 1) = Phi((c - 0.5) sqrt(d) / sigma) exactly.
    Over 400 seeded inputs at p = 0.5 (the worst case for choosing the class from the same
    draws), the bound exceeds the chosen class's true probability in at most ~alpha of them."""
    alpha, n, inputs = 0.1, 60, 400
    noise = HybridNoise([Continuous("image", Gaussian(SIGMA)),
                         Tokens("text", Substitution(0.5, VOCAB.size), VOCAB)])
    clf = SmoothedClassifier(ImageOnly(), noise, 2, batch_size=512)
    ids = torch.tensor([20, 21, 0])
    records = [{"image": torch.full((3, 2, 2), 0.5),
                "text": TokenBlock(ids, attention=(ids > 0).long())} for _ in range(inputs)]
    unit = certify_fixed(clf, records, list(range(1000, 1000 + inputs)), [(0.0, 0)],
                         Settings(alpha=alpha, n_max=n, mode="fixed"), None, majority=True,
                         baselines=False)
    wrong = np.asarray(unit["p_lower"]["majority"]) > 0.5
    # binomial(400, <= alpha / 2 per side... <= alpha in all): mean <= 40, 3 sd ~ 18
    assert wrong.sum() <= alpha * inputs + 18
    # and the detector's one-sided bound on a fixed class at alpha covers too
    unit = certify_fixed(clf, records, list(range(2000, 2000 + inputs)), [(0.0, 0)],
                         Settings(alpha=alpha, n_max=n, mode="fixed"), 0.4, majority=False,
                         baselines=False)
    assert (np.asarray(unit["p_lower"]["detector"]) > 0.5).sum() <= alpha * inputs + 18


def test_fixed_draws_rule_and_settings():
    rule = FixedDraws(2, 700, look=512)
    assert rule.next_draws() == 512
    rule.observe(np.ones(600, dtype=np.int64))
    assert rule.next_draws() == 100 and not rule.done
    rule.observe(np.zeros(300, dtype=np.int64))
    assert rule.done and rule.queries == 700 and list(rule.counts) == [100, 600]
    with pytest.raises(ValueError, match="mode"):
        Settings(mode="anytime")
