"""The stopping rules of hybridcert.sequential.rules, checked against independent
computations: the mixture against numerical integration, the error of the per-draw boundary
summed exactly over the stopping boundary (dynamic programming over draws and counts), the
error rate over many seeded Bernoulli streams (with a negative control that peeks without
spending alpha and must be caught), and stopping draws in closed form.

Monte Carlo margin: each run errs independently with probability <= alpha, so the number of
wrong runs among RUNS is stochastically below Binomial(RUNS, alpha); the tests allow its
1 - 1e-6 quantile (see test_validity.py).
"""

import math

import mpmath
import numpy as np
import pytest
from scipy.stats import beta, binom, norm

from hybridcert.sequential.baselines import BonferroniLooks, FixedN, doubling_looks
from hybridcert.sequential.boundaries import Mixture, spending_boundary
from hybridcert.sequential.bounds import clopper_pearson, schedule_points
from hybridcert.sequential.rules import (
    ABOVE,
    ABSTAIN,
    BELOW,
    BoundedDecision,
    DecisionTest,
    RadiusTest,
    overlap_factor,
)
from hybridcert.smoothing import ABSTAIN as LIBRARY_ABSTAIN

RUNS, ALPHA = 1000, 0.1
ALLOWED = int(binom.ppf(1 - 1e-6, RUNS, ALPHA))
N_MAX = 2000


def stream(seed, p, n=N_MAX, hit=1, miss=0):
    """Labels in draw order: ``hit`` with probability p, else ``miss``."""
    return np.where(np.random.default_rng(seed).random(n) < p, hit, miss).astype(np.int64)


def drive(rule, labels, rng=None):
    """Feed the rule what it asks for (or random batch sizes with ``rng``) until done."""
    pos = 0
    while not rule.done:
        k = rule.next_draws() if rng is None else int(rng.integers(1, 300))
        rule.observe(labels[pos:pos + k])
        pos += k
    return rule


def crossing_probability(boundary, p):
    """Exact P_p(count >= boundary[n] at some n): full dynamic programming over counts."""
    probs = np.array([1.0])
    crossed = 0.0
    for n in range(1, len(boundary)):
        nxt = np.zeros(n + 1)
        nxt[:-1] += probs * (1 - p)
        nxt[1:] += probs * p
        probs = nxt
        b = boundary[n]
        if b <= n:
            crossed += probs[b:].sum()
            probs[b:] = 0.0
    return crossed


# -- the mixture ------------------------------------------------------------------------------
@pytest.mark.parametrize("n, k, floor, w, a, b", [
    (10, 9, 0.7, 0.5, 1.0, 1.0), (40, 40, 0.9, 0.3, 1.0, 1.0), (200, 150, 0.6, 0.5, 0.5, 2.0),
    (25, 3, 0.5, 0.5, 1.0, 1.0), (60, 51, 0.0, 0.0, 2.0, 1.0)])
def test_mixture_matches_numerical_integration(n, k, floor, w, a, b):
    """log Q(n, k) in closed form (Beta functions) equals the integral of q^k (1-q)^(n-k)
    against the prior, computed by mpmath quadrature at 30 digits."""
    mpmath.mp.dps = 30
    dens = lambda q: q ** (a - 1) * (1 - q) ** (b - 1)  # noqa: E731
    pieces = mpmath.linspace(floor, 1, 41)           # the integrand is peaked: subdivide
    mass = mpmath.quad(dens, pieces)
    part = mpmath.quad(lambda q: q ** k * (1 - q) ** (n - k) * dens(q), pieces) / mass
    expected = (1 - w) * part + (w if k == n else 0)
    got = Mixture(floor, w, a, b).log_q(n, k)
    assert float(got) == pytest.approx(float(mpmath.log(expected)), rel=1e-10, abs=1e-10)


def test_schedule_and_bounds():
    s = schedule_points(2000)
    assert list(s[:256]) == list(range(1, 257)) and s[-1] == 2000
    assert np.all(np.diff(s) >= 1) and np.all(s[257:] <= np.ceil(s[256:-1] * 1.005) + 1)
    low, high = clopper_pearson(30, 40, 0.01)     # the binomial tails at the ends are alpha

    def tail(p, ks):
        return float(sum(mpmath.binomial(40, i) * mpmath.mpf(p) ** i * (1 - mpmath.mpf(p))
                         ** (40 - i) for i in ks))

    assert tail(low, range(30, 41)) == pytest.approx(0.01, rel=1e-8)
    assert tail(high, range(0, 31)) == pytest.approx(0.01, rel=1e-8)
    assert doubling_looks(100, 1000) == [100, 200, 400, 800, 1000]
    assert LIBRARY_ABSTAIN == ABSTAIN


# -- exact worst case -------------------------------------------------------------------------
@pytest.mark.parametrize("t, alpha", [(0.6, 0.05), (0.765, 0.001), (0.921, 0.001),
                                      (0.99, 0.01), (0.5 + 1e-9, 0.05)])
def test_exact_worst_case_at_the_threshold(t, alpha):
    """Majority mode, true pA = p*: the probability of a wrong certification (class A
    claimed above p*, or the other class claimed above p* while its rate is 1 - p*), summed
    exactly over the per-draw stopping boundary, is <= alpha.  Giving up is ignored (it can
    only remove crossings), so this bounds every batching and every futility setting."""
    rule = DecisionTest([t], alpha, N_MAX)
    boundary = rule.per_draw_boundary(0, 0)
    assert np.array_equal(boundary, rule.per_draw_boundary(0, 1))     # symmetric classes
    wrong = crossing_probability(boundary, t) + crossing_probability(boundary, 1 - t)
    assert wrong <= alpha
    # ... and over every true rate in between (both classes below p*)
    for p in np.linspace(1 - t, t, 9):
        assert crossing_probability(boundary, p) + crossing_probability(boundary, 1 - p) \
            <= alpha
    if t > 0.6:
        assert wrong > 0.5 * alpha        # the budget is used, not wasted


def test_exact_worst_case_of_a_grid_and_a_detector():
    """Several thresholds at once: a wrong claim at true p needs the boundary of the lowest
    threshold >= p to be crossed (boundaries are ordered), so the exact error at p = each
    threshold is one crossing probability per class.  Detector: both sides at once."""
    grid = [0.5 + 1e-9, 0.6, 0.69, 0.84, 0.93, 0.98]
    rule = DecisionTest(grid, 0.05, N_MAX)
    bounds = [rule.per_draw_boundary(j, 0) for j in range(len(grid))]
    for lower, upper in zip(bounds, bounds[1:], strict=False):
        assert np.all(lower <= upper)
    for j, t in enumerate(grid):
        assert crossing_probability(bounds[j], t) + crossing_probability(bounds[0], 1 - t) \
            <= 0.05
    det = DecisionTest([0.05, 0.2], 0.05, N_MAX, mode="detector", target_class=1,
                       benign_thresholds=[0.02, 0.1])
    flag, benign = det.per_draw_boundary(0, 0), det.per_draw_boundary(1, 1)   # p > .05 | p < .1
    for p in (0.02, 0.05, 0.075, 0.1, 0.2):
        wrong = (crossing_probability(flag, p) if p <= 0.05 else 0.0) + \
            (crossing_probability(benign, 1 - p) if p >= 0.1 else 0.0)
        assert wrong <= 0.05


# -- Monte Carlo validity with a negative control ---------------------------------------------
def _peeking_claims(labels, t, alpha, hit=1):
    """Negative control: Clopper–Pearson at alpha at every schedule point, no alpha spent on
    the looks (the mistake the confidence sequence avoids)."""
    n = schedule_points(len(labels))
    k = np.cumsum(labels == hit)[n - 1]
    low = np.where(k > 0, beta.ppf(alpha, np.maximum(k, 1), n - k + 1), 0.0)
    return bool((low > t).any())


@pytest.mark.parametrize("mode, t", [("majority", 0.8), ("flag", 0.3), ("benign", 0.3)])
def test_error_rate_at_the_threshold_and_negative_control(mode, t):
    """True rate exactly at the threshold (the worst case): claims are wrong by definition.
    The rule's wrong claims stay below the binomial margin; the peeking control's do not."""
    p = t
    kwargs = {} if mode == "majority" else {"mode": mode, "target_class": 1}
    wrong = control = 0
    for seed in range(RUNS):
        labels = stream(seed, p)
        rule = DecisionTest([t], ALPHA, N_MAX, **kwargs)
        rule.observe(labels)
        wrong += bool(rule.certified[0])
        if mode == "benign":          # the control's mirror: upper bound below t
            control += _peeking_claims(1 - labels, 1 - t, ALPHA)
        else:
            control += _peeking_claims(labels, t, ALPHA)
    assert wrong <= ALLOWED
    assert control > ALLOWED           # the margin catches a rule that peeks for free


def test_grid_error_rate_and_class_choice():
    """Grid of thresholds, class chosen from the draws, true pA at one threshold: a wrong
    run claims that threshold or above, or claims the other class."""
    grid = [0.5 + 1e-9, 0.6, 0.7, 0.8, 0.9]
    wrong = 0
    for seed in range(RUNS):
        rule = DecisionTest(grid, ALPHA, N_MAX)
        rule.observe(stream(seed, 0.7, hit=0, miss=1))      # class 0 at 0.7
        wrong += rule.label == 1 or bool(rule.certified[2:].any())
    assert wrong <= ALLOWED


def test_detector_error_rate():
    """Both sides at once, true p_c = 0.1 between a flag threshold 0.1 and a benign
    threshold 0.1: any claim is wrong."""
    wrong = 0
    for seed in range(RUNS):
        rule = DecisionTest([0.1], ALPHA, N_MAX, num_classes=3, mode="detector",
                            target_class=2)
        rule.observe(np.where(stream(seed, 0.1) == 1, 2, seed % 2))
        wrong += bool(rule.certified[0])
    assert wrong <= ALLOWED


def test_clear_answers_are_found():
    """Power: far from the threshold the rule decides, right, and quickly."""
    for seed in range(50):
        up = drive(DecisionTest([0.7], 0.001, 100_000), stream(seed, 0.95, 100_000))
        assert up.label == 1 and up.certified[0] and up.queries < 300
        down = drive(DecisionTest([0.7], 0.001, 100_000), stream(seed, 0.5, 100_000))
        assert down.label == ABSTAIN and not down.certified[0] and down.queries < 300
        flag = drive(DecisionTest([0.1], 0.001, 100_000, mode="detector", target_class=1),
                     stream(seed, 0.02, 100_000))
        assert flag.outcome[0] == BELOW and flag.label == 0 and flag.p_upper < 0.1


# -- closed forms -------------------------------------------------------------------------------
def _first_all_success_crossing(t, level, w=0.5):
    """Smallest n with E_t(n, n) >= 1/level, E by mpmath quadrature of the mixture."""
    mpmath.mp.dps = 30
    for n in range(1, 100_000):
        part = mpmath.quad(lambda q, n=n: q ** n, [t, 1]) / (1 - t)
        e = (w + (1 - w) * part) / mpmath.mpf(t) ** n
        if e >= 1 / mpmath.mpf(level):
            return n
    return None


@pytest.mark.parametrize("t", [0.765, 0.99])
def test_always_right_model_stops_in_closed_form(t):
    """All draws the same class: flag mode (one arm, level alpha) certifies at the first
    schedule point (every draw up to 256, then every 0.5%) where the mixture reaches
    1/alpha.  Majority pays at most a factor
    2 in level for choosing the class: p* = 0.99, alpha = 0.001 takes about 760 draws (the
    previous rule: 100 selection + the 1,600 look)."""
    alpha = 0.001
    n_flag = _first_all_success_crossing(t, alpha)
    points = schedule_points(100_000)
    flag = drive(DecisionTest([t], alpha, 100_000, mode="flag", target_class=1),
                 np.ones(100_000, dtype=np.int64))
    assert flag.certified[0] and flag.queries == points[points >= n_flag][0]
    maj = drive(DecisionTest([t], alpha, 100_000), np.ones(100_000, dtype=np.int64))
    assert maj.label == 1 and maj.certified[0]
    assert maj.received == maj.queries and (maj.looks == 1 or t > 0.9)
    assert n_flag <= maj.queries <= _first_all_success_crossing(t, alpha / 2)
    if t == 0.99:
        assert maj.queries < 800
        old = drive(BonferroniLooks(alpha, 100_000, [t]), np.ones(100_100, dtype=np.int64))
        assert old.certified[0] and old.queries == 100 + 1600


def test_unreachable_targets_are_given_up_at_once():
    """p* beyond what the cap can show (alpha^(1/n_max) < p*), or inf: given up at the first
    draw, whatever the stream."""
    alpha, n_max = 0.01, 1000
    t = alpha ** (1 / n_max) + 1e-4
    for thresholds in ([t], [np.inf], [t, np.inf]):
        rule = DecisionTest(thresholds, alpha, n_max)
        rule.observe(np.ones(n_max, dtype=np.int64))
        assert rule.done and rule.queries == 1 and not rule.certified.any()
        assert rule.label == ABSTAIN


def test_batching_does_not_change_anything():
    """Decisions, draws used and bounds depend on the label sequence only."""
    rng = np.random.default_rng(7)
    for seed, p in enumerate([0.62, 0.7, 0.8, 0.95, 0.999]):
        labels = stream(seed, p, 100_000)
        whole = DecisionTest([0.6, 0.69, 0.84, 0.95], 0.001, 100_000)
        whole.observe(labels)
        asked = drive(DecisionTest([0.6, 0.69, 0.84, 0.95], 0.001, 100_000), labels)
        random = drive(DecisionTest([0.6, 0.69, 0.84, 0.95], 0.001, 100_000), labels, rng)
        for other in (asked, random):
            assert other.queries == whole.queries and other.label == whole.label
            assert np.array_equal(other.certified, whole.certified)
            assert np.array_equal(other.decided_at, whole.decided_at)
            assert other.p_lower == whole.p_lower
        assert asked.received == asked.queries         # next_draws never overshoots


def test_reported_bound_is_covered():
    """p_lower is a confidence-sequence bound: below the true rate in all but ~alpha runs,
    and at least every certified threshold."""
    misses = 0
    for seed in range(RUNS):
        rule = DecisionTest([0.6, 0.7], ALPHA, N_MAX)
        rule.observe(stream(seed, 0.75))
        misses += rule.p_lower >= 0.75
        assert rule.p_lower >= max([0.0] + [t for t, c in zip([0.6, 0.7], rule.certified,
                                                              strict=True) if c])
    assert misses <= ALLOWED


def test_overlap_factor():
    """Two classes: floor 1/2 costs exactly a factor 2; a floor far above 1/2 with a late
    first claim costs almost nothing; more classes: 1 + (K - 1) g(1/2)."""
    assert overlap_factor([0.5, 0.5], [10, 10], True) == pytest.approx(2.0)
    assert overlap_factor([0.9, 0.9], [60, 60], True) < 1 + 1e-12
    g = math.exp(-30 * (0.8 * math.log(1.6) + 0.2 * math.log(0.4)))
    assert overlap_factor([0.8] * 3, [30] * 3, False) == pytest.approx(1 + 2 * g)


def test_fixed_n_and_the_previous_rule_closed_forms():
    """FixedN is one Clopper–Pearson bound after n0 selection draws; the previous rule stops
    at its first look whose alpha/K bound clears the target."""
    labels = stream(3, 0.9, 10_100)
    fixed = drive(FixedN([0.85], 0.001, 10_000), labels)
    k = int((labels[100:] == 1).sum())
    assert fixed.queries == 10_100 and fixed.p_lower == clopper_pearson(k, 10_000, 0.001)[0]
    assert fixed.certified[0] == (fixed.p_lower > 0.85)
    looks = doubling_looks(100, 51_200)
    level = 0.01 / len(looks)
    radius = [0.5 * norm.ppf(level ** (1 / n)) for n in looks]
    eps = 1.3
    old = drive(BonferroniLooks(0.01, 51_200, [norm.cdf(eps / 0.5)]),
                np.ones(51_300, dtype=np.int64))
    first = next(n for n, r in zip(looks, radius, strict=True) if r > eps)
    assert old.certified[0] and old.queries == 100 + first


def test_radius_mode_validity_and_stop():
    """Cohen radius sigma * Phi^-1(p) at r = 0: the reported radius stays below the true one
    (margin 0.5, sigma 0.5: true pA = Phi(1)) in all but ~alpha runs, and the rule stops
    before the cap once the cap could add at most the tolerance."""
    sigma, p_true = 0.5, norm.cdf(1.0)

    def frontier(p):
        return np.array([sigma * norm.ppf(p) if p > 0.5 else -np.inf])

    over = 0
    queries = []
    for seed in range(RUNS // 4):
        rule = drive(RadiusTest(frontier, ALPHA, 20_000, 0.05), stream(seed, p_true, 20_000))
        queries.append(rule.queries)
        if rule.label != ABSTAIN:
            over += rule.label != 1 or frontier(rule.p_lower)[0] >= sigma * 1.0
    assert over <= int(binom.ppf(1 - 1e-6, RUNS // 4, ALPHA))
    assert np.median(queries) < 20_000
    # always-right model: stops at the first look whose frontier is within the tolerance of
    # what the cap could show (the cap's bound at an upper bound of 1: all successes)
    rule = drive(RadiusTest(frontier, 0.001, 20_000, 0.3), np.ones(20_000, dtype=np.int64))
    best = frontier(rule.lower_bound(20_000, 20_000))[0]
    looks = [n for n in rule.looks_at if n <= rule.queries]
    assert best - frontier(rule.lower_bound(rule.queries, rule.queries))[0] <= 0.3
    assert best - frontier(rule.lower_bound(looks[-2], looks[-2]))[0] > 0.3


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="alpha"):
        DecisionTest([0.7], 1.5, 100)
    with pytest.raises(ValueError, match="thresholds"):
        DecisionTest([0.3], 0.01, 100)
    with pytest.raises(ValueError, match="thresholds"):
        DecisionTest([], 0.01, 100)
    with pytest.raises(ValueError, match="target_class"):
        DecisionTest([0.3], 0.01, 100, mode="flag")
    with pytest.raises(ValueError, match="mode"):
        DecisionTest([0.7], 0.01, 100, mode="vote")
    with pytest.raises(ValueError, match="n_max"):
        DecisionTest([0.7], 0.01, 0)
    with pytest.raises(ValueError, match="labels"):
        DecisionTest([0.7], 0.01, 100).observe(np.array([0, 2]))
    with pytest.raises(ValueError, match="labels"):
        DecisionTest([0.7], 0.01, 100).observe(np.array([0.5]))
    with pytest.raises(ValueError, match="tolerance"):
        RadiusTest(lambda p: np.zeros(1), 0.01, 100, 0.0)
    with pytest.raises(ValueError, match="frontier"):
        RadiusTest(None, 0.01, 100, 0.1)
    with pytest.raises(ValueError, match="boundary"):
        DecisionTest([0.7], 0.01, 100, boundary="stitched")
    with pytest.raises(ValueError, match="price"):
        DecisionTest([0.7], 0.01, 100, price=-1)
    with pytest.raises(ValueError, match="choice_share"):
        DecisionTest([0.7], 0.01, 100, boundary="spending", choice_share=1.0)
    with pytest.raises(ValueError, match="spending"):
        RadiusTest(lambda p: np.zeros(1), 0.01, 100, 0.1, boundary="spending")
    with pytest.raises(ValueError, match="alpha must be >= 1e-200 with boundary 'spending'"):
        DecisionTest([0.7], 1e-320, 100, boundary="spending")
    det = DecisionTest([0.2], 0.01, 100, mode="detector", target_class=0)
    assert det.outcome[0] not in (ABOVE, BELOW)


def test_scalar_and_vector_evidence_agree():
    m = Mixture(0.7, 0.4, 1.5, 0.8)
    for n, k, p in [(10, 10, 0.7), (100, 90, 0.8), (5000, 4000, 0.75), (30, 2, 0.01)]:
        assert m.log_e1(n, k, p) == pytest.approx(float(m.log_e(n, k, p)), rel=1e-12)


# -- the looks family and the price ---------------------------------------------------------
@pytest.mark.parametrize("t, alpha", [(0.765, 0.001), (0.6, 0.05), (0.5 + 1e-9, 0.05)])
def test_looks_family_exact_worst_case(t, alpha):
    """Clopper–Pearson at level/K at K looks: the exact error at pA = p* (both classes),
    summed over the per-draw boundary, is <= alpha; the boundary at each look is the exact
    Clopper–Pearson count."""
    rule = DecisionTest([t], alpha, N_MAX, boundary="looks")
    boundary = rule.per_draw_boundary()
    assert crossing_probability(boundary, t) + crossing_probability(boundary, 1 - t) <= alpha
    plan = rule._plans[0]
    k_look = len(plan.sched)
    for n in plan.sched[::7]:
        k = next((k for k in range(n + 1)
                  if clopper_pearson(k, int(n), rule.level / k_look)[0] > t), N_MAX + 1)
        raw = plan.cert[0, np.searchsorted(plan.sched, n)]
        assert raw <= k            # running minimum from the right: never later than exact
    # always right, one arm at level alpha: the first draw n whose count n already makes the
    # next look's exact crossing certain
    flag = DecisionTest([t], alpha, N_MAX, boundary="looks", mode="flag", target_class=1)
    all_right = drive(flag, np.ones(N_MAX, dtype=np.int64))
    looks = flag._plans[0].sched
    first = min(max(int(prev) + 1, k) for prev, n in zip(np.r_[0, looks[:-1]], looks,
                                                         strict=True)
                for k in [next((k for k in range(int(n) + 1)
                                if clopper_pearson(k, int(n), alpha / len(looks))[0] > t),
                               None)] if k is not None)
    assert all_right.certified[0] and all_right.queries == first


def test_looks_family_error_rate():
    wrong = 0
    for seed in range(RUNS):
        rule = DecisionTest([0.6, 0.8], ALPHA, N_MAX, boundary="looks")
        rule.observe(stream(seed, 0.8))
        wrong += rule.label == 0 or bool(rule.certified[1])
    assert wrong <= ALLOWED


def test_price_gives_up_dear_thresholds_and_keeps_batching_invariance():
    """Always-right model, thresholds 0.7 (cheap) and 0.9999 (~70,000 draws): with a price
    of 1,000 draws the dear one is given up at the first price look; without, it is
    certified; random batch sizes change nothing."""
    labels = np.ones(100_000, dtype=np.int64)
    cheap = drive(DecisionTest([0.7, 0.9999], 0.001, 100_000, price=1000), labels)
    assert list(cheap.certified) == [True, False]
    assert cheap.queries == cheap._price_looks[0] < 100
    full = drive(DecisionTest([0.7, 0.9999], 0.001, 100_000), labels)
    assert full.certified.all() and full.queries > 60_000
    rng = np.random.default_rng(3)
    for seed, p in enumerate([0.93, 0.97, 0.995]):
        labels = stream(seed, p, 100_000)
        whole = DecisionTest([0.6, 0.9, 0.95, 0.99], 0.001, 100_000, price=3000)
        whole.observe(labels)
        for other in (drive(DecisionTest([0.6, 0.9, 0.95, 0.99], 0.001, 100_000, price=3000),
                            labels),
                      drive(DecisionTest([0.6, 0.9, 0.95, 0.99], 0.001, 100_000, price=3000),
                            labels, rng)):
            assert other.queries == whole.queries
            assert np.array_equal(other.certified, whole.certified)
            assert np.array_equal(other.decided_at, whole.decided_at)


def test_radius_looks_family_validity():
    sigma, p_true = 0.5, norm.cdf(1.0)

    def frontier(p):
        return np.array([sigma * norm.ppf(p) if p > 0.5 else -np.inf])

    over = 0
    for seed in range(RUNS // 4):
        rule = drive(RadiusTest(frontier, ALPHA, 20_000, 0.05, boundary="looks"),
                     stream(seed, p_true, 20_000))
        if rule.label != ABSTAIN:
            over += rule.label != 1 or frontier(rule.p_lower)[0] >= sigma * 1.0
    assert over <= int(binom.ppf(1 - 1e-6, RUNS // 4, ALPHA))


def test_give_up_bound_with_no_draw_of_the_class_yet():
    """A flag decision at a low tau with a price used to crash (math domain error) while the
    flagged class had not been drawn: the futility bound evaluated 0 * log(0)."""
    from scipy.special import betaln

    from hybridcert.sequential.bounds import kt_upper

    for n in (1, 7, 100, 5000):
        level = 0.01
        # k = 0: the bound u solves log KT(n, 0) - n log(1 - u) = log(1 / level)
        log_kt = betaln(0.5, n + 0.5) - betaln(0.5, 0.5)
        exact = 1 - np.exp((log_kt - np.log(1 / level)) / n)
        assert kt_upper(n, 0, level) == pytest.approx(exact, rel=1e-9, abs=1e-12)
    rule = DecisionTest([0.05, 0.3], 0.001, 10_000, mode="flag", target_class=1, price=100.0,
                        boundary="looks")
    rule.observe(np.zeros(500, dtype=np.int64))
    assert (rule.outcome != ABOVE).all()


# -- the spending family ----------------------------------------------------------------------
def _mp_crossing(boundary, p):
    """P_p(count >= boundary[n] at some n) by dynamic programming over every draw in
    40-digit arithmetic (an independent, slow computation of what spending_boundary
    calibrates with float convolutions between looks)."""
    mpmath.mp.dps = 40
    p = mpmath.mpf(p)
    probs, crossed = [mpmath.mpf(1)], mpmath.mpf(0)
    for n in range(1, len(boundary)):
        nxt = [mpmath.mpf(0)] * (n + 1)
        for k, q in enumerate(probs):
            nxt[k] += q * (1 - p)
            nxt[k + 1] += q * p
        b = int(boundary[n])
        if b <= n:
            crossed += mpmath.fsum(nxt[b:])
            nxt[b:] = [mpmath.mpf(0)] * (n + 1 - b)
        probs = nxt
    return crossed


@pytest.mark.parametrize("t, level", [(0.6, 0.01), (0.9, 0.001), (0.5, 0.05)])
def test_spending_boundary_against_high_precision(t, level):
    """The error spending_boundary reports, and its per-look budget, against a 40-digit
    per-draw computation of the same boundary: it spends what it says (to 1e-9), never more
    than the level, nearly all of it, and every crossing count is above p* n."""
    looks = np.array([5, 9, 14, 20, 30, 45, 60, 90, 130, 200, 300])
    counts, error = spending_boundary(t, looks, level)
    per_draw = np.full(looks[-1] + 1, looks[-1] + 1)
    prev = 0
    for n, c in zip(looks, counts, strict=True):
        per_draw[prev + 1:n] = looks[-1] + 1
        per_draw[n] = c
        prev = n
    exact = _mp_crossing(per_draw, t)
    assert float(exact) <= level
    assert float(exact) == pytest.approx(error, rel=1e-9, abs=1e-300)
    assert float(exact) > 0.8 * level
    assert all(c > t * n for n, c in zip(looks, counts, strict=True) if c <= n)
    # cumulative spending at each look within the schedule's share
    for i in range(len(looks)):
        head = per_draw.copy()
        head[looks[i] + 1:] = looks[-1] + 1
        assert float(_mp_crossing(head[:looks[i] + 1], t)) <= level * (i + 1) / len(looks)


@pytest.mark.parametrize("t, alpha", [(0.765, 0.001), (0.921, 0.001), (0.5 + 1e-9, 0.05),
                                      (0.99, 0.01)])
def test_spending_family_exact_worst_case(t, alpha):
    """Majority mode, true pA = p*: class A crossing at p* plus the other class crossing at
    1 - p*, summed exactly over the per-draw boundary, is <= alpha, for every rate in
    between too; and it uses nearly all of alpha (the Bonferroni looks use about half)."""
    rule = DecisionTest([t], alpha, N_MAX, boundary="spending")
    boundary = rule.per_draw_boundary(0, 0)
    assert np.array_equal(boundary, rule.per_draw_boundary(0, 1))
    wrong = crossing_probability(boundary, t) + crossing_probability(boundary, 1 - t)
    assert 0.9 * alpha < wrong <= alpha
    for p in np.linspace(1 - t, t, 9):
        assert crossing_probability(boundary, p) + crossing_probability(boundary, 1 - p) \
            <= alpha
    looks = DecisionTest([t], alpha, N_MAX, boundary="looks").per_draw_boundary()
    assert wrong > crossing_probability(looks, t) + crossing_probability(looks, 1 - t)


def test_spending_tiers_exact_worst_case_of_a_grid():
    """A grid whose lowest threshold is 1/2: the thresholds where two classes can both be
    claimed (0.5, 0.6) get choice_share * alpha, the others the rest without the factor 2.
    Exact error at every threshold p (class A needs the boundary of the lowest threshold
    >= p, class B at 1 - p needs the lowest boundary) and at rates in between: <= alpha."""
    grid = [0.5 + 1e-9, 0.6, 0.69, 0.84, 0.93, 0.98]
    alpha = 0.05
    rule = DecisionTest(grid, alpha, N_MAX, boundary="spending")
    levels = rule.threshold_levels[0]
    assert levels[0] == levels[1] < levels[2] == levels[-1]
    assert levels[2] > 1.6 * rule.level          # the high tier no longer pays for the choice
    single = DecisionTest(grid, alpha, N_MAX, boundary="spending", choice_share=0)
    assert np.all(single.threshold_levels[0] == single.level)
    bounds = [rule.per_draw_boundary(j, 0) for j in range(len(grid))]
    for lower, upper in zip(bounds, bounds[1:], strict=False):
        assert np.all(lower <= upper)
    rates = sorted(set(grid) | set(np.linspace(0.5, 0.98, 25)))
    for p in rates:
        j = next(i for i, t in enumerate(grid) if t >= p)
        wrong = crossing_probability(bounds[j], p) + crossing_probability(bounds[0], 1 - p)
        assert wrong <= alpha, p
    for j, t in enumerate(grid):            # each tier uses what it was given
        if j in (0, 2):
            assert crossing_probability(bounds[j], t) > 0.5 * levels[j]


@pytest.mark.parametrize("mode, t", [("majority", 0.8), ("flag", 0.3), ("benign", 0.3)])
def test_spending_error_rate_at_the_threshold(mode, t):
    """Seeded runs at the worst case p = p*: wrong claims within the binomial margin."""
    kwargs = {} if mode == "majority" else {"mode": mode, "target_class": 1}
    wrong = 0
    for seed in range(RUNS):
        rule = DecisionTest([t], ALPHA, N_MAX, boundary="spending", **kwargs)
        rule.observe(stream(seed, t))
        wrong += bool(rule.certified[0])
    assert wrong <= ALLOWED


def test_spending_grid_and_detector_error_rates():
    """Grid with tiers and the class chosen from the draws (class 0 at 0.7: a claim of
    class 1 or of 0.7 and above is wrong), and a detector with both sides at p_c = 0.1."""
    grid = [0.5 + 1e-9, 0.6, 0.7, 0.8, 0.9]
    wrong_grid = wrong_det = 0
    for seed in range(RUNS):
        rule = DecisionTest(grid, ALPHA, N_MAX, boundary="spending", price=300.0)
        rule.observe(stream(seed, 0.7, hit=0, miss=1))
        wrong_grid += rule.label == 1 or bool(rule.certified[2:].any())
        det = DecisionTest([0.1], ALPHA, N_MAX, num_classes=3, mode="detector",
                           target_class=2, boundary="spending")
        det.observe(np.where(stream(seed, 0.1) == 1, 2, seed % 2))
        wrong_det += bool(det.certified[0])
    assert wrong_grid <= ALLOWED and wrong_det <= ALLOWED


def test_spending_reports_only_certified_thresholds_and_decides_clear_cases():
    """No confidence sequence is left over: p_lower is the highest certified threshold; an
    always-right model certifies a high threshold no later than the looks family does."""
    ones = np.ones(100_000, dtype=np.int64)
    rule = drive(DecisionTest([0.7, 0.99], 0.001, 100_000, boundary="spending"), ones)
    assert rule.certified.all() and rule.p_lower == 0.99
    looks = drive(DecisionTest([0.7, 0.99], 0.001, 100_000, boundary="looks"), ones)
    assert rule.queries <= looks.queries
    rng = np.random.default_rng(5)
    labels = stream(11, 0.97, 100_000)
    whole = DecisionTest([0.6, 0.9, 0.95], 0.001, 100_000, boundary="spending", price=3000)
    whole.observe(labels)
    other = drive(DecisionTest([0.6, 0.9, 0.95], 0.001, 100_000, boundary="spending",
                               price=3000), labels, rng)
    assert other.queries == whole.queries
    assert np.array_equal(other.certified, whole.certified)


@pytest.mark.parametrize("t, alpha", [(0.001, 1e-9), (0.0003, 1e-8), (0.00144, 1e-12)])
def test_spending_small_rates_and_tiny_alpha(t, alpha):
    """Rates near 0 and tiny alpha, where a draw-count step is nearly Poisson and its far tail
    is not negligible against the level: a look may not cross where only uncarried mass lies
    (it did, and over-claimed 2.4x to 10^4x alpha).  40-digit exact error <= alpha, equal to
    the error spending_boundary reports; a detector's benign side mirrors it."""
    flag = DecisionTest([t], alpha, 30, mode="flag", target_class=1, boundary="spending")
    exact = float(_mp_crossing(flag.per_draw_boundary(0, 0), t))
    assert exact <= alpha
    _, reported = spending_boundary(t, flag._plans[0].sched, alpha)
    assert exact == pytest.approx(reported, rel=1e-9)
    benign = DecisionTest([1 - t], alpha, 30, mode="benign", target_class=1,
                          boundary="spending")
    assert float(_mp_crossing(benign.per_draw_boundary(0, 0), t)) <= alpha


@pytest.mark.parametrize("t, alpha", [(0.99, 1e-9), (0.999, 1e-6)])
def test_spending_keeps_its_power_at_tiny_alpha(t, alpha):
    """High thresholds at small alpha: the low counts not carried are moved up (conservative)
    instead of being charged as crossings, which used to exhaust the budget (0.999 at 1e-7
    never certified).  An always-right model certifies no later than with the looks family."""
    ones = np.ones(100_000, dtype=np.int64)
    spend = drive(DecisionTest([t], alpha, 100_000, boundary="spending"), ones)
    looks = drive(DecisionTest([t], alpha, 100_000, boundary="looks"), ones)
    assert spend.certified[0] and looks.certified[0]
    assert spend.queries <= looks.queries


def test_spending_crosses_above_the_carried_counts_when_that_is_free():
    """At the cap, the paths still carried for p* = 0.999905 all had a failure (the
    all-success path crossed at an earlier look), so a count of n_max has no carried mass:
    crossing there costs nothing, and an always-right model certifies a cell that needs every
    one of 100,000 draws right with a prior look's budget (the grid's r = 8 cells)."""
    looks = DecisionTest([0.999905], 0.001, 100_000, boundary="spending")._plans[0].sched
    counts, error = spending_boundary(0.999905, looks, 8.97e-4)
    assert counts[-1] == 100_000 and error <= 8.97e-4
    grid = DecisionTest([0.5 + 1e-9, 0.999905], 0.001, 100_000, boundary="spending")
    assert drive(grid, np.ones(100_000, dtype=np.int64)).certified.all()


def test_spending_three_classes_exact_worst_case():
    """Three classes, class chosen from the draws, thresholds from 1/2 (tiers split): each
    class's count is Bernoulli(p_c), so the exact error at rates (p_0, p_1, p_2) is the sum
    over classes of the crossing probability of the lowest boundary >= p_c; <= alpha over a
    grid of rate vectors, the worst ones (two classes at 1/2, one at a threshold) included."""
    grid, alpha = [0.5, 0.6, 0.8], 0.05
    rule = DecisionTest(grid, alpha, 1000, num_classes=3, boundary="spending")
    bounds = [rule.per_draw_boundary(j, 0) for j in range(len(grid))]
    assert all(np.array_equal(bounds[j], rule.per_draw_boundary(j, c))
               for j in range(len(grid)) for c in (1, 2))

    def wrong(p):
        j = next((i for i, t in enumerate(grid) if t >= p), None)
        return 0.0 if j is None else crossing_probability(bounds[j], p)

    rates = [(0.5, 0.5, 0.0), (0.6, 0.4, 0.0), (0.8, 0.2, 0.0), (0.5, 0.25, 0.25),
             (0.45, 0.45, 0.1), (0.6, 0.3, 0.1), (0.34, 0.33, 0.33)]
    worst = max(sum(wrong(p) for p in r) for r in rates)
    assert worst <= alpha
    assert worst > 0.5 * alpha          # the level is used, not wasted


# -- how each threshold ended ------------------------------------------------------------------
def test_status_certified_refuted_and_unreachable():
    """certified: an always-right stream crosses p* = 0.765 at the closed-form draw
    (quadrature of the mixture); a stream at rate 0.6 is given up on p* = 0.9 long before the
    cap; an unreachable threshold (inf) is refuted at the first draw."""
    n_flag = _first_all_success_crossing(0.765, 0.001)
    points = schedule_points(100_000)
    rule = drive(DecisionTest([0.765, np.inf], 0.001, 100_000, mode="flag", target_class=1),
                 np.ones(100_000, dtype=np.int64))
    assert rule.status == ["certified", "refuted"]
    assert rule.decided_at.tolist() == [points[points >= n_flag][0], 1]
    for seed in range(20):
        low = drive(DecisionTest([0.9], 0.001, 100_000), stream(seed, 0.6, 100_000))
        # given up long before the cap; "refuted" only where its KT bound at the futility
        # level is below p* (test_refuted_*), else "cap" (not certifiable within the cap)
        assert low.status[0] in ("refuted", "cap")
        assert 0 < low.decided_at[0] == low.queries < 1000


def test_status_cap():
    """The cap reached while the threshold could still be certified: p* needs every one of
    the n_max draws right (the per-draw boundary is n_max at n_max and out of reach before),
    the stream is right n_max - 1 times and then wrong."""
    t = 0.9
    n_max = int(np.argmax(DecisionTest([t], 0.01, 1000).per_draw_boundary(0, 0)
                          <= np.arange(1001)))
    rule = DecisionTest([t], 0.01, n_max)
    boundary = rule.per_draw_boundary(0, 0)
    assert boundary[n_max] == n_max and np.all(boundary[1:n_max] > np.arange(1, n_max))
    labels = np.ones(n_max, dtype=np.int64)
    labels[-1] = 0
    drive(rule, labels)
    assert rule.status == ["cap"] and rule.decided_at[0] == rule.queries == n_max
    right = drive(DecisionTest([t], 0.01, n_max), np.ones(n_max, dtype=np.int64))
    assert right.status == ["certified"] and right.decided_at[0] == n_max


def test_status_gave_up_by_the_price():
    """A threshold just below the rate is dear to certify: a price of 50 draws gives it up at
    a price look (the first at 70 draws), while the cheap one is certified."""
    rule = drive(DecisionTest([0.6, 0.94], 0.001, 100_000, price=50),
                 stream(3, 0.95, 100_000))
    assert rule.status == ["certified", "gave_up"]
    looks = schedule_points(100_000, dense=1, growth=1.1)
    assert rule.decided_at[1] in looks[looks >= 64]
    assert rule.decided_at[0] < rule.decided_at[1] == rule.queries


def _bounded(p_star, **kw):
    return BoundedDecision(0.5, [p_star], 0.001, 100_000, **kw)


def test_bounded_decision_stops_when_the_targets_are_settled():
    """At an ambiguous input (pA = 0.5) the rule that also settles the class at the zero
    budget (threshold 1/2) runs tens of thousands of draws; the bounded rule stops once the
    target is refuted, and the class, not settled by then, is left open: abstain, status
    gave_up.  A clear input still gets its class and target."""
    t = 0.7649
    for seed in range(5):
        labels = stream(seed, 0.5, 100_000)
        both = drive(DecisionTest([0.5, t], 0.001, 100_000), labels)
        bounded = drive(_bounded(t), labels)
        assert both.queries > 10_000
        assert bounded.queries < 200 and bounded.queries == bounded.decided_at[1]
        assert bounded.status[0] == "gave_up" and bounded.label == ABSTAIN
        assert bounded.status[1] in ("refuted", "cap")
        assert not bounded.certified.any() and bounded.decided_at[0] == bounded.queries
        clear = drive(_bounded(t), stream(seed, 0.97, 100_000))
        assert clear.label == 1 and clear.status == ["certified", "certified"]
        assert clear.decided_at[0] <= clear.decided_at[1] == clear.queries
        assert clear.p_lower > t


def test_bounded_decision_keeps_the_class_settled_in_time():
    """pA = 0.85 against p* = 0.921: the target is refuted after a few hundred draws, by
    which time the class (threshold 1/2, at base_share * alpha) has crossed in most runs: it
    stays certified, the target says refuted.  The class's own crossing is exactly that of
    its test run alone on the same draws."""
    kept = 0
    for seed in range(40):
        labels = stream(seed, 0.85, 100_000)
        rule = drive(_bounded(0.9213), labels)
        assert rule.status[1] in ("refuted", "cap")
        alone = drive(DecisionTest([0.5], 0.0001, 100_000), labels)
        if rule.status[0] == "certified":
            kept += 1
            assert rule.label == 1 and rule.decided_at[0] == alone.queries <= rule.queries
            assert rule.p_lower == alone.p_lower
        else:
            assert rule.status[0] == "gave_up" and alone.queries > rule.queries
    assert kept >= 25


def test_bounded_decision_batching_does_not_change_anything():
    rng = np.random.default_rng(3)
    for seed, p in enumerate([0.5, 0.62, 0.75, 0.8, 0.95]):
        labels = stream(seed, p, 100_000)
        whole = _bounded(0.7649)
        whole.observe(labels)
        for other in (drive(_bounded(0.7649), labels), drive(_bounded(0.7649), labels, rng)):
            assert (other.queries, other.label, other.p_lower, other.status) == \
                (whole.queries, whole.label, whole.p_lower, whole.status)
            assert np.array_equal(other.decided_at, whole.decided_at)


@pytest.mark.parametrize("t", [0.6, 0.765, 0.921])
def test_bounded_decision_exact_worst_case(t):
    """Exact error of the bounded rule's boundaries, summed over the per-draw stopping
    boundary at every true rate p of class A (class B at 1 - p): the class claims (base
    boundary, level base_share * alpha) wrong for A when p <= 1/2 and for B always, the
    target claims wrong for A when p <= p* and for B always.  Stopping when the targets are
    settled only removes crossings, so the sum bounds the rule's error: <= alpha, and the
    budget is used (> 0.5 alpha at the worst case, above the lowest target)."""
    alpha = 0.01
    rule = BoundedDecision(0.5, [t], alpha, N_MAX)
    base, target = rule.per_draw_boundary(0, 0), rule.per_draw_boundary(1, 0)
    assert np.array_equal(base, rule.per_draw_boundary(0, 1))
    assert np.array_equal(target, rule.per_draw_boundary(1, 1))
    worst = 0.0
    for p in sorted({0.5, t, *np.linspace(0.5, 0.999, 12)}):
        wrong = ((crossing_probability(base, p) if p <= 0.5 else 0.0)
                 + crossing_probability(base, 1 - p)
                 + (crossing_probability(target, p) if p <= t else 0.0)
                 + crossing_probability(target, 1 - p))
        assert wrong <= alpha, (p, wrong)
        worst = max(worst, wrong)
    if t > 0.6:
        assert worst > 0.5 * alpha


@pytest.mark.parametrize("p", [0.5, 0.7649])
def test_bounded_decision_error_rate(p):
    """1,000 seeded runs at alpha 0.1 at the worst cases (pA = 1/2, pA = p*): wrong claims
    (the class when pA = 1/2, the target when pA = p*, a reported bound above pA) stay
    under the 1 - 1e-6 quantile of Binomial(1000, alpha)."""
    wrong = 0
    for seed in range(RUNS):
        rule = drive(BoundedDecision(0.5, [0.7649], ALPHA, N_MAX), stream(seed, p))
        bad = rule.label == 0 or (rule.label == 1 and p <= 0.5) or \
            (rule.certified[1] and p <= 0.7649) or (rule.label == 1 and rule.p_lower >= p)
        wrong += bool(bad)
    assert wrong <= ALLOWED


def test_bounded_detector_error_rate_and_status():
    """Detector (flag class 1 above 0.1 / benign below it; target thresholds 0.2 and 0.05):
    at the flag target's worst case p = 0.2 no run claims the flag target, and wrong claims
    overall stay under the binomial quantile."""
    wrong = 0
    for seed in range(RUNS):
        rule = drive(BoundedDecision(0.1, [0.2], ALPHA, N_MAX, mode="detector",
                                     target_class=1, base_benign=0.1,
                                     benign_thresholds=[0.05]), stream(seed, 0.2))
        assert set(rule.status) <= {"certified", "refuted", "gave_up", "cap"}
        wrong += bool(rule.outcome[1] == ABOVE or (rule.outcome == BELOW).any()
                      or rule.p_lower >= 0.2 or rule.p_upper <= 0.2)
    assert wrong <= ALLOWED


def test_bounded_detector_stops_when_the_targets_are_settled():
    """Detector at its threshold (flag rate 0.1 = tau, flag above / benign below it at the
    zero budget; targets: flag above 0.2, benign below 0.05): both targets are refuted within
    a few hundred draws and the rule stops, the decision at the zero budget left open
    (gave_up, abstain); one DecisionTest over the zero budget and the target runs over
    30,000 draws to refute the zero budget too."""
    for seed in range(3):
        labels = stream(seed, 0.1, 100_000)
        rule = drive(BoundedDecision(0.1, [0.2], 0.001, 100_000, mode="detector",
                                     target_class=1, base_benign=0.1,
                                     benign_thresholds=[0.05]), labels)
        both = drive(DecisionTest([0.1, 0.2], 0.001, 100_000, mode="detector", target_class=1,
                                  benign_thresholds=[0.1, 0.05]), labels)
        assert rule.status[0] == "gave_up" and rule.label == ABSTAIN
        assert rule.status[1] in ("refuted", "cap")
        assert rule.queries < 1000 and both.queries > 30_000
        assert set(both.status) <= {"refuted", "cap"}


@pytest.mark.parametrize("bounded", [False, True])
def test_certified_benign_with_three_classes_is_not_flagged(bounded):
    """Issue 23: an input certified benign with more than two classes is NOT_FLAGGED (a
    certified answer: the flagged class's probability is below the threshold), in the rule as
    in the results built from it — not ABSTAIN."""
    from hybridcert.smoothing import NOT_FLAGGED

    labels = np.full(5000, 2, dtype=np.int64)          # class 1 (flagged) never drawn
    if bounded:
        rule = BoundedDecision(0.3, [0.2], 0.01, 5000, num_classes=3, mode="benign",
                               target_class=1)
    else:
        rule = DecisionTest([0.3], 0.01, 5000, num_classes=3, mode="benign", target_class=1)
    rule = drive(rule, labels)
    assert rule.certified.all() and rule.label == NOT_FLAGGED != ABSTAIN
    two = drive(DecisionTest([0.3], 0.01, 5000, mode="benign", target_class=1),
                np.zeros(5000, dtype=np.int64))
    assert two.label == 0                               # two classes: the other one


# -- "refuted" means false at the futility level (issue 22 review) ---------------------------
def _kt_excludes(n, k, t, level):
    """Independent of the rule: the Krichevsky-Trofimov mixture (Beta(1/2, 1/2)) against
    rate t after k of n, in closed form, is >= 1/level with k/n < t: t lies above the KT
    upper confidence bound at ``level``."""
    from scipy.special import betaln
    log_e = (betaln(k + 0.5, n - k + 0.5) - betaln(0.5, 0.5) - k * math.log(t)
             - (n - k) * math.log1p(-t))
    return k / n < t and log_e >= math.log(1 / level) - 1e-9


def _flag_runs(p, t, n_max, seeds, futility=0.01):
    for seed in seeds:
        labels = stream(seed, p, n_max)
        rule = drive(DecisionTest([t], 0.01, n_max, mode="flag", target_class=1,
                                  futility=futility), labels)
        yield rule, labels


def test_a_true_target_given_up_at_a_small_cap_is_cap_not_refuted():
    """p = 0.92 against p* = 0.885 with a cap of 200: the rule gives the target up early
    (the cap could not certify it), which the old code called refuted; it is true."""
    early = 0
    for rule, _ in _flag_runs(0.92, 0.885, 200, range(100)):
        assert rule.status[0] in ("certified", "cap")
        early += not rule.certified[0] and rule.decided_at[0] < 200
    assert early >= 50        # the stopping rule itself is unchanged: most stop early


def test_a_false_target_is_refuted_by_its_upper_bound():
    """p = 0.3 against p* = 0.885, cap 100,000: refuted in most runs, each where the KT
    bound at the futility level (computed independently) excludes p* at the draw it
    stopped; the others say cap."""
    refuted = 0
    for rule, labels in _flag_runs(0.3, 0.885, 100_000, range(100)):
        n = int(rule.decided_at[0])
        assert rule.status[0] in ("refuted", "cap") and n == rule.queries
        excluded = _kt_excludes(n, int(labels[:n].sum()), 0.885, 0.01)
        assert (rule.status[0] == "refuted") == excluded
        refuted += rule.status[0] == "refuted"
    assert refuted >= 80


@pytest.mark.parametrize("p,n_max", [(0.885, 2000), (0.92, 200), (0.95, 100_000)])
def test_true_targets_are_refuted_at_most_at_the_futility_rate(p, n_max):
    """Rate >= p* = 0.885 (the target is true): over 2,000 seeded runs at futility 0.05,
    "refuted" is at most as frequent as the futility level allows (binomial bound)."""
    runs, futility = 2000, 0.05
    wrong = sum(rule.status[0] == "refuted"
                for rule, _ in _flag_runs(p, 0.885, n_max, range(runs), futility))
    assert wrong <= binom.ppf(1 - 1e-6, runs, futility)
