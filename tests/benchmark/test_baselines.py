"""Baseline thresholds against closed forms in 50-digit arithmetic, the sample-size ceiling
against the looks boundary's closed form, and the joint certificate's order against them."""

import mpmath as mp
import numpy as np
import pytest

from hybridcert.bench.baselines import (
    grid_thresholds,
    per_modality_threshold,
    sequential_lower,
    sequential_threshold,
)
from hybridcert.bench.metrics import ceiling_probability, eps_ceiling
from hybridcert.blocks import Continuous, HybridNoise, Tokens, Vocabulary
from hybridcert.certificate import MAJORITY, Rule, per_modality_check
from hybridcert.noise import Gaussian, Substitution
from hybridcert.sequential.bounds import look_points

mp.mp.dps = 50
V = 29_523


def _noise(sigma, keep):
    vocab = Vocabulary(np.arange(999, 999 + V))
    return HybridNoise([Continuous("image", Gaussian(sigma)),
                        Tokens("text", Substitution(keep, V), vocab)])


def _phi(x):
    return mp.ncdf(x)


def _phinv(p):
    return mp.sqrt(2) * mp.erfinv(2 * mp.mpf(p) - 1)


def _closed_form_sequential(level, a, gamma):
    """One substituted token costs exactly a - beta in the linear range (THEORY.md section 3):
    text first needs p >= (a - beta) + Phi(Phi^-1(level) + gamma); image first needs
    Phi(Phi^-1(p) - gamma) >= level + (a - beta).  The better order is the smaller p."""
    a = mp.mpf(a)
    cost = a - (1 - a) / (V - 1)
    text_first = cost + _phi(_phinv(level) + gamma)
    image_first = _phi(_phinv(level + cost) + gamma)
    return min(text_first, image_first)


@pytest.mark.parametrize("sigma, keep, eps, tau", [(0.25, 0.1, 0.25, 0.5), (0.25, 0.1, 0.1, 0.3),
                                                   (0.5, 0.2, 0.3, 0.6), (0.25, 0.05, 0.4, 0.8)])
def test_sequential_threshold_matches_the_closed_form(sigma, keep, eps, tau):
    noise = _noise(sigma, keep)
    rule = Rule.flag(tau)
    got = sequential_threshold(noise, eps, 1, rule)
    want = float(_closed_form_sequential(mp.mpf(tau), keep, mp.mpf(eps) / mp.mpf(sigma)))
    assert got == pytest.approx(want, rel=1e-9)
    # the certified end: it certifies, the double below does not
    image, text = noise.ratio(noise.pair_budget(eps, 0)), noise.ratio(noise.pair_budget(0, 1))
    assert sequential_lower(got, image, text)[0] >= tau
    assert sequential_lower(np.nextafter(got, 0), image, text)[0] < tau
    # the joint certificate never needs more
    assert noise.threshold(noise.pair_budget(eps, 1), rule) <= got


def test_majority_sequential_threshold_matches_the_closed_form():
    noise = _noise(0.25, 0.1)
    got = sequential_threshold(noise, 0.25, 1, MAJORITY)
    want = float(_closed_form_sequential(mp.mpf("0.5"), 0.1, mp.mpf(1)))
    # majority needs lower > 1/2 strictly: the certified end is at most a few ulps above
    assert got == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("sigma, keep", [(0.25, 0.25), (0.25, 0.1), (0.5, 0.1)])
def test_per_modality_threshold_agrees_with_the_library_check(sigma, keep):
    noise = _noise(sigma, keep)
    for eps, r in ((0.25, 1), (0.5, 2), (0.1, 4)):
        t = per_modality_threshold(noise, eps, r, MAJORITY)
        image, text = noise.ratio(noise.pair_budget(eps, 0)), noise.ratio(noise.pair_budget(0, r))
        for p in np.linspace(0.5, 1.0, 201):
            assert bool(per_modality_check(p, image, text)) == (p >= t), (eps, r, p)
        # closed form at r = 1: max(Phi(gamma), 1/2 + (a - beta)) up to the certified end
        if r == 1:
            a = mp.mpf(keep)
            want = max(_phi(mp.mpf(eps) / sigma), mp.mpf("0.5") + a - (1 - a) / (V - 1))
            assert t == pytest.approx(float(want), rel=1e-9)


def test_grid_order_per_modality_joint_sequential():
    noise = _noise(0.25, 0.1)
    cells = [(e, r) for e in (0.0, 0.25, 0.5) for r in (0, 1, 2, 4)]
    for rule in (MAJORITY, Rule.flag(0.4)):
        grid = grid_thresholds(noise, cells, rule)
        assert (grid["per_modality"] <= grid["joint"]).all()
        assert (grid["joint"] <= grid["sequential"]).all()
        for k, (e, r) in enumerate(cells):
            if e == 0 or r == 0:       # one modality: all three coincide
                assert grid["joint"][k] == grid["sequential"][k] == grid["per_modality"][k]
        mixed = [k for k, (e, r) in enumerate(cells) if e and r and
                 np.isfinite(grid["sequential"][k])]
        assert mixed and all(grid["per_modality"][k] < grid["joint"][k] <
                             grid["sequential"][k] for k in mixed)
    with pytest.raises(ValueError, match="rule must be"):
        sequential_threshold(noise, 0.25, 1, Rule.benign(0.5))


def test_ceiling_of_the_looks_boundary_is_clopper_pearson_at_the_cap():
    # all draws agree: the largest bound is (level / K) ** (1 / n_max), K looks (union bound)
    for n_max in (2000, 10_000):
        looks = len(look_points(n_max, 1.25))
        want = (0.001 / looks) ** (1 / n_max)
        got = ceiling_probability(0.9, 0.001, n_max, "looks", "flag", tol=1e-9)
        assert got == pytest.approx(want, abs=2e-9)
    assert ceiling_probability(0.9, 0.001, 10_000, "mixture", "flag") > 0.999
    with pytest.raises(ValueError, match="mode"):
        ceiling_probability(0.9, 0.001, 100, "looks", "benign")


def test_eps_ceiling_closed_form_at_zero_tokens():
    noise = _noise(0.25, 0.1)
    p, tau = 0.9989, 0.9
    eps = eps_ceiling(noise, p, Rule.flag(tau), (0, 1, 2))
    assert eps[0] == pytest.approx(0.25 * float(_phinv(p) - _phinv(tau)), rel=1e-6)
    assert np.isnan(eps[2])            # two tokens cost about 0.2 > p - tau
    assert all(np.isnan(eps_ceiling(noise, float("nan"), MAJORITY, (0, 1))))
