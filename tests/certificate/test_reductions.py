"""Closed forms and published thresholds the joint bound must reduce to."""

import numpy as np
import pytest
from scipy.stats import norm

from hybridcert import (
    Gaussian,
    LikelihoodRatio,
    Mask,
    Substitution,
    certified_frontier,
    lower_bound,
    per_modality_check,
    sequential_bound,
)


@pytest.mark.parametrize("p", [0.51, 0.6, 0.9, 0.999, 1 - 1e-9, 1 - 1e-12])
@pytest.mark.parametrize("gamma", [1e-6, 0.1, 1.0, 3.0])
def test_no_token_change_is_cohens_formula(p, gamma):
    expected = norm.cdf(norm.isf(1 - p) - gamma)  # isf(1 - p): exact for p near 1
    got = lower_bound(p, Gaussian(1.0).likelihood_ratio(gamma))
    assert got <= expected * (1 + 1e-9)
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-15)


@pytest.mark.parametrize("p", [0.55, 0.8, 0.99, 0.999999, 1 - 1e-12])
@pytest.mark.parametrize("sigma", [0.12, 0.5, 1.0])
def test_binary_radius_at_zero_tokens_is_sigma_times_inverse_normal(p, sigma):
    frontier = certified_frontier(p, sigma=sigma, discrete=None)
    expected = sigma * norm.isf(1 - p)
    got = frontier.l2_radius[0, 0]
    assert got <= expected * (1 + 1e-9)
    assert got == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(("p_a", "p_b"), [(0.6, 0.3), (0.45, 0.2), (0.9, 0.05)])
def test_multiclass_radius_at_zero_tokens(p_a, p_b):
    frontier = certified_frontier(p_a, sigma=0.25, discrete=None, p_upper=p_b)
    expected = 0.25 / 2 * (norm.ppf(p_a) - norm.ppf(p_b))
    assert frontier.l2_radius[0, 0] == pytest.approx(expected, rel=1e-9)
    assert frontier.l2_radius[0, 0] <= expected * (1 + 1e-9)


# Lee et al. (2019) thresholds, quoted in THEORY.md section 1.
LEE = [
    (256, 0.2, 1, 0.69686274509803921569),
    (2, 0.8, 1, 0.875),
    (2, 0.8, 2, 0.96875),
]


@pytest.mark.parametrize(("vocab", "keep", "r", "threshold"), LEE)
def test_discrete_thresholds_of_lee_et_al(vocab, keep, r, threshold):
    ratio = Substitution(keep, vocab).likelihood_ratio(r)
    assert lower_bound(threshold + 1e-9, ratio) > 0.5
    assert lower_bound(threshold, ratio) <= 0.5  # the tie is not certified
    assert lower_bound(threshold - 1e-9, ratio) < 0.5
    frontier = certified_frontier([threshold - 1e-7, threshold + 1e-7], sigma=None,
                                  discrete=Substitution(keep, vocab), max_tokens=r)
    assert frontier.max_tokens[0] < r <= frontier.max_tokens[1]


@pytest.mark.parametrize(("vocab", "keep"), [(2, 0.8), (256, 0.2), (30522, 0.1), (10**6, 0.05)])
def test_one_token_costs_keep_minus_beta(vocab, keep):
    """THEORY.md section 3: lower(p) = p - (a - beta) for a <= p <= 1 - beta, r = 1."""
    beta = (1 - keep) / (vocab - 1)
    for p in np.linspace(keep, 1 - beta, 7):
        got = lower_bound(p, Substitution(keep, vocab).likelihood_ratio(1))
        assert got == pytest.approx(p - (keep - beta), abs=1e-11)


@pytest.mark.parametrize("p", [0.6, 0.9, 0.99])
def test_masking_closed_form(p):
    keep, r, gamma = 0.05, 3, 0.7
    m = (1 - keep) ** r
    expected = m * norm.cdf(norm.ppf(1 - (1 - p) / m) - gamma) if p > 1 - m else 0.0
    ratio = Mask(keep).likelihood_ratio(r) * Gaussian(1.0).likelihood_ratio(gamma)
    assert lower_bound(p, ratio) == pytest.approx(expected, rel=1e-10, abs=1e-14)
    assert lower_bound(1 - m - 1e-9, ratio) == 0.0
    assert lower_bound(1 - p, Mask(keep).likelihood_ratio(1)) == pytest.approx(
        max(0.0, 1 - p - keep), abs=1e-12)


def test_theory_example_where_per_modality_certification_over_claims():
    vocab, delta = 30522, 0.1
    keep = (delta * (vocab - 1) + 1) / vocab          # a - beta = 0.1
    gaussian = Gaussian(0.5).likelihood_ratio(0.6)
    tokens = Substitution(keep, vocab).likelihood_ratio(1)
    assert lower_bound(0.9, tokens) == pytest.approx(0.80, abs=1e-9)
    assert lower_bound(0.9, gaussian) == pytest.approx(norm.cdf(norm.ppf(0.9) - 1.2))
    assert lower_bound(0.9, gaussian * tokens) == pytest.approx(0.4575, abs=1e-4)
    assert per_modality_check(0.9, gaussian, tokens)
    assert lower_bound(0.9, gaussian * tokens) < 0.5
    assert sequential_bound(0.9, gaussian, tokens) < lower_bound(0.9, gaussian * tokens)


@pytest.mark.parametrize("gamma", [1e-300, 1e-14, 1e-10, 1e-7])
def test_continuity_at_gamma_zero(gamma):
    """The hybrid formula is exact near gamma = 0: no division by zero, no lossy limit."""
    tokens = Substitution(0.2, 256).likelihood_ratio(2)
    for p in [0.3, 0.7, 0.95, 0.999]:
        at_zero = lower_bound(p, tokens)
        near = lower_bound(p, tokens * LikelihoodRatio.identity(gamma))
        assert near <= at_zero + 1e-12
        # The Gaussian factor moves the bound by at most gamma * phi-scale * kappa.
        assert near == pytest.approx(at_zero, abs=max(1e-11, 100 * gamma))


def test_extreme_parameters_stay_finite_and_ordered():
    big = Substitution(0.02, 10**6)
    for r in (1, 10, 100, 1000):
        ratio = big.likelihood_ratio(r) * LikelihoodRatio.identity(0.3)
        values = lower_bound(np.array([0.5, 0.9, 1 - 1e-6, 1 - 1e-12]), ratio)
        assert np.all(np.isfinite(values))
        assert np.all(np.diff(values) >= 0)
        assert np.all(values <= np.array([0.5, 0.9, 1 - 1e-6, 1 - 1e-12]))


@pytest.mark.parametrize("noise", [Substitution(0.1, 30522), Substitution(0.3, 5), Mask(0.1)])
@pytest.mark.parametrize("r", [1, 2])
def test_sequential_radius_closed_form_matches_bisection(noise, r):
    from hybridcert.certificate.baselines import sequential_radius

    tokens = noise.likelihood_ratio(r)
    for p in [0.7, 0.9, 0.99, 0.9999]:
        got = sequential_radius(p, 0.5, tokens)
        lo, hi = 0.0, 10.0
        if sequential_bound(p, Gaussian(0.5).likelihood_ratio(0.0), tokens) <= 0.5:
            assert got == 0.0
            continue
        for _ in range(60):
            mid = (lo + hi) / 2
            ok = sequential_bound(p, Gaussian(0.5).likelihood_ratio(mid), tokens) > 0.5
            lo, hi = (mid, hi) if ok else (lo, mid)
        assert got == pytest.approx(lo, rel=1e-7, abs=1e-9)
        assert got <= hi * (1 + 1e-9)
