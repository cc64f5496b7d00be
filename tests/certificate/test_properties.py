"""Monotonicity and ordering properties (hypothesis)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hybridcert import (
    Gaussian,
    LikelihoodRatio,
    Mask,
    Substitution,
    certified_frontier,
    lower_bound,
    sequential_bound,
    upper_bound,
)

probabilities = st.floats(0.001, 0.999)
gammas = st.floats(0.0, 3.0)
tokens = st.integers(0, 6)
discrete_noises = st.one_of(
    st.builds(Mask, st.floats(0.01, 0.95)),
    st.integers(2, 50_000).flatmap(
        lambda v: st.builds(Substitution, st.floats(1.0 / v + 1e-3, 0.95), st.just(v))),
)
SETTINGS = settings(max_examples=60, deadline=None)


def joint(noise, r, gamma):
    return noise.likelihood_ratio(r) * LikelihoodRatio.identity(gamma)


@SETTINGS
@given(discrete_noises, tokens, gammas, probabilities, probabilities)
def test_monotone_in_p(noise, r, gamma, p1, p2):
    lo, hi = sorted((p1, p2))
    ratio = joint(noise, r, gamma)
    assert lower_bound(lo, ratio) <= lower_bound(hi, ratio) + 1e-12
    assert upper_bound(lo, ratio) <= upper_bound(hi, ratio) + 1e-12


@SETTINGS
@given(discrete_noises, tokens, gammas, gammas, probabilities)
def test_monotone_in_gamma(noise, r, g1, g2, p):
    lo, hi = sorted((g1, g2))
    assert lower_bound(p, joint(noise, r, hi)) <= lower_bound(p, joint(noise, r, lo)) + 1e-12


@SETTINGS
@given(discrete_noises, tokens, gammas, probabilities)
def test_monotone_in_tokens(noise, r, gamma, p):
    assert lower_bound(p, joint(noise, r + 1, gamma)) <= lower_bound(p, joint(noise, r, gamma)) \
        + 1e-12


@SETTINGS
@given(discrete_noises, tokens, gammas, probabilities)
def test_lower_below_p_below_upper(noise, r, gamma, p):
    ratio = joint(noise, r, gamma)
    assert lower_bound(p, ratio) <= p <= upper_bound(p, ratio)


@SETTINGS
@given(probabilities)
def test_no_perturbation_changes_nothing(p):
    ratio = LikelihoodRatio.identity()
    assert lower_bound(p, ratio) == p == upper_bound(p, ratio)
    # The same through noise objects asked for a zero-size change.
    zero = Gaussian(0.3).likelihood_ratio(0.0) * Substitution(0.1, 100).likelihood_ratio(0)
    assert lower_bound(p, zero) == p


@SETTINGS
@given(discrete_noises, st.integers(1, 6), st.floats(0.01, 3.0), probabilities)
def test_joint_never_below_sequential(noise, r, gamma, p):
    continuous = LikelihoodRatio.identity(gamma)
    discrete = noise.likelihood_ratio(r)
    assert lower_bound(p, continuous * discrete) >= sequential_bound(p, continuous, discrete) \
        - 1e-12


@settings(max_examples=25, deadline=None)
@given(discrete_noises, st.lists(st.floats(0.5, 1 - 1e-9), min_size=1, max_size=5),
       st.floats(0.05, 2.0))
def test_frontier_non_increasing_and_certified(noise, ps, sigma):
    frontier = certified_frontier(ps, sigma=sigma, discrete=noise, max_tokens=8)
    for i, p in enumerate(ps):
        radii = frontier.l2_radius[i, : frontier.max_tokens[i] + 1]
        assert np.all(np.diff(radii) <= 0)
        for r, eps in enumerate(radii):
            # Certified at the reported radius; not certified a little beyond it.
            ratio = noise.likelihood_ratio(r)
            assert lower_bound(p, ratio * Gaussian(sigma).likelihood_ratio(eps)) > 0.5
            assert lower_bound(p, ratio * Gaussian(sigma).likelihood_ratio(
                eps * (1 + 1e-6) + 1e-9)) <= 0.5 + 1e-9


@pytest.mark.parametrize("keep", [0.02, 0.05, 0.3])
def test_fast_frontier_matches_bisection(keep):
    """The Newton + witness path must be accurate, not only sound: a witness proved far
    inside the certified region would under-report the radius."""
    from hybridcert.certificate.frontier import bisect_gamma

    noise = Substitution(keep, 30522)
    p = np.array([0.6, 0.8, 0.95, 0.99, 0.999, 0.9999, 0.99993412, 0.999999, 1 - 1e-9])
    frontier = certified_frontier(p, sigma=1.0, discrete=noise, max_tokens=12)
    for r in range(13):
        rows = np.flatnonzero(frontier.max_tokens >= r)
        if rows.size == 0:
            break
        ratio = noise.likelihood_ratio(r) if r else LikelihoodRatio.identity()
        exact = bisect_gamma(p[rows], ratio)
        got = frontier.l2_radius[rows, r]
        assert np.all(got <= exact * (1 + 1e-9) + 1e-12)
        assert np.allclose(got, exact, rtol=1e-6)
