"""Thresholds chosen on validation and the seeds x inputs bootstrap."""

import itertools

import numpy as np
import pytest

from hybridcert.bench.calibrate import (
    choose_pair,
    choose_score_threshold,
    choose_threshold,
    refine,
)
from hybridcert.bench.stats import seed_input_bootstrap


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


def test_bootstrap_point_and_width():
    values = np.zeros((1, 50))
    out = seed_input_bootstrap(values, replicates=200)
    assert out["mean"] == out["low"] == out["high"] == 0.0
    rng = np.random.default_rng(0)
    one = rng.random((1, 400, 3)) < 0.3
    three = np.stack([one[0], rng.random((400, 3)) < 0.5, rng.random((400, 3)) < 0.1])
    a = seed_input_bootstrap(one, replicates=500)
    b = seed_input_bootstrap(three, replicates=500)
    assert a["mean"].shape == (3,) and np.allclose(a["mean"], one.mean(axis=(0, 1)))
    # seeds that disagree widen the interval beyond the inputs' sampling error
    assert ((b["high"] - b["low"]) > 2 * (a["high"] - a["low"])).all()
    with pytest.raises(ValueError, match="shape"):
        seed_input_bootstrap(np.zeros(5))


def test_bootstrap_covers_the_true_rate():
    rng = np.random.default_rng(5)
    covered = 0
    for _ in range(200):
        sample = rng.random((1, 300)) < 0.3
        out = seed_input_bootstrap(sample, replicates=400, seed=int(rng.integers(1e9)))
        covered += out["low"] <= 0.3 <= out["high"]
    assert covered >= 180          # nominal 95 %: 190 expected, sd about 3
