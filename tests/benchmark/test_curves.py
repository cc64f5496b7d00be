"""The detector's operating curves (bench/curves.py) on the counts a real fixed-n unit stores:
certified recall and false flags never increase with tau at any budget, a point of the curve
is the Clopper-Pearson bound (scipy) pushed through Cohen et al.'s closed-form Gaussian
certificate, the curve at the unit's own tau reproduces the unit's decisions, and the
validation taus are the calibration's."""

import numpy as np
import pytest
from scipy.stats import beta, norm

from hybridcert.bench import curves
from hybridcert.bench.calibrate import choose_threshold
from hybridcert.bench.runner import _pack
from hybridcert.bench.units import Settings, certify_fixed
from hybridcert.smoothing import SmoothedClassifier
from tests.benchmark.test_fixed_n import NOISE, SIGMA, Toy, _records

ALPHA, N, TAU = 0.01, 300, 0.55
CELLS = [tuple(c) for c in curves.CURVE_BUDGETS]


@pytest.fixture(scope="module")
def stored():
    """A tiny fixed-n unit as the benchmark stores it (``_pack``: rows with counts)."""
    clf = SmoothedClassifier(Toy(), NOISE, 2, batch_size=128)
    records = _records(16)
    unit = certify_fixed(clf, records, [300 + i for i in range(16)], CELLS,
                         Settings(alpha=ALPHA, n_max=N, mode="fixed"), TAU, majority=False,
                         baselines=False)
    labels = np.array([i % 2 for i in range(16)])
    return _pack(unit, labels, [f"t{i}" for i in range(16)]), unit


def _rates(certified, labels):
    """(taus, budgets) recall over label 1 and false flags over label 0."""
    return certified[:, :, labels == 1].mean(2), certified[:, :, labels == 0].mean(2)


def test_recall_and_false_flags_never_increase_with_tau(stored):
    packed, _ = stored
    labels = np.asarray(packed["labels"])
    bounds = curves.unit_bounds(packed, NOISE, ALPHA)
    taus = curves.tau_grid([TAU])
    certified = curves.certified(bounds, taus)
    assert certified.shape == (taus.size, len(CELLS), labels.size)
    recall, false_flags = _rates(certified, labels)
    for rates in (recall, false_flags):
        assert (np.diff(rates, axis=0) <= 0).all()
    # not flat: the low taus certify inputs that the high ones do not, at every budget
    assert (recall[0] > recall[-1]).all() and (false_flags[0] > false_flags[-1]).all()
    # and per input: certified at tau implies certified at every lower tau
    assert (certified[:-1] >= certified[1:]).all()


def test_a_point_is_the_independent_clopper_pearson_and_gaussian_bound(stored):
    packed, _ = stored
    flagged = np.array([row["counts"][1] for row in packed["rows"]["detector"]])
    assert {row["queries"] for row in packed["rows"]["detector"]} == {N}
    # independent: scipy's beta quantile and Cohen et al.'s closed form
    p = np.where(flagged > 0, beta.ppf(ALPHA, flagged, N - flagged + 1), 0.0)
    bounds = curves.unit_bounds(packed, NOISE, ALPHA)
    assert np.allclose(curves.flag_bounds(flagged, N, ALPHA), p, rtol=1e-12, atol=1e-15)
    checked = 0
    for tau in (0.3, TAU, 0.8):
        certified = curves.certified(bounds, [tau])[0]
        for b, (eps, r) in enumerate(CELLS):
            if r:
                continue
            value = norm.cdf(norm.ppf(np.clip(p, 1e-300, 1)) - eps / SIGMA)
            clear = np.abs(value - tau) > 1e-9
            assert np.array_equal(certified[b][clear], (value >= tau)[clear]), (tau, eps)
            checked += int(clear.sum())
    assert checked >= 80


def test_the_curve_at_the_units_tau_is_the_units_decisions(stored):
    packed, unit = stored
    bounds = curves.unit_bounds(packed, NOISE, ALPHA)
    at = curves.certified(bounds, [TAU])[0]
    assert np.array_equal(at.T, unit["outcomes"]["detector"])
    assert at.any() and not at.all()


def test_tau_ceiling_and_grid():
    taus = curves.tau_grid([0.9492, 1.5, float("nan")])
    assert taus[0] == pytest.approx(4.6e-5) and taus[-1] == pytest.approx(0.999)
    assert 0.9492 in taus and (np.diff(taus) > 0).all() and taus.size == 24 + 16 - 1 + 1
    ceiling = curves.tau_ceiling(NOISE, N, ALPHA, CELLS)
    top = (ALPHA ** (1 / N))                          # Clopper-Pearson bound of N of N
    assert ceiling[0] == pytest.approx(top, rel=1e-9)
    assert ceiling[CELLS.index((0.25, 0))] == pytest.approx(
        norm.cdf(norm.ppf(top) - 0.25 / SIGMA), rel=1e-9)
    # nothing above the ceiling is certified even with every draw flagged
    best = curves.budget_bounds(NOISE, [top], CELLS)
    assert not curves.certified(best, ceiling * (1 + 1e-9)).any(axis=2).diagonal().any()


def test_validation_taus_are_the_calibrations():
    rng = np.random.default_rng(4)
    scores = rng.binomial(32, rng.beta(0.5, 2.0, 200)) / 32
    copies = np.full(200, 32)
    calibration = {"scores": scores.tolist(), "copies_each": copies.tolist(),
                   "styles": ["openmoji"] * 150 + ["noto"] * 50}
    taus = curves.validation_taus(calibration)
    for rate in curves.VAL_RATES:
        assert taus[rate]["tau"] == choose_threshold(scores, copies, rate)["tau"]
        assert curves.validation_rate(calibration, taus[rate]["tau"]) == taus[rate]["rate"] \
            <= rate
    assert curves.validation_rate(calibration, 0.5, "noto") == np.mean(scores[150:] >= 0.5)
    assert curves.validation_taus({"tau": 0.5}) is None
    assert np.isnan(curves.validation_rate({}, 0.5))


def test_sequential_units_get_no_curves(stored):
    """A sequential unit's counts stop at a data-dependent time: no fixed-n bound, no curve."""
    from hybridcert.bench import report
    from hybridcert.bench.runner import BenchmarkConfig

    packed, _ = stored
    sequential = {**packed, "mode": "sequential"}
    assert curves.fixed_counts(sequential) is None and curves.unit_bounds(
        sequential, NOISE, ALPHA) is None
    text = "\n".join(report._curves_section({(0, "anywhere"): {"detector": {}}},
                                            BenchmarkConfig()))
    assert "Not available for this run" in text


def test_calibration_error_interval_covers_the_procedures_false_flag_rate():
    """Closed form: benign validation scores and benign test bounds both uniform on (0, 1).
    With 100 benign validation records at a 5 % target, tau is the midpoint of the 5th and
    6th largest scores, so the calibrated detector's expected false-flag rate is
    E[1 - tau] = 5.5 / 101.  Over seeded runs the interval that re-runs the calibration on
    resampled validation data covers it about 95 % of the time; the interval over test
    inputs alone (tau taken as exact, 400 benign test inputs) misses it far more often."""
    target, runs = 5.5 / 101, 200
    covered = covered_alone = 0
    for run in range(runs):
        rng = np.random.default_rng(run)
        calibration = {"scores": rng.uniform(size=100).tolist(), "copies_each": [10**9] * 100}
        benign = rng.uniform(size=400)
        labels = np.r_[np.ones(50, int), np.zeros(400, int)]
        bounds = np.r_[rng.uniform(size=50), benign][None, :]
        out = curves.calibration_bootstrap(bounds, labels, calibration, 0.05, replicates=400,
                                           seed=run)
        assert out["tau"] == choose_threshold(np.array(calibration["scores"]), 10**9,
                                              0.05)["tau"]
        assert out["tau_low"] <= out["tau"] <= out["tau_high"]
        ff = out["false_flags"]
        assert ff["value"][0] == np.mean(benign >= out["tau"])
        covered += ff["low"][0] <= target <= ff["high"][0]
        alone = (rng.choice(benign, (400, benign.size)) >= out["tau"]).mean(1)
        low, high = np.quantile(alone, [0.025, 0.975])
        covered_alone += low <= target <= high
    assert covered / runs >= 0.88
    assert covered_alone / runs <= 0.8


def test_calibration_error_needs_stored_estimates_and_valid_arguments():
    labels = np.array([1, 0])
    assert curves.calibration_bootstrap(np.zeros((1, 2)), labels, {"tau": 0.5}) is None
    calibration = {"scores": [0.1, 0.2], "copies_each": [32, 32]}
    with pytest.raises(ValueError, match="bounds must have shape"):
        curves.calibration_bootstrap(np.zeros((1, 3)), labels, calibration)
    with pytest.raises(ValueError, match="replicates"):
        curves.calibration_bootstrap(np.zeros((1, 2)), labels, calibration, replicates=0)


def test_curves_of_one_panel_may_have_their_own_taus(tmp_path):
    """Two levels in one panel are read at their own tau grids (each grid holds its seeds'
    calibrated taus), so their lengths differ (the full run's final report failed here)."""
    from hybridcert.reports import plots

    grids = [curves.tau_grid([0.93]), curves.tau_grid([0.95, 0.97, 0.99])]
    assert grids[0].size != grids[1].size
    lines = [{"label": f"level {k}", "x": g, "mean": np.linspace(1, 0, g.size),
              "low": np.zeros(g.size), "high": np.ones(g.size)} for k, g in enumerate(grids)]
    path = plots.tau_curves([{"title": "all", "x": grids[1], "curves": lines}],
                            tmp_path / "curves.png", "two levels")
    assert path.stat().st_size > 1000


def _branch(flagged, n):
    """A fixed-n branch as the benchmark stores it: one detector row per input."""
    return {"mode": "fixed", "rows": {"detector": [{"counts": [n - int(k), int(k)],
                                                    "queries": n} for k in flagged]}}


def test_factorized_and_is_each_branch_certified_independently():
    """The AND's certified flag at (eps, r) from its stored branch counts: the image branch's
    Clopper-Pearson bound (scipy) through Cohen et al.'s closed form at eps clears tau_image
    and the text branch's bound, after r substitutions (an independent linear program over
    the outcomes of the changed position; r = 0: the bound itself), clears tau_text."""
    from hybridcert.bench.threats import branch_noise
    from tests.certificate.brute_force import discrete_outcomes, lp_lower_bound

    level, n, alpha = (0.25, 0.75), 400, ALPHA / 2
    rng = np.random.default_rng(7)
    image_flagged, text_flagged = rng.integers(300, n + 1, 24), rng.integers(300, n + 1, 24)
    entry = {"branches": {"image": _branch(image_flagged, n), "text": _branch(text_flagged, n)}}
    text_noise = branch_noise(level, "text")
    bounds = curves.and_bounds(entry, branch_noise(level, "image"), text_noise, alpha, CELLS)
    p_image = beta.ppf(alpha, image_flagged, n - image_flagged + 1)
    p_text = beta.ppf(alpha, text_flagged, n - text_flagged + 1)
    vocab = text_noise.blocks[0].vocabulary.size
    mu, nu = discrete_outcomes("substitution", level[1], vocab, 1)
    text_after = {0: p_text, 1: np.array([lp_lower_bound(p, mu, nu) for p in p_text])}
    pairs = [(0.9, 0.9), (0.95, 0.97), (0.5, 0.99)]
    certified = curves.and_certified(bounds, pairs)
    assert certified.shape == (len(pairs), len(CELLS), 24)
    checked = 0
    for k, (ti, tt) in enumerate(pairs):
        for b, (eps, r) in enumerate(CELLS):
            if r not in text_after:
                continue
            image_after = norm.cdf(norm.ppf(p_image) - eps / level[0])
            clear = (np.abs(image_after - ti) > 1e-9) & (np.abs(text_after[r] - tt) > 1e-7)
            expected = (image_after >= ti) & (text_after[r] >= tt)
            assert np.array_equal(certified[k, b][clear], expected[clear]), (ti, tt, eps, r)
            checked += int(clear.sum())
    assert checked >= 250 and certified.any() and not certified.all()
    assert curves.and_bounds({"branches": {"image": {"mode": "sequential"},
                                           "text": entry["branches"]["text"]}},
                             branch_noise(level, "image"), text_noise, alpha, CELLS) is None


def test_and_pairs_are_the_calibrations_choice_and_never_exceed_the_rate():
    from hybridcert.bench.calibrate import choose_pair

    rng = np.random.default_rng(8)
    labels = rng.integers(0, 2, 300)
    copies = 16
    validation = {"image": (rng.binomial(copies, np.where(labels, 0.6, 0.3)) / copies).tolist(),
                  "text": (rng.binomial(copies, np.where(labels, 0.55, 0.4)) / copies).tolist(),
                  "labels": labels.tolist(), "copies": copies}
    pairs = curves.and_pairs(validation, (0.01, 0.05, 0.2))
    for rate, pair in pairs.items():
        assert pair == choose_pair(validation["image"], validation["text"], labels, copies,
                                   rate)
        flagged = (np.array(validation["image"]) >= pair["tau_image"]) & \
            (np.array(validation["text"]) >= pair["tau_text"])
        assert pair["rate"] == flagged[labels == 0].mean() <= rate
    assert pairs[0.01]["recall"] <= pairs[0.05]["recall"] <= pairs[0.2]["recall"]
    assert curves.and_pairs({}) is None
