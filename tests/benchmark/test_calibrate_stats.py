"""Thresholds chosen on validation, and the intervals: Student-t over seeds, bootstrap over
inputs within a seed."""

import itertools

import numpy as np
import pytest

from hybridcert.bench.calibrate import (
    choose_pair,
    choose_score_threshold,
    choose_threshold,
    refine,
)
from hybridcert.bench.stats import input_bootstrap, seed_intervals, t_interval


@pytest.mark.parametrize("seed", range(5))
def test_threshold_keeps_the_false_flag_rate_and_is_the_smallest(seed):
    rng = np.random.default_rng(seed)
    copies = 32
    scores = rng.binomial(copies, rng.beta(0.5, 2.0, 300)) / copies
    out = choose_threshold(scores, copies, 0.05)
    assert out["feasible"] and 0 < out["tau"] < 1
    assert out["rate"] == np.mean(scores >= out["tau"]) <= 0.05
    # any threshold at or below the next lower estimate flags more than 5 %
    below = scores[scores < out["tau"]].max()
    assert np.mean(scores >= below) > 0.05


def test_threshold_with_refined_estimates():
    rng = np.random.default_rng(3)
    p = rng.beta(0.5, 2.0, 400)
    first = rng.binomial(32, p) / 32
    scores, copies = refine(first, lambda index, more: rng.binomial(more, p[index]), 32, 256)
    assert set(copies.tolist()) <= {32, 256} and (copies[first >= 0.5] == 256).all()
    assert (copies[first < 0.5] == 32).all() and np.array_equal(scores[first < 0.5],
                                                                 first[first < 0.5])
    out = choose_threshold(scores, copies, 0.05)
    assert out["rate"] <= 0.05 and out["copies"] == 256
    below = scores[scores < out["tau"]].max()
    assert np.mean(scores >= below) > 0.05


def test_threshold_infeasible_and_arguments():
    scores = np.array([1.0] * 10 + [0.0] * 90)       # 10 % certain false flags
    out = choose_threshold(scores, 32, 0.05)
    assert not out["feasible"] and out["tau"] == 1 - 0.25 / 32 and out["rate"] == 0.10
    with pytest.raises(ValueError, match="max_rate"):
        choose_threshold(scores, 32, 0)
    with pytest.raises(ValueError, match="copies"):
        choose_threshold(scores, 0)
    with pytest.raises(ValueError, match="copies"):
        choose_threshold(scores, 2.5)
    with pytest.raises(ValueError, match="lie in"):
        choose_threshold(np.array([1.5]), 4)


def test_score_threshold():
    rng = np.random.default_rng(1)
    scores = rng.random(200)
    out = choose_score_threshold(scores, 0.05)
    assert np.sum(scores >= out["tau"]) == 10 and out["rate"] == 0.05
    assert np.sum(scores >= np.nextafter(out["tau"], 0) - 1e-12) > 10


def test_pair_is_the_best_feasible_pair_on_the_grid():
    rng = np.random.default_rng(2)
    copies = 8
    labels = rng.integers(0, 2, 200)
    img = rng.binomial(copies, np.where(labels == 1, 0.7, 0.3)) / copies
    txt = rng.binomial(copies, np.where(labels == 1, 0.6, 0.4)) / copies
    out = choose_pair(img, txt, labels, copies, 0.05)
    grid = (np.arange(copies) + 0.5) / copies
    best = max(((np.mean(((img >= a) & (txt >= b))[labels == 1]), -a - b)
                for a, b in itertools.product(grid, grid)
                if np.mean(((img >= a) & (txt >= b))[labels == 0]) <= 0.05))
    assert out["feasible"] and out["rate"] <= 0.05
    assert (out["recall"], -out["tau_image"] - out["tau_text"]) == pytest.approx(best)



def _pair_by_enumeration(img, txt, labels, copies, max_rate):
    """The AND's pair by walking the grid pair by pair: the most unsafe records flagged
    among pairs within max_rate, then the lowest tau_image + tau_text, then the first."""
    grid = (np.arange(copies) + 0.5) / copies
    best = None
    for a, b in itertools.product(grid, grid):
        flag = (img >= a) & (txt >= b)
        benign, unsafe = flag[labels == 0], flag[labels == 1]
        if benign.size and benign.mean() > max_rate:
            continue
        key = (unsafe.mean() if unsafe.size else 0.0, -a - b)
        if best is None or key > best[0]:
            best = (key, a, b)
    return None if best is None else (best[1], best[2])


@pytest.mark.parametrize("seed", range(8))
def test_pair_is_the_enumerations_pair_exactly(seed):
    """Ties included: estimates on a coarse grid, so many pairs flag the same records."""
    rng = np.random.default_rng(10 + seed)
    copies = int(rng.choice([3, 4, 10, 16]))
    labels = rng.integers(0, 2, 150)
    img = rng.binomial(copies, np.where(labels == 1, 0.6, 0.35)) / copies
    txt = rng.binomial(copies, np.where(labels == 1, 0.5, 0.45)) / copies
    for rate in (0.005, 0.02, 0.1, 0.4):
        out = choose_pair(img, txt, labels, copies, rate)
        expected = _pair_by_enumeration(img, txt, labels, copies, rate)
        if expected is None:
            assert not out["feasible"]
            continue
        assert out["feasible"] and (out["tau_image"], out["tau_text"]) == expected
        flag = (img >= expected[0]) & (txt >= expected[1])
        assert out["rate"] == flag[labels == 0].mean() and \
            out["recall"] == flag[labels == 1].mean()



def test_pair_when_no_pair_is_within_the_rate_or_a_class_is_missing():
    copies = 10
    labels = np.array([0] * 20 + [1] * 20)
    ones = np.ones(40)                    # every benign record flagged by every pair
    out = choose_pair(ones, ones, labels, copies, 0.05)
    assert not out["feasible"] and out["rate"] == 1.0 and out["recall"] == 1.0
    assert out["tau_image"] == out["tau_text"] == (copies - 0.5) / copies
    rng = np.random.default_rng(3)
    img, txt = rng.integers(0, copies + 1, 40) / copies, rng.integers(0, copies + 1, 40) / copies
    # no benign record: every pair is within the rate; the lowest pair flags the most
    out = choose_pair(img, txt, np.ones(40, int), copies, 0.05)
    assert out["feasible"] and (out["tau_image"], out["tau_text"]) == \
        _pair_by_enumeration(img, txt, np.ones(40, int), copies, 0.05) == (0.05, 0.05)
    # no unsafe record: recall 0 everywhere, so the lowest feasible pair
    out = choose_pair(img, txt, np.zeros(40, int), copies, 0.3)
    assert out["recall"] == 0.0 and out["rate"] <= 0.3
    flag = (img >= out["tau_image"]) & (txt >= out["tau_text"])
    assert out["rate"] == flag.mean()


def test_t_interval_is_the_hand_computation():
    """The issue's case: per-seed rates 0, 0 and 22.4 % (a percentile bootstrap over the
    three seeds gave [0.0, 20.8], excluding the third seed's own value)."""
    per_seed = np.array([0.0, 0.0, 0.224])
    mean = 0.224 / 3
    sd = np.sqrt((2 * mean ** 2 + (0.224 - mean) ** 2) / 2)
    t_975_2 = 4.302652729911275                  # Student t, 2 degrees of freedom, 97.5 %
    out = t_interval(per_seed)
    assert out["mean"] == pytest.approx(mean)
    assert out["low"] == pytest.approx(mean - t_975_2 * sd / np.sqrt(3))
    assert out["high"] == pytest.approx(mean + t_975_2 * sd / np.sqrt(3))
    clipped = t_interval(per_seed, bounds=(0.0, 1.0))
    assert clipped["low"] == 0.0 and clipped["high"] == pytest.approx(out["high"])
    assert clipped["low"] <= per_seed.min() and per_seed.max() <= clipped["high"]
    # five seeds, two cells; 90 %: t(4) at 95 % = 2.131846786326649
    five = np.array([[0.50, 0.1], [0.55, 0.1], [0.60, 0.2], [0.52, 0.1], [0.58, 0.1]])
    out = t_interval(five, level=0.90)
    for c in range(2):
        m, s = five[:, c].mean(), five[:, c].std(ddof=1)
        assert out["low"][c] == pytest.approx(m - 2.131846786326649 * s / np.sqrt(5))
        assert out["high"][c] == pytest.approx(m + 2.131846786326649 * s / np.sqrt(5))
    one = t_interval(np.array([[0.3, 0.4]]))
    assert np.isnan(one["low"]).all() and np.array_equal(one["mean"], [0.3, 0.4])
    with pytest.raises(ValueError, match="level"):
        t_interval(per_seed, level=1.0)


def test_seed_intervals_t_over_seeds_bootstrap_within_each():
    rng = np.random.default_rng(0)
    three = np.stack([rng.random((400, 3)) < p for p in (0.3, 0.5, 0.1)])
    out = seed_intervals(three, replicates=300)
    assert out["method"] == "t" and out["per_seed"].shape == (3, 3)
    assert np.allclose(out["per_seed"], three.mean(axis=1))
    assert np.allclose(out["mean"], three.mean(axis=(0, 1)))
    expected = t_interval(three.mean(axis=1), bounds=(0.0, 1.0))
    assert np.allclose(out["low"], expected["low"]) and np.allclose(out["high"],
                                                                    expected["high"])
    for s in range(3):                       # each seed's own bootstrap over its inputs
        own = input_bootstrap(three[s].astype(float), replicates=300)
        assert np.allclose(out["per_seed_low"][s], own["low"])
        assert np.allclose(out["per_seed_high"][s], own["high"])
        assert (own["low"] <= three[s].mean(0)).all() and (three[s].mean(0) <= own["high"]).all()
    # every seed's value lies inside the t-interval here, unlike a 3-seed percentile bootstrap
    assert ((out["low"] <= out["per_seed"]) & (out["per_seed"] <= out["high"])).all()
    # one seed: the interval is that seed's bootstrap over inputs
    single = seed_intervals(three[:1, :, 0], replicates=300)
    assert single["method"] == "bootstrap" and single["per_seed"].shape == (1,)
    own = input_bootstrap(three[0, :, :1].astype(float), replicates=300)
    assert single["low"] == pytest.approx(own["low"][0]) and \
        single["high"] == pytest.approx(own["high"][0])
    zeros = seed_intervals(np.zeros((1, 50)), replicates=200)
    assert zeros["mean"] == zeros["low"] == zeros["high"] == 0.0
    with pytest.raises(ValueError, match="shape"):
        seed_intervals(np.zeros(5))


def test_bootstrap_covers_the_true_rate():
    rng = np.random.default_rng(5)
    covered = 0
    for _ in range(200):
        sample = rng.random((300, 1)) < 0.3
        out = input_bootstrap(sample, replicates=400, seed=int(rng.integers(1e9)))
        covered += out["low"][0] <= 0.3 <= out["high"][0]
    assert covered >= 180          # nominal 95 %: 190 expected, sd about 3


def test_t_interval_covers_over_seeds():
    """Per-seed rates drawn around a true mean: the 95 % t-interval over 3 seeds covers it
    about 95 % of the time (a percentile bootstrap over 3 seeds covers far less)."""
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(400):
        seeds = np.clip(rng.normal(0.3, 0.08, 3), 0, 1)
        out = t_interval(seeds, bounds=(0.0, 1.0))
        covered += out["low"] <= 0.3 <= out["high"]
    assert covered >= 364          # nominal 380, sd about 4.4
