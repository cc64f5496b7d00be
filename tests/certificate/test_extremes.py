"""Extreme but legal arguments (issue 11.4): answer, or refuse with one line.

* tiny sigma (huge Gaussian shift) and ``p_upper = 0`` used to end in "could not bracket"
  tracebacks; they have answers;
* ``pA = 1`` has an unbounded radius, which ``--json`` must write as valid JSON (null);
* large token budgets must be cheap (memory measured with tracemalloc, not timed), and
  budgets beyond the documented cap are refused with one line.
"""

import json
import math
import tracemalloc

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
    upper_bound,
)
from hybridcert.cli.main import main
from tests.certificate import exact as E


def strict_json(text: str):
    """json.loads that refuses the non-JSON constants Infinity and NaN."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, out, err):
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("hybridcert: error:")
    assert "Traceback" not in err


@pytest.mark.parametrize("sigma", [1e-300, 1e-30, 1e-3])
def test_cli_bound_with_a_tiny_sigma_answers(sigma, capsys):
    code, out, err = run(["bound", "--p-lower", "0.9", "--sigma", str(sigma), "--l2", "0.1",
                          "--tokens", "1", "--keep-prob", "0.1", "--vocab-size", "30522",
                          "--json"], capsys)
    assert code == 0, err
    result = strict_json(out)
    # gamma = 0.1 / sigma >= 100: the exact bound is below 1e-300 (Phi(1.28 - 100)).
    assert result["lower_bound"] == 0.0
    assert result["continuous_only_bound"] == 0.0
    assert result["certified"] is False


@pytest.mark.parametrize("gamma", [40.0, 60.0, 79.9, 80.0, 1e3, 1e299])
def test_huge_shifts_are_exact(gamma):
    """At and beyond the separation point the bounds are 0 and 1 (exactly, in doubles);
    below it, the solver still brackets (40 and 60 checked against 50-digit values)."""
    tokens = Substitution(0.3, 5).likelihood_ratio(2)
    ratio = tokens * LikelihoodRatio.identity(gamma)
    p = np.array([0.5, 1 - 1e-16, 1.0])
    low = lower_bound(p, ratio)
    up = upper_bound(np.array([0.0, 1e-300, 0.5]), ratio)
    assert low[2] == pytest.approx(1.0, abs=1e-11)          # p = 1: S is everything
    assert up[0] <= 1e-299                                   # q = 0: no ratio-inf mass
    if gamma <= 60:
        regions = E.substitution(0.3, 5, 2)
        assert low[1] <= E.lower(p[1], regions, gamma)
        assert up[1] >= E.upper(1e-300, regions, gamma)
    else:
        assert low[0] == low[1] == 0.0
        assert up[1] == up[2] == 1.0


def test_radius_with_p_upper_zero_has_an_answer(capsys):
    """pB = 0: upper(0) is the ratio-infinity mass.  Substitution has none, so every radius
    is certified (null); masking has 1 - m, which gives a finite closed-form radius."""
    code, out, err = run(["radius", "--p-lower", "0.9", "--sigma", "1", "--keep-prob", "0.1",
                          "--vocab-size", "30522", "--p-upper", "0", "--max-tokens", "3",
                          "--json"], capsys)
    assert code == 0, err
    result = strict_json(out)
    assert result["max_tokens"] == 3
    assert [row["l2_radius"] for row in result["frontier"]] == [None] * 4

    keep, p = 0.1, 0.9
    code, out, err = run(["radius", "--p-lower", str(p), "--sigma", "1", "--keep-prob",
                          str(keep), "--noise", "mask", "--p-upper", "0", "--max-tokens", "2",
                          "--json"], capsys)
    assert code == 0, err
    rows = strict_json(out)["frontier"]
    assert rows[0]["l2_radius"] is None
    for row in rows[1:]:
        m = (1 - keep) ** row["tokens"]
        # m Phi(Phi^-1(1 - (1 - p) / m) - gamma) > 1 - m
        expected = norm.ppf(1 - (1 - p) / m) - norm.ppf((1 - m) / m)
        assert row["l2_radius"] <= expected * (1 + 1e-9)
        assert row["l2_radius"] == pytest.approx(expected, rel=1e-7)


def test_p_upper_zero_in_the_library():
    frontier = certified_frontier([0.3, 0.9], sigma=0.5, discrete=None, p_upper=0.0)
    assert np.all(np.isinf(frontier.l2_radius[:, 0]))
    # pA <= mass of the ratio-0 atom cannot beat even pB = 0.
    frontier = certified_frontier(0.0, sigma=0.5, discrete=None, p_upper=0.0)
    assert frontier.max_tokens[0] == -1


def test_radius_of_p_lower_one_is_null_in_json(capsys):
    code, out, err = run(["radius", "--p-lower", "1", "--sigma", "1", "--json"], capsys)
    assert code == 0, err
    assert strict_json(out) == {"max_tokens": 0, "frontier": [{"tokens": 0,
                                                               "l2_radius": None}]}
    frontier = certified_frontier(1.0, sigma=1.0, discrete=None)
    assert math.isinf(frontier.l2_radius[0, 0])


def test_radius_of_p_lower_one_with_tokens_reaches_the_cap(capsys):
    """lower(1) = 1 for substitution at every r: all 1000 default budgets are certified,
    each with an unbounded radius (this took about a minute and 0.4 GB before)."""
    tracemalloc.start()
    frontier = certified_frontier(1.0, sigma=1.0, discrete=Substitution(0.1, 30522))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert frontier.max_tokens[0] == 1000
    assert np.all(np.isinf(frontier.l2_radius[0]))
    assert peak < 50e6
    # Masking: lower(1) = m = 0.9^r > 1/2 up to r = 6.
    frontier = certified_frontier(1.0, sigma=1.0, discrete=Mask(0.1))
    assert frontier.max_tokens[0] == 6


def test_large_budget_is_cheap_in_memory():
    """r = 3,000 used to allocate 1.5 GB (an (r + 1) x (2r + 1) table of log terms)."""
    tracemalloc.start()
    ratio = Substitution(0.3, 30522).likelihood_ratio(3000)
    value = lower_bound(0.9, ratio * LikelihoodRatio.identity(0.5))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50e6
    assert 0.0 <= value <= 0.9
    assert lower_bound(1.0, ratio) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize(("keep", "vocab", "r"), [(0.05, 30522, 40), (0.9, 3, 30),
                                                  (0.5, 10**6, 25)])
def test_substitution_masses_match_the_multinomial_formula(keep, vocab, r):
    """The O(r)-memory recurrence against the 50-digit multinomial sums."""
    ratio = Substitution(keep, vocab).likelihood_ratio(r)
    regions = {round(float(lr), 6): (mu, nu) for lr, mu, nu in
               E.substitution(keep, vocab, r).items}
    for lr, mu, nu in zip(ratio.log_ratio, ratio.mu, ratio.nu, strict=True):
        exact_mu, exact_nu = regions[round(float(lr), 6)]
        assert nu == pytest.approx(float(exact_nu), rel=ratio.mass_rtol + 1e-13)
        assert mu == pytest.approx(float(exact_mu), rel=ratio.mass_rtol + 1e-13)
    assert ratio.mass_rtol < 1e-10


def test_budgets_beyond_the_cap_are_refused():
    with pytest.raises(ValueError, match="tokens must be an integer <= 10000"):
        Substitution(0.1, 100).likelihood_ratio(10_001)
    with pytest.raises(ValueError, match="max_tokens must be an integer <= 10000"):
        certified_frontier(0.9, sigma=1.0, discrete=Mask(0.1), max_tokens=10_001)


@pytest.mark.parametrize("argv", [
    ["bound", "--p-lower", "0.9", "--tokens", "10001", "--keep-prob", "0.1",
     "--vocab-size", "100"],
    ["radius", "--p-lower", "0.9", "--keep-prob", "0.1", "--noise", "mask",
     "--max-tokens", "10001"],
    ["radius", "--p-lower", "0.9", "--side", "benign"],
    ["radius", "--p-lower", "0.9", "--threshold", "0"],
    ["radius", "--p-lower", "0.9", "--threshold", "1.5"],
    ["radius", "--p-lower", "0.9", "--threshold", "0.1", "--side", "benign"],
    ["radius", "--p-upper", "0.1", "--threshold", "0.1", "--side", "benign", "--p-lower",
     "0.9"],
    ["radius", "--p-lower", "0.9", "--threshold", "0.1", "--p-upper", "0.1"],
    ["radius", "--threshold", "0.1"],
    ["radius", "--p-upper", "1.5", "--threshold", "0.1", "--side", "benign"],
    ["bound", "--p-upper", "0.1"],
    ["bound", "--p-upper", "-1", "--threshold", "0.1", "--side", "benign"],
    ["bound", "--threshold", "0.1", "--side", "sideways", "--p-lower", "0.9"],
])
def test_cli_refuses_with_one_line(argv, capsys):
    assert_one_line_error(*run(argv, capsys))


def test_gaussian_only_radius_with_tiny_sigma():
    """A certified radius in tiny units stays finite and proportional to sigma."""
    frontier = certified_frontier(0.99, sigma=1e-300, discrete=None)
    assert frontier.l2_radius[0, 0] == pytest.approx(1e-300 * norm.ppf(0.99), rel=1e-9)
    assert Gaussian(1e-300).gamma(frontier.l2_radius[0, 0]) <= norm.ppf(0.99)


def test_radius_says_why_its_table_stops_before_max_tokens(capsys):
    """Mask noise, keep 0.1, pA >= 0.9, no L2 change: r changed tokens all stay masked with
    m = 0.9^r, so the worst case is pA' >= 0.9 - (1 - m) against pB' <= 0.1 + (1 - m);
    certified iff m > 0.6, i.e. r <= 4.  The table used to end at r = 4 without a word."""
    code, out, err = run(["radius", "--p-lower", "0.9", "--keep-prob", "0.1", "--noise",
                          "mask", "--max-tokens", "10"], capsys)
    assert code == 0, err
    m = 0.9 ** 5
    line = out.strip().splitlines()[-1]
    assert line == (f"Stops at r = 4 (--max-tokens 10): with 5 changed tokens the worst case "
                    f"leaves pA >= {0.9 - (1 - m):.4g}, not above the runner-up's worst case "
                    f"{0.1 + (1 - m):.4g}, even with no L2 change.")
    code, out, err = run(["radius", "--p-lower", "0.9", "--keep-prob", "0.1", "--noise",
                          "mask", "--max-tokens", "4"], capsys)
    assert code == 0 and "Stops at" not in out
