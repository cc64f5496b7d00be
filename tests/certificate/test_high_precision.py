"""The bounds against an independent 50-digit computation (tests/certificate/exact.py).

Issue 11.3: the lower bound must never exceed the exact value, tiny bounds included (the
old code computed ``lower = 1 - (nu above the boundary)`` for ``p > 1/2``, which cancels:
1.33e-15 where the exact value is 1.4e-19), and the upper bound must never fall below it.
Only ``lower_bound``, ``upper_bound`` and the noise types are used here, so the file also
runs against older versions of the library.
"""

import random

import mpmath as mp
import pytest

from hybridcert import LikelihoodRatio, Mask, Substitution, lower_bound, upper_bound
from tests.certificate import exact as E


def _noise_and_regions(kind, keep, vocab, r):
    if kind == "mask":
        return Mask(keep), E.mask(keep, r)
    return Substitution(keep, vocab), E.substitution(keep, vocab, r)


def _check_lower(p, ratio, exact, rel=1e-9):
    got = lower_bound(p, ratio)
    assert mp.mpf(got) <= exact, (p, got, mp.nstr(exact, 20))
    # ... and not loose: close to the exact value in relative terms, but for the nu mass of
    # regions below 1e-30, which the ratio merges into its ratio-0 atom.
    dropped = getattr(ratio, "nu_dropped", 0.0)
    assert mp.mpf(got) >= exact * (1 - rel) - mp.mpf(1e-300) - dropped, \
        (p, got, mp.nstr(exact, 20))


def _check_upper(q, ratio, exact, rel=1e-9):
    got = upper_bound(q, ratio)
    assert mp.mpf(got) >= min(exact, 1), (q, got, mp.nstr(exact, 25))
    # Regions with nu < 1e-30 are merged into the ratio-0 atom; the upper bound adds their
    # total nu back (getattr: older ratios do not record it).
    dropped = getattr(ratio, "nu_dropped", 0.0)
    assert mp.mpf(got) <= exact * (1 + rel) + mp.mpf(1e-300) + dropped, \
        (q, got, mp.nstr(exact, 20))


def test_issue_example_tiny_lower_bound():
    keep, vocab, r, p = 0.4451539642417516, 10**6, 10, 0.7961162171549545
    exact = E.lower(p, E.substitution(keep, vocab, r))
    assert exact == pytest.approx(1.4044213892e-19, rel=1e-9)
    _check_lower(p, Substitution(keep, vocab).likelihood_ratio(r), exact)


def test_issue_example_complement_upper_bound_near_one():
    """upper(1 - p) = 1 - lower(p) mathematically: the old subtraction made it 1 - 1.3e-15,
    below the exact 1 - 1.4e-19."""
    keep, vocab, r, p = 0.4451539642417516, 10**6, 10, 0.7961162171549545
    regions = E.substitution(keep, vocab, r)
    q = 1 - p
    _check_upper(q, Substitution(keep, vocab).likelihood_ratio(r), E.upper(q, regions))


@pytest.mark.parametrize("q", [1e-300, 1e-40, 1e-20, 1e-12, 3e-7])
def test_tiny_upper_bounds_are_exact(q):
    """``upper(q)`` for tiny q: the set of the highest ratios, computed from the top."""
    keep, vocab, r = 0.4451539642417516, 10**6, 10
    ratio = Substitution(keep, vocab).likelihood_ratio(r)
    _check_upper(q, ratio, E.upper(q, E.substitution(keep, vocab, r)))


def _tiny_cases(seed, count):
    """Points where the exact lower bound is in (1e-25, 1e-8): p inside the mu-mass of the
    lowest-ratio regions (random keep, V, r; half of them with p > 1/2)."""
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        vocab = rng.choice([50, 30522, 10**6])
        keep = rng.uniform(0.2, 0.9)
        r = rng.randint(2, 10)
        regions = E.substitution(keep, vocab, r)
        items = sorted(regions.items, key=lambda t: t[0])
        before = mp.mpf(0)
        for j in range(len(items) - 1):
            _, mu, nu = items[j]
            if before + mu > 1e-3 and items[j + 1][2] > 0:
                p = float(before + mu * mp.mpf(rng.random()))
                exact = E.lower(p, regions)
                if 1e-25 < exact < 1e-8:
                    out.append((keep, vocab, r, p, exact))
                    break
            before += mu
    return out


@pytest.mark.parametrize(("keep", "vocab", "r", "p", "exact"), _tiny_cases(0, 40))
def test_tiny_lower_bounds_never_exceed_the_exact_value(keep, vocab, r, p, exact):
    _check_lower(p, Substitution(keep, vocab).likelihood_ratio(r), exact)
    # The complement, upper(1 - p) = 1 - lower(p), never below its exact value either.
    regions = E.substitution(keep, vocab, r)
    q = 1 - p
    _check_upper(q, Substitution(keep, vocab).likelihood_ratio(r), E.upper(q, regions))


GAUSSIAN_CASES = [
    # (kind, keep, vocab, r, gamma, p, q)
    ("substitution", 0.4451539642417516, 10**6, 10, 0.5, 0.7961162171549545, 1e-20),
    ("substitution", 0.3, 30522, 6, 0.7, 0.9, 1e-12),
    ("substitution", 0.6, 50, 4, 2.0, 0.999, 0.2),
    ("substitution", 0.2, 256, 3, 1e-6, 0.7, 0.3),
    ("substitution", 0.5, 3, 5, 8.0, 1 - 1e-9, 1e-9),
    ("substitution", 0.4, 5, 3, 30.0, 1 - 1e-15, 1e-30),
    ("substitution", 0.05, 30522, 8, 60.0, 1 - 1e-16, 1e-200),
    ("mask", 0.1, 0, 3, 0.7, 0.9, 0.01),
    ("mask", 0.3, 0, 2, 25.0, 1 - 1e-12, 1e-100),
    ("identity", 0, 0, 0, 40.0, 1 - 1e-16, 1e-300),
]


@pytest.mark.parametrize(("kind", "keep", "vocab", "r", "gamma", "p", "q"), GAUSSIAN_CASES)
def test_gaussian_path_against_high_precision(kind, keep, vocab, r, gamma, p, q):
    """With a Gaussian shift, tiny bounds and large shifts included."""
    if kind == "identity":
        tokens, regions = LikelihoodRatio.identity(), E.identity()
    else:
        noise, regions = _noise_and_regions(kind, keep, vocab, r)
        tokens = noise.likelihood_ratio(r)
    ratio = tokens * LikelihoodRatio.identity(gamma)
    _check_lower(p, ratio, E.lower(p, regions, gamma), rel=1e-8)
    _check_upper(q, ratio, E.upper(q, regions, gamma), rel=1e-8)
    _check_upper(1 - p, ratio, E.upper(1 - p, regions, gamma), rel=1e-8)


def _random_cases(seed, count):
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        kind = rng.choice(["substitution", "substitution", "mask"])
        vocab = rng.choice([2, 3, 5, 50, 30522, 10**6])
        keep = rng.uniform(1 / vocab + 1e-3, 0.95) if kind == "substitution" \
            else rng.uniform(0.02, 0.9)
        r = rng.randint(1, 8)
        p = rng.choice([rng.random(), 1 - 10 ** rng.uniform(-15, -1), 10 ** rng.uniform(-12, 0)])
        out.append((kind, keep, vocab, r, p))
    return out


@pytest.mark.parametrize(("kind", "keep", "vocab", "r", "p"), _random_cases(1, 150))
def test_discrete_bounds_never_cross_the_exact_value(kind, keep, vocab, r, p):
    noise, regions = _noise_and_regions(kind, keep, vocab, r)
    ratio = noise.likelihood_ratio(r)
    for x in (p, 1 - p):
        assert mp.mpf(lower_bound(x, ratio)) <= E.lower(x, regions)
        assert mp.mpf(upper_bound(x, ratio)) >= min(E.upper(x, regions), 1)
