"""Rules (majority, flag, benign), threshold certificates and threshold probabilities.

References: closed forms (Cohen at r = 0, masking, one substituted token), the brute-force
LP of tests/certificate/brute_force.py, and 50-digit mpmath bounds (tests/certificate/
exact.py) on random cases including the hybrid-smoothing paper's tau = 4.6e-5 and pA near 1.
"""

import random

import mpmath as mp
import numpy as np
import pytest
from scipy.stats import norm

from hybridcert import Gaussian, LikelihoodRatio, Mask, Substitution, certified_frontier
from hybridcert.certificate import (
    MAJORITY,
    Rule,
    certified_gamma,
    is_certified,
    threshold_probability,
)
from hybridcert.certificate.fast import newton_gamma
from hybridcert.certificate.frontier import bisect_gamma
from tests.certificate import exact as E
from tests.certificate.brute_force import (
    greedy_lower_bound,
    greedy_upper_bound,
    joint_outcomes,
)

TAU = 4.6e-5


@pytest.mark.parametrize(("make", "match"), [
    (lambda: Rule("vote"), "rule kind must be one of majority, flag, benign"),
    (lambda: Rule("majority", 0.3), "the majority rule takes no tau"),
    (lambda: Rule.flag(None), r"the flag rule needs a threshold tau in \(0, 1\)"),
    (lambda: Rule.flag(0.0), r"tau must lie in \(0, 1\)"),
    (lambda: Rule.benign(1.0), r"tau must lie in \(0, 1\)"),
    (lambda: Rule.flag(float("nan")), "tau must lie"),
    (lambda: Rule.flag(True), "needs a threshold tau"),
    (lambda: Rule.flag("x"), "tau must be a number"),
    (lambda: is_certified(0.9, LikelihoodRatio.identity(), rule="flag"),
     "rule must be a hybridcert.certificate.Rule"),
    (lambda: is_certified(None, LikelihoodRatio.identity(), rule=Rule.benign(0.1)),
     "p_upper is required by the benign rule"),
    (lambda: is_certified(1.5, LikelihoodRatio.identity(), rule=Rule.benign(0.1)),
     r"p_upper must lie in \[0, 1\]"),
    (lambda: certified_gamma(0.9, LikelihoodRatio.identity(0.3)),
     "needs a discrete-only ratio"),
])
def test_bad_rules_and_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_rule_levels():
    assert Rule.majority() == MAJORITY and MAJORITY.level == 0.5
    assert Rule.flag(0.25).level == 0.25 and not Rule.flag(0.25).reads_upper
    assert Rule.benign(0.25).reads_upper


# -- closed forms ---------------------------------------------------------------------------

@pytest.mark.parametrize("p", [1e-4, 0.01, 0.5, 0.9, 1 - 1e-9, 1 - 1e-13])
@pytest.mark.parametrize("tau", [TAU, 0.3])
def test_flag_radius_at_zero_tokens_is_closed_form(p, tau):
    """eps*_tau = sigma (Phi^-1(pc) - Phi^-1(tau)), Cohen's formula with 1/2 -> tau."""
    expected = 0.5 * (norm.isf(1 - p) - norm.ppf(tau))
    frontier = certified_frontier(p, sigma=0.5, discrete=None, rule=Rule.flag(tau))
    if expected < 0:
        assert frontier.max_tokens[0] == -1
        return
    got = frontier.l2_radius[0, 0]
    assert got <= expected * (1 + 1e-12)
    assert got == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("q", [1e-300, 1e-30, 1e-9, 1e-5, 0.01])
@pytest.mark.parametrize("tau", [TAU, 0.3])
def test_benign_radius_at_zero_tokens_is_closed_form(q, tau):
    """upper(q; gamma) = Phi(Phi^-1(q) + gamma) < tau  iff  gamma < Phi^-1(tau) - Phi^-1(q)."""
    expected = 0.5 * (norm.ppf(tau) - norm.ppf(q))
    frontier = certified_frontier(q, sigma=0.5, discrete=None, rule=Rule.benign(tau))
    if expected <= 0:
        assert frontier.max_tokens[0] == -1
        return
    got = frontier.l2_radius[0, 0]
    assert got <= expected * (1 + 1e-12)
    assert got == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("p", [0.5, 0.9, 0.999, 1 - 1e-10])
@pytest.mark.parametrize("r", [1, 3])
def test_masking_flag_radius_closed_form(p, r):
    """lower(p) = m Phi(Phi^-1(1 - (1 - p)/m) - gamma) >= tau with m = (1 - a)^r."""
    keep, tau = 0.1, 0.01
    m = (1 - keep) ** r
    frontier = certified_frontier(p, sigma=1.0, discrete=Mask(keep), max_tokens=r,
                                  rule=Rule.flag(tau))
    if p <= 1 - m + tau * 0:   # lower(p) = 0 below 1 - m: nothing certified at r
        assert frontier.max_tokens[0] < r
        return
    expected = norm.isf((1 - p) / m) - norm.ppf(tau / m)    # isf: exact for p near 1
    got = frontier.l2_radius[0, r]
    assert got <= expected * (1 + 1e-12) + 1e-15
    assert got == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("q", [1e-6, 0.01, 0.1])
def test_masking_benign_radius_closed_form(q):
    """upper(q) = (1 - m) + m Phi(Phi^-1(q/m) + gamma) < tau (the ratio-infinity mass
    1 - m is always reachable)."""
    keep, tau, r = 0.1, 0.3, 1
    m = (1 - keep) ** r
    expected = norm.ppf((tau - (1 - m)) / m) - norm.ppf(q / m)
    frontier = certified_frontier(q, sigma=1.0, discrete=Mask(keep), max_tokens=r,
                                  rule=Rule.benign(tau))
    got = frontier.l2_radius[0, r]
    assert got <= expected * (1 + 1e-12)
    assert got == pytest.approx(expected, rel=1e-8)
    # With the paper's tau, masking 10% of positions can never clear a benign input.
    assert certified_frontier(q, sigma=1.0, discrete=Mask(keep), max_tokens=1,
                              rule=Rule.benign(TAU)).max_tokens[0] < 1


@pytest.mark.parametrize(("keep", "vocab"), [(0.75, 30522), (0.2, 256), (0.05, 10**6)])
def test_one_token_flag_threshold_is_tau_plus_keep_minus_beta(keep, vocab):
    """At gamma = 0, lower(p) = p - (a - beta) for a <= p <= 1 - beta (r = 1)."""
    beta = (1 - keep) / (vocab - 1)
    tau = 0.01
    ratio = Substitution(keep, vocab).likelihood_ratio(1)
    p_star = threshold_probability(ratio, Rule.flag(tau))
    assert p_star == pytest.approx(tau + keep - beta, rel=1e-10)
    assert is_certified(p_star, ratio, rule=Rule.flag(tau))[0]
    assert not is_certified(np.nextafter(p_star, 0), ratio, rule=Rule.flag(tau))[0]


# -- threshold probabilities ----------------------------------------------------------------

LEE = [(256, 0.2, 1, 0.69686274509803921569), (2, 0.8, 1, 0.875), (2, 0.8, 2, 0.96875)]


@pytest.mark.parametrize(("vocab", "keep", "r", "threshold"), LEE)
def test_majority_threshold_probability_is_lee_et_al(vocab, keep, r, threshold):
    ratio = Substitution(keep, vocab).likelihood_ratio(r)
    p_star = threshold_probability(ratio)
    assert threshold < p_star <= threshold * (1 + 1e-11)   # the tie itself is not certified
    assert is_certified(p_star, ratio)[0]
    assert not is_certified(np.nextafter(p_star, 0), ratio)[0]


@pytest.mark.parametrize("gamma", [0.0, 0.3, 2.0])
def test_threshold_probabilities_with_a_gaussian_shift(gamma):
    ratio = LikelihoodRatio.identity(gamma)
    flag = threshold_probability(ratio, Rule.flag(TAU))
    assert flag == pytest.approx(norm.cdf(norm.ppf(TAU) + gamma), rel=1e-9)
    assert is_certified(flag, ratio, rule=Rule.flag(TAU))[0]
    assert not is_certified(np.nextafter(flag, 0), ratio, rule=Rule.flag(TAU))[0]
    benign = threshold_probability(ratio, Rule.benign(TAU))
    assert benign == pytest.approx(norm.cdf(norm.ppf(TAU) - gamma), rel=1e-9)
    assert is_certified(benign, ratio, rule=Rule.benign(TAU))[0]
    assert not is_certified(np.nextafter(benign, 1), ratio, rule=Rule.benign(TAU))[0]
    majority = threshold_probability(ratio)
    assert majority == pytest.approx(norm.cdf(gamma), rel=1e-9, abs=1e-11)


def test_threshold_probability_when_nothing_certifies():
    never = Substitution(1.0, 100).likelihood_ratio(1)        # not noised: ratio 0 / inf
    assert threshold_probability(never) == np.inf
    assert threshold_probability(never, Rule.flag(0.1)) == np.inf
    assert threshold_probability(Mask(0.5).likelihood_ratio(1), Rule.benign(0.3)) == -np.inf


def test_threshold_probability_against_high_precision():
    """Flag and benign thresholds bracket the exact (50-digit) crossing."""
    keep, vocab, r = 0.3, 50, 3
    ratio = Substitution(keep, vocab).likelihood_ratio(r)
    regions = E.substitution(keep, vocab, r)
    p_star = threshold_probability(ratio, Rule.flag(TAU))
    assert E.lower(p_star, regions) >= TAU
    assert E.lower(p_star * (1 - 1e-9), regions) < TAU
    q_star = threshold_probability(ratio, Rule.benign(TAU))
    assert E.upper(q_star, regions) < TAU
    assert E.upper(q_star * (1 + 1e-9), regions) >= TAU


# -- never certified where the exact bound misses tau ---------------------------------------

def _random_threshold_cases(seed, count):
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        kind = rng.choice(["substitution", "substitution", "mask"])
        vocab = rng.choice([3, 50, 30522, 10**6])
        keep = rng.choice([0.75, rng.uniform(1 / vocab + 0.01, 0.9)]) if kind == "substitution" \
            else rng.uniform(0.01, 0.5)
        tau = rng.choice([TAU, TAU, 10 ** rng.uniform(-8, -0.5)])
        p = rng.choice([1 - 10 ** rng.uniform(-14, -1), rng.random(), 10 ** rng.uniform(-6, 0)])
        out.append((kind, keep, vocab, tau, p))
    return out


def _noise(kind, keep, vocab):
    return Mask(keep) if kind == "mask" else Substitution(keep, vocab)


def _regions(kind, keep, vocab, r):
    return E.mask(keep, r) if kind == "mask" else E.substitution(keep, vocab, r)


@pytest.mark.parametrize(("kind", "keep", "vocab", "tau", "p"), _random_threshold_cases(3, 60))
def test_flag_frontier_never_certifies_below_tau(kind, keep, vocab, tau, p):
    """The flag frontier certifies r at radius 0 exactly where the exact bound reaches tau
    at r and every smaller budget (ties within 1e-9 relative excepted)."""
    frontier = certified_frontier(p, sigma=0.7, discrete=_noise(kind, keep, vocab),
                                  max_tokens=6, rule=Rule.flag(tau))
    reached = True
    for r in range(7):
        exact = E.lower(p, _regions(kind, keep, vocab, r))
        near = abs(exact - tau) <= 1e-9 * tau
        reached = reached and exact >= tau
        if frontier.max_tokens[0] >= r:
            assert reached, (r, mp.nstr(exact, 15))
            assert frontier.l2_radius[0, r] >= 0
        elif not near:
            assert not reached, (r, mp.nstr(exact, 15))


@pytest.mark.parametrize(("kind", "keep", "vocab", "tau", "p"), _random_threshold_cases(4, 60))
def test_benign_frontier_never_certifies_at_or_above_tau(kind, keep, vocab, tau, p):
    q = min(p, 1 - p) * 1e-3     # small upper bounds: where the benign side can certify
    frontier = certified_frontier(q, sigma=0.7, discrete=_noise(kind, keep, vocab),
                                  max_tokens=6, rule=Rule.benign(tau))
    below = True
    for r in range(7):
        exact = E.upper(q, _regions(kind, keep, vocab, r))
        near = abs(exact - tau) <= 1e-9 * tau
        below = below and exact < tau
        if frontier.max_tokens[0] >= r:
            assert below, (r, mp.nstr(exact, 15))
        elif not near:
            assert not below, (r, mp.nstr(exact, 15))


@pytest.mark.parametrize("p", [0.8, 0.99, 1 - 1e-8, 1 - 1e-12])
def test_flag_at_the_reported_radius_against_high_precision(p):
    """At every reported radius the 50-digit bound is >= tau, and 1e-6 beyond it < tau."""
    keep, vocab = 0.75, 30522
    noise = Substitution(keep, vocab)
    frontier = certified_frontier(p, sigma=1.0, discrete=noise, max_tokens=3,
                                  rule=Rule.flag(TAU))
    assert frontier.max_tokens[0] >= 1
    for r in range(frontier.max_tokens[0] + 1):
        eps = frontier.l2_radius[0, r]
        regions = E.substitution(keep, vocab, r)
        assert E.lower(p, regions, eps) >= TAU
        assert E.lower(p, regions, eps * (1 + 1e-6)) < TAU


# -- single-block threshold frontier against the brute-force LP ------------------------------

@pytest.mark.parametrize(("kind", "keep", "vocab", "r"), [("substitution", 0.5, 3, 2),
                                                         ("substitution", 0.3, 5, 1),
                                                         ("mask", 0.1, 2, 2)])
@pytest.mark.parametrize("rule", [Rule.flag(0.02), Rule.benign(0.25)])
def test_threshold_frontier_against_the_linear_program(kind, keep, vocab, r, rule):
    noise = _noise(kind, keep, vocab)
    ps = [0.3, 0.8, 0.99] if rule.kind == "flag" else [1e-5, 1e-3, 0.03]
    frontier = certified_frontier(ps, sigma=1.0, discrete=noise, max_tokens=r, rule=rule)
    name = "mask" if kind == "mask" else "substitution"
    certified = 0
    for i, p in enumerate(ps):
        if frontier.max_tokens[i] < r:
            continue
        certified += 1
        eps = frontier.l2_radius[i, r]
        for gamma, should_hold in ((eps, True), (eps * 1.01 + 0.03, False)):
            mu, nu = joint_outcomes(name, keep, vocab, r, gamma, cells=600)
            if rule.reads_upper:
                holds = greedy_upper_bound(p, mu, nu) < rule.level
            else:
                holds = greedy_lower_bound(p, mu, nu) >= rule.level
            assert holds == should_hold, (p, gamma)
    assert certified >= 1


# -- the fast path ------------------------------------------------------------------------

@pytest.mark.parametrize("rule", [Rule.flag(TAU), Rule.flag(0.2), Rule.benign(TAU),
                                  Rule.benign(0.2)])
@pytest.mark.parametrize(("keep", "vocab"), [(0.75, 30522), (0.25, 30522), (0.4, 5)])
def test_threshold_fast_path_is_proven_and_accurate(rule, keep, vocab):
    """Newton + witness proves (nearly) every input, within 1e-6 of the bisection."""
    rng = np.random.default_rng(0)
    if rule.reads_upper:
        p = 10 ** rng.uniform(-12, np.log10(rule.level) - 0.01, 200)
    else:
        p = np.concatenate([rng.uniform(rule.level, 1, 100), 1 - 10 ** rng.uniform(-13, -1,
                                                                                  100)])
    noise = Substitution(keep, vocab)
    proven_total, total = 0, 0
    for r in range(0, 4):
        ratio = noise.likelihood_ratio(r)
        ok = is_certified(p, ratio, rule=rule)
        if not ok.any():
            break
        sub = p[ok]
        found, proven = newton_gamma(sub, ratio, rule)
        exact = bisect_gamma(sub, ratio, rule=rule)
        assert np.all(found[proven] <= exact[proven] * (1 + 1e-10) + 1e-15)
        assert np.allclose(found[proven], exact[proven], rtol=1e-6, atol=1e-12)
        proven_total += proven.sum()
        total += sub.size
    assert total > 0
    assert proven_total >= 0.95 * total


def test_certified_gamma_special_values():
    ratio = Substitution(0.2, 256).likelihood_ratio(1)
    flag = certified_gamma([0.1, 1.0, 0.0], ratio, rule=Rule.flag(0.05))
    assert np.isnan(flag[0]) and np.isinf(flag[1]) and np.isnan(flag[2])
    benign = certified_gamma([0.0, 1e-9, 1.0], ratio, rule=Rule.benign(0.05))
    assert np.isinf(benign[0]) and 0 < benign[1] < np.inf and np.isnan(benign[2])
    majority = certified_gamma([0.9, 0.6], ratio, p_upper=[0.0, 0.5])
    assert np.isinf(majority[0]) and np.isnan(majority[1])


def test_frontier_flag_radius_matches_gaussian_units():
    sigma = 0.25
    frontier = certified_frontier(0.999, sigma=sigma, discrete=Substitution(0.75, 30522),
                                  max_tokens=3, rule=Rule.flag(TAU))
    ratio = Substitution(0.75, 30522).likelihood_ratio(2)
    eps = frontier.l2_radius[0, 2]
    assert is_certified(0.999, ratio * Gaussian(sigma).likelihood_ratio(eps),
                        rule=Rule.flag(TAU))[0]
    assert not is_certified(0.999, ratio * Gaussian(sigma).likelihood_ratio(eps * 1.0001),
                            rule=Rule.flag(TAU))[0]
