"""Soundness and tightness against brute-force linear programs on tiny instances."""

import numpy as np
import pytest

from hybridcert import Gaussian, Mask, Substitution, lower_bound, upper_bound
from tests.certificate.brute_force import (
    MASK,
    joint_outcomes,
    lp_lower_bound,
    lp_upper_bound,
    neyman_pearson_set_masses,
)

CASES = [
    ("substitution", 0.6, 2, 1, 0.0),
    ("substitution", 0.6, 2, 3, 0.5),
    ("substitution", 0.5, 3, 2, 0.3),
    ("substitution", 0.3, 4, 2, 1.0),
    ("substitution", 0.4, 5, 1, 0.7),
    ("substitution", 0.7, 3, 3, 0.2),
    ("substitution", 0.6, 2, 4, 0.3),
    ("substitution", 0.3, 5, 3, 0.0),
    (MASK, 0.3, 3, 2, 0.4),
    (MASK, 0.5, 2, 4, 0.8),
    (MASK, 0.2, 2, 1, 0.0),
]
P_VALUES = [0.55, 0.7, 0.9, 0.99]
# Restricting f to be constant on grid cells costs at most the nu-mass of one boundary
# cell per discrete outcome, and only its mis-assigned part: with 1500 cells of width
# ~0.006 the observed gap is <= 5e-6 on these cases; 2e-5 leaves 4x room.
GRID_GAP = 2e-5


def _ratio(noise, keep, vocab, r, gamma):
    discrete = Mask(keep) if noise == MASK else Substitution(keep, vocab)
    return Gaussian(1.0).likelihood_ratio(gamma) * discrete.likelihood_ratio(r)


@pytest.mark.parametrize(("noise", "keep", "vocab", "r", "gamma"), CASES)
def test_lower_bound_matches_linear_program(noise, keep, vocab, r, gamma):
    mu, nu = joint_outcomes(noise, keep, vocab, r, gamma)
    ratio = _ratio(noise, keep, vocab, r, gamma)
    for p in P_VALUES:
        lp = lp_lower_bound(p, mu, nu)
        ours = lower_bound(p, ratio)
        # The LP over grid cells is a restriction of the true problem: its optimum is
        # >= the exact bound, and approaches it as the grid refines.
        assert ours <= lp + 1e-9, (p, ours, lp)
        assert ours >= lp - GRID_GAP, (p, ours, lp)


@pytest.mark.parametrize(("noise", "keep", "vocab", "r", "gamma"), CASES)
def test_upper_bound_matches_linear_program(noise, keep, vocab, r, gamma):
    mu, nu = joint_outcomes(noise, keep, vocab, r, gamma)
    ratio = _ratio(noise, keep, vocab, r, gamma)
    for q in [0.01, 0.1, 0.3, 0.45]:
        lp = lp_upper_bound(q, mu, nu)
        ours = upper_bound(q, ratio)
        # The grid LP is a restriction, so its maximum is <= the exact upper bound.
        assert ours >= lp - 1e-9
        assert ours <= lp + GRID_GAP


@pytest.mark.parametrize(("noise", "keep", "vocab", "r"), [c[:4] for c in CASES if c[4] == 0])
def test_discrete_bound_equals_linear_program_exactly(noise, keep, vocab, r):
    mu, nu = joint_outcomes(noise, keep, vocab, r, 0.0)
    ratio = _ratio(noise, keep, vocab, r, 0.0)
    for p in np.linspace(0.01, 0.999, 25):
        assert lower_bound(p, ratio) == pytest.approx(lp_lower_bound(p, mu, nu), abs=1e-9)


@pytest.mark.parametrize(("noise", "keep", "vocab", "r", "gamma"), CASES)
def test_worst_case_set_attains_the_bound(noise, keep, vocab, r, gamma):
    """Tightness: the Neyman-Pearson set {Lambda <= kappa} with mu-mass p, built and
    measured on the enumerated outcomes, has nu-mass equal to the bound."""
    mu, nu = joint_outcomes(noise, keep, vocab, r, gamma, cells=20000 if r <= 2 else 4000)
    ratio = _ratio(noise, keep, vocab, r, gamma)
    for p in P_VALUES:
        set_mu, set_nu = neyman_pearson_set_masses(p, mu, nu)
        assert set_mu == pytest.approx(p, abs=1e-12)
        assert lower_bound(p, ratio) == pytest.approx(set_nu, abs=2e-4)
