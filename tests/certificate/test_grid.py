"""frontier_grid over several token blocks against brute force (issue 13 / engine API).

The reference enumerates the joint outcomes of every changed position of every block
(tests/certificate/brute_force.py, no library code) times a grid of Gaussian cells and
solves the linear program min nu.f s.t. mu.f >= p (or max nu.f s.t. mu.f <= q).  The grid
restriction makes the LP's lower bound >= the exact one and its upper bound <= the exact
one, so at a certified shift the LP must satisfy the rule too (soundness), and slightly
beyond it the LP must fail (tightness).  At shift 0 the LP is exact.
"""

import itertools

import numpy as np
import pytest

from hybridcert import Mask, Substitution, certified_frontier
from hybridcert.certificate import MAJORITY, Rule, frontier_grid
from tests.certificate.brute_force import (
    MASK,
    greedy_lower_bound,
    greedy_upper_bound,
    joint_block_outcomes,
    lp_lower_bound,
    lp_upper_bound,
)

BLOCK_SETS = {
    "two substitutions": [("substitution", 0.5, 3), ("substitution", 0.4, 4)],
    "substitution and mask": [("substitution", 0.6, 3), (MASK, 0.3, 2)],
}
RULES = {
    "majority": (MAJORITY, [0.8, 0.95, 0.995]),
    "flag": (Rule.flag(0.05), [0.35, 0.7, 0.97]),
    "benign": (Rule.benign(0.3), [1e-4, 0.02, 0.1]),
}
CAPS = (2, 2)
CELLS = 300
# The grid LP is within this of the exact bound on these cases (cells of width ~0.03:
# measured <= 3e-5; its bound moves by >= 5e-3 per 0.05 of shift here).
GRID_GAP = 2e-4


def _noise(kind, keep, vocab):
    return Mask(keep) if kind == MASK else Substitution(keep, vocab)


def _brute(rule, p, blocks, budget, gamma):
    """The rule's bound by brute force, and whether the rule holds for it."""
    outcomes = [(kind, keep, vocab, r) for (kind, keep, vocab), r in zip(blocks, budget,
                                                                          strict=True)]
    mu, nu = joint_block_outcomes(outcomes, gamma, CELLS)
    if rule.reads_upper:
        value = greedy_upper_bound(p, mu, nu)
        return value, value < rule.level
    value = greedy_lower_bound(p, mu, nu)
    return value, (value > 0.5) if rule.kind == "majority" else (value >= rule.level)


def _down_set(index):
    return list(itertools.product(*[range(r + 1) for r in index]))


@pytest.mark.parametrize("blocks_name", list(BLOCK_SETS))
@pytest.mark.parametrize("rule_name", list(RULES))
def test_grid_matches_brute_force(blocks_name, rule_name):
    blocks = BLOCK_SETS[blocks_name]
    rule, ps = RULES[rule_name]
    grid = frontier_grid(ps, [_noise(*b) for b in blocks], CAPS, rule=rule)
    assert grid.certified_at_zero.shape == grid.gamma.shape == (len(ps), 3, 3)
    checked = 0
    for i, p in enumerate(ps):
        holds_at_zero = {}
        for index in itertools.product(range(3), range(3)):
            value, holds = _brute(rule, p, blocks, index, 0.0)
            near_tie = abs(value - rule.level) < 1e-9
            holds_at_zero[index] = holds
            expected = all(holds_at_zero[j] for j in _down_set(index))
            if not near_tie:
                assert grid.certified_at_zero[(i,) + index] == expected, (p, index, value)
            gamma = grid.gamma[(i,) + index]
            if not grid.certified_at_zero[(i,) + index]:
                assert np.isnan(gamma)
                continue
            # Sound: the rule holds for the brute-force bound at the reported shift.
            value, holds = _brute(rule, p, blocks, index, gamma)
            assert holds, (p, index, gamma, value)
            # Tight: a little beyond it, the rule fails at this budget or a smaller one
            # (the grid reports the running minimum).
            beyond = gamma * 1.01 + 0.05
            fails = [not _brute(rule, p, blocks, j, beyond)[1] for j in _down_set(index)]
            assert any(fails), (p, index, gamma)
            checked += 1
    assert checked >= 5   # the test exercises real certificates


def test_greedy_equals_the_linear_program():
    """The brute-force bounds above solve the LP exactly: compare with scipy's HiGHS."""
    blocks = [("substitution", 0.5, 3, 1), (MASK, 0.3, 3, 2)]
    mu, nu = joint_block_outcomes(blocks, 0.7, 150)
    for p in (0.2, 0.6, 0.9):
        assert greedy_lower_bound(p, mu, nu) == pytest.approx(lp_lower_bound(p, mu, nu),
                                                              abs=1e-8)
        q = 1 - p
        assert greedy_upper_bound(q, mu, nu) == pytest.approx(lp_upper_bound(q, mu, nu),
                                                              abs=1e-8)


def test_grid_monotone_and_stops_exploring():
    noises = [Substitution(0.3, 30522), Substitution(0.2, 50)]
    ps = np.array([0.55, 0.9, 0.999, 0.9999999])
    grid = frontier_grid(ps, noises, (12, 12))
    g = np.where(grid.certified_at_zero, grid.gamma, -1.0)
    assert np.all(np.diff(g, axis=1) <= 0) and np.all(np.diff(g, axis=2) <= 0)
    assert np.all(np.diff(grid.certified_at_zero.astype(int), axis=1) <= 0)
    assert np.all(np.diff(grid.certified_at_zero.astype(int), axis=2) <= 0)
    assert np.array_equal(np.isnan(grid.gamma), ~grid.certified_at_zero)
    assert grid.certified_at_zero[:, 0, 0].all()
    assert not grid.certified_at_zero[:, -1, -1].any()   # nothing survives 24 tokens


def test_one_block_grid_is_the_frontier():
    noise = Substitution(0.1, 30522)
    ps = [0.7, 0.9, 0.99, 0.99999]
    for rule, p in [(MAJORITY, ps), (Rule.flag(4.6e-5), [0.01, 0.3, 0.9, 0.999]),
                    (Rule.benign(0.05), [1e-9, 1e-6, 1e-3, 0.01])]:
        grid = frontier_grid(p, [noise], [8], rule=rule)
        frontier = certified_frontier(p, sigma=0.5, discrete=noise, max_tokens=8, rule=rule)
        for i in range(len(p)):
            rows = frontier.rows(i)
            assert grid.certified_at_zero[i].sum() == len(rows)
            for row in rows:
                assert row["l2_radius"] == pytest.approx(0.5 * grid.gamma[i, row["tokens"]],
                                                         rel=1e-14)


def test_no_token_block_gives_shape_n():
    grid = frontier_grid([0.6, 0.99, 0.3], [], [])
    assert grid.certified_at_zero.shape == grid.gamma.shape == (3,)
    assert list(grid.certified_at_zero) == [True, True, False]
    assert grid.gamma[1] == pytest.approx(2.3263478740408408, rel=1e-9)


def test_grid_arguments_are_checked():
    noise = Substitution(0.1, 100)
    with pytest.raises(ValueError, match="caps needs one entry per token block"):
        frontier_grid([0.9], [noise], [2, 2])
    with pytest.raises(ValueError, match=r"caps\[0\] must be an integer <= 10000"):
        frontier_grid([0.9], [noise], [10_001])
    with pytest.raises(ValueError, match="must be a discrete Noise"):
        frontier_grid([0.9], ["text"], [2])
    with pytest.raises(ValueError, match="p_upper must lie"):
        frontier_grid([0.9], [noise], [2], p_upper=[2.0])
    with pytest.raises(ValueError, match="belongs to the majority rule"):
        frontier_grid([0.9], [noise], [2], p_upper=[0.1], rule=Rule.flag(0.1))


class _NonMonotone(Substitution):
    """A toy noise whose 2-token change is *weaker* than its 1-token change (identity):
    the grid must still refuse r = 2 wherever r = 1 fails (down-closure)."""

    def likelihood_ratio(self, size):
        return super().likelihood_ratio(0 if size == 2 else size)


def test_grid_is_down_closed_and_a_running_minimum():
    noise = _NonMonotone(0.5, 3)
    ps = [0.6, 0.999]   # 0.6 fails at r = 1 (lower = 0.6 - 0.25 < 1/2); 0.999 passes
    grid = frontier_grid(ps, [noise], [2])
    assert list(grid.certified_at_zero[0]) == [True, False, False]
    assert list(grid.certified_at_zero[1]) == [True, True, True]
    # At r = 2 the raw shift (identity ratio) is larger than at r = 1: the running minimum
    # reports r = 1's.
    assert grid.gamma[1, 2] == grid.gamma[1, 1] < grid.gamma[1, 0]
