"""Every invalid argument of the certificate library and CLI gets a clear error."""

import json
import math

import pytest

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


@pytest.mark.parametrize(("make", "match"), [
    (lambda: Gaussian(0), "sigma must be a finite number > 0"),
    (lambda: Gaussian(-1), "sigma"),
    (lambda: Gaussian(math.nan), "sigma"),
    (lambda: Gaussian(math.inf), "sigma"),
    (lambda: Gaussian("a"), "sigma must be a number"),
    (lambda: Substitution(0.5, 1), "vocab_size must be an integer >= 2"),
    (lambda: Substitution(0.5, 2.5), "vocab_size"),
    (lambda: Substitution(0.001, 100), r"keep_prob must lie in \(1/vocab_size, 1\]"),
    (lambda: Substitution(1.5, 100), "keep_prob"),
    (lambda: Mask(0.0), r"keep_prob must lie in \(0, 1\]"),
    (lambda: Mask(1.01), "keep_prob"),
    (lambda: Gaussian(1.0).likelihood_ratio(-0.1), "l2 must be a finite number >= 0"),
    (lambda: Substitution(0.5, 10).likelihood_ratio(-1), "tokens must be an integer >= 0"),
    (lambda: Mask(0.5).likelihood_ratio(1.5), "tokens must be an integer"),
    (lambda: lower_bound(1.2, LikelihoodRatio.identity()), r"p must lie in \[0, 1\]"),
    (lambda: lower_bound(math.nan, LikelihoodRatio.identity()), "p must lie"),
    (lambda: upper_bound(-0.1, LikelihoodRatio.identity()), "q must lie"),
    (lambda: certified_frontier(0.9, sigma=0.0, discrete=None), "sigma"),
    (lambda: certified_frontier([0.9, 2.0], sigma=1.0, discrete=None), "p_lower"),
    (lambda: certified_frontier(0.9, sigma=1.0, discrete=None, p_upper=1.5), "p_upper"),
    (lambda: certified_frontier(0.9, sigma=1.0, discrete=Mask(0.1), max_tokens=-1),
     "max_tokens"),
])
def test_library_rejects_bad_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_keep_prob_one_certifies_no_token():
    frontier = certified_frontier(0.999999, sigma=1.0, discrete=Substitution(1.0, 100))
    assert frontier.max_tokens[0] == 0
    assert lower_bound(0.999999, Substitution(1.0, 100).likelihood_ratio(1)) == 0.0


@pytest.mark.parametrize("argv", [
    ["bound", "--p-lower", "1.5"],
    ["bound", "--p-lower", "abc"],
    ["bound"],
    ["bound", "--p-lower", "0.9", "--l2", "0.5"],
    ["bound", "--p-lower", "0.9", "--sigma", "0", "--l2", "0.5"],
    ["bound", "--p-lower", "0.9", "--l2", "-1", "--sigma", "1"],
    ["bound", "--p-lower", "0.9", "--tokens", "-1"],
    ["bound", "--p-lower", "0.9", "--tokens", "2"],
    ["bound", "--p-lower", "0.9", "--tokens", "2", "--keep-prob", "0.1"],
    ["bound", "--p-lower", "0.9", "--tokens", "2", "--keep-prob", "0.001",
     "--vocab-size", "100"],
    ["bound", "--p-lower", "0.9", "--noise", "gaussian"],
    ["bound", "--p-lower", "0.9", "--unknown"],
    ["radius", "--p-lower", "0.9", "--sigma", "-2"],
    ["radius", "--p-lower", "0.9", "--keep-prob", "0.1", "--vocab-size", "1"],
    ["radius", "--p-lower", "0.9", "--vocab-size", "100"],
    ["radius", "--p-lower", "0.9", "--p-upper", "7"],
    ["radius", "--p-lower", "0.9", "--max-tokens", "-3", "--keep-prob", "0.1",
     "--noise", "mask"],
])
def test_cli_rejects_bad_arguments_with_one_line(argv, capsys):
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("hybridcert: error:")
    assert "Traceback" not in err


def test_cli_bound_json_contract(capsys):
    assert main(["bound", "--p-lower", "0.9", "--sigma", "0.5", "--l2", "0.6", "--tokens",
                 "1", "--keep-prob", "0.2", "--vocab-size", "256", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    ratio = Gaussian(0.5).likelihood_ratio(0.6) * Substitution(0.2, 256).likelihood_ratio(1)
    assert result["lower_bound"] == lower_bound(0.9, ratio)
    assert isinstance(result["sequential_bound"], float)
    assert result["sequential_bound"] <= result["lower_bound"]


def test_cli_bound_discrete_only_and_gaussian_only(capsys):
    main(["bound", "--p-lower", "0.8", "--tokens", "1", "--keep-prob", "0.2",
          "--vocab-size", "256", "--json"])
    discrete = json.loads(capsys.readouterr().out)
    assert discrete["lower_bound"] == pytest.approx(0.8 - (0.2 - 0.8 / 255), abs=1e-11)
    main(["bound", "--p-lower", "0.8", "--sigma", "1", "--l2", "0.3", "--tokens", "0", "--json"])
    gaussian = json.loads(capsys.readouterr().out)
    assert gaussian["lower_bound"] == lower_bound(0.8, Gaussian(1).likelihood_ratio(0.3))
    main(["bound", "--p-lower", "0.8", "--tokens", "2", "--keep-prob", "0.1", "--noise", "mask",
          "--json"])
    mask = json.loads(capsys.readouterr().out)
    assert mask["lower_bound"] == pytest.approx(0.8 - (1 - 0.9**2), abs=1e-11)


def test_cli_radius_json_contract(capsys):
    assert main(["radius", "--p-lower", "0.99", "--sigma", "0.5", "--keep-prob", "0.1",
                 "--vocab-size", "30522", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    frontier = certified_frontier(0.99, sigma=0.5, discrete=Substitution(0.1, 30522))
    assert result["max_tokens"] == frontier.max_tokens[0] >= 1
    assert [row["tokens"] for row in result["frontier"]] == list(range(result["max_tokens"] + 1))
    assert result["frontier"][1]["l2_radius"] == frontier.l2_radius[0, 1]
    main(["radius", "--p-lower", "0.99", "--keep-prob", "0.1", "--vocab-size", "30522",
          "--max-tokens", "1", "--json"])
    capped = json.loads(capsys.readouterr().out)
    assert capped["max_tokens"] == 1
    assert all(row["l2_radius"] == 0.0 for row in capped["frontier"])
    main(["radius", "--p-lower", "0.4", "--sigma", "1", "--json"])
    assert json.loads(capsys.readouterr().out) == {"max_tokens": -1, "frontier": []}
    main(["radius", "--p-lower", "0.5", "--p-upper", "0.3", "--sigma", "1", "--json"])
    multi = json.loads(capsys.readouterr().out)
    assert multi["max_tokens"] == 0 and multi["frontier"][0]["l2_radius"] > 0


def test_cli_tables_print(capsys):
    assert main(["bound", "--p-lower", "0.9", "--sigma", "0.5", "--l2", "0.2"]) == 0
    assert "lower bound" in capsys.readouterr().out
    assert main(["radius", "--p-lower", "0.9", "--sigma", "0.5", "--keep-prob", "0.1",
                 "--vocab-size", "30522"]) == 0
    assert "L2 radius" in capsys.readouterr().out


def test_cli_bound_help_explains_every_row(capsys):
    """Each row `bound` prints is explained in its --help (GUIDE section 8 says the same)."""
    assert main(["bound", "--p-lower", "0.9", "--sigma", "0.5", "--l2", "0.6", "--tokens", "1",
                 "--keep-prob", "0.1", "--vocab-size", "30522"]) == 0
    table = capsys.readouterr().out
    assert main(["bound", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    for row in ("lower bound", "sequential bound", "continuous only bound",
                "discrete only bound"):
        assert row in table and f"{row}:" in help_text, row
    assert "joint certificate" in help_text and "do not cover the joint change" in help_text
