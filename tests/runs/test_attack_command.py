"""Issue 25 item 4: ``hybridcert attack`` on a stored run — inside the certified regions no
flip; a store whose certificate claims too much IS caught (soundness alarm, exit 3); beyond
the regions a flip is found on a weak model; results stored and reported."""

import json
import sqlite3

import numpy as np
import pytest
from PIL import Image
from scipy.stats import beta

from hybridcert.cli.main import main
from hybridcert.runs.store import RunStore

MODEL = ["--model", "tests.runs.attack_model:factory"]
CERTIFY = ["--sigma", "0.25", "--keep-prob", "0.5", "--n0", "16", "--n", "500", "--alpha",
           "0.01", "--max-tokens", "4", "--quiet"]
FAST = ["--steps", "8", "--samples", "8", "--candidates", "8", "--n", "400", "--quiet"]


@pytest.fixture(scope="module")
def certified(tmp_path_factory):
    """A certified run of four inputs whose image means lie near the decision boundary
    (0.5) of the toy model: large L2 changes flip them, small ones cannot."""
    folder = tmp_path_factory.mktemp("attack")
    rows = []
    for i, mean in enumerate((0.44, 0.47, 0.53, 0.56)):
        pixels = (mean * 255 * np.ones((16, 16, 3))).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"img{i}.png")
        rows.append({"id": f"row{i}", "image": f"img{i}.png", "label": int(mean > 0.5),
                     "text": ("we bake a cake together", "lovely day at the park")[i % 2]})
    (folder / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    store = folder / "run.sqlite"
    assert main(["certify", "--dataset", str(folder / "data.jsonl"), "--store", str(store),
                 *MODEL, *CERTIFY]) == 0
    return folder, store


def copy_of(store, tmp_path, name="copy.sqlite"):
    target = tmp_path / name
    source = sqlite3.connect(store)
    with sqlite3.connect(target) as out:
        source.backup(out)
    source.close()
    return target


def attacks(store):
    with RunStore(store, readonly=True) as s:
        return s.attack_rows()


def test_inside_the_region_no_flip_and_rows_are_stored(certified, tmp_path, capsys):
    _, store = certified
    store = copy_of(store, tmp_path)
    assert main(["attack", "--store", str(store), "--inside", *FAST]) == 0
    rows = attacks(store)
    with RunStore(store, readonly=True) as s:
        stored = {r["id"]: r for r in s.rows()}
    assert len(rows) == 4 and {r["kind"] for r in rows} == {"inside"}
    for row in rows:
        assert row["certified_budget"] and not row["alarm"]
        assert row["outcome"] != "flipped"
        eps = row["budget"]["image"]
        r = row["budget"]["text"]
        assert eps > 0 and row["l2_used"] <= eps + 1e-4 and row["tokens_changed"] <= r
        # the budget is the frontier point at r tokens (r = 1 asked, capped at the region's)
        frontier = {f["tokens"]: f["l2_radius"] for f in stored[row["id"]]["frontier"]}
        assert r == min(1, max(frontier)) and eps == pytest.approx(frontier[r])
        assert row["lower_after"] <= row["estimate_after"] <= row["upper_after"]
        assert row["n"] == 400 and row["alpha"] == 0.01
        # two classes: the bounds at alpha / 2 each; the outcome recomputed from the counts
        k, n = row["counts_after"][row["predict"]], row["n"]
        upper = 1.0 if k == n else beta.ppf(1 - 0.005, k + 1, n - k)
        lower = 0.0 if k == 0 else beta.ppf(0.005, k, n - k + 1)
        assert row["outcome"] == ("flipped" if upper < 0.5 else "held" if lower > 0.5
                                  else "undecided")
        assert row["upper_after"] == pytest.approx(upper)
    err = capsys.readouterr().err
    assert "SOUNDNESS ALARM" not in err and "0 flipped" in err


def test_a_certificate_that_claims_too_much_is_caught(certified, tmp_path, capsys):
    """The stored regions inflated tenfold (a broken certificate): attacking inside the
    claimed region flips decisions, and the command raises the alarm and exits 3."""
    _, store = certified
    store = copy_of(store, tmp_path)
    with sqlite3.connect(store) as db:
        for input_id, payload in db.execute("SELECT input_id, row FROM results").fetchall():
            row = json.loads(payload)
            for point in row["frontier"]:
                point["gamma"] *= 10
                point["l2_radius"] *= 10
            db.execute("UPDATE results SET row = ? WHERE input_id = ?",
                       (json.dumps(row), input_id))
    assert main(["attack", "--store", str(store), "--inside", *FAST]) == 3
    out = capsys.readouterr()
    assert "hybridcert: SOUNDNESS ALARM: the attack flipped" in out.err
    rows = attacks(store)
    assert any(r["alarm"] and r["outcome"] == "flipped" for r in rows)
    flipped = [r for r in rows if r["alarm"]]
    assert all(r["upper_after"] < 0.5 for r in flipped)       # proven, not a point estimate


def test_beyond_the_region_a_flip_is_found_and_reported(certified, tmp_path, capsys):
    _, store = certified
    store = copy_of(store, tmp_path)
    assert main(["attack", "--store", str(store), "--beyond", "8", *FAST]) == 0
    rows = attacks(store)
    assert rows and all(r["kind"] == "beyond" and r["factor"] == 8 for r in rows)
    assert all(not r["alarm"] for r in rows)
    assert any(r["outcome"] == "flipped" for r in rows)
    assert all(not r["certified_budget"] for r in rows)
    assert main(["report", str(store), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "REPORT.md").read_text()
    assert "## Attacks" in report and "beyond x8" in report and "flipped" in report
    assert (tmp_path / "report" / "attacks.csv").exists()
    pytest.importorskip("pandas")
    from hybridcert import results

    frame = results.attacks(store)
    assert list(frame["outcome"]) == [r["outcome"] for r in rows]
    assert list(frame["budget_image"]) == [r["budget"]["image"] for r in rows]


def test_bad_options_and_models_are_one_line(certified, tmp_path, capsys):
    _, store = certified
    for argv, message in (([], "give --inside"), (["--beyond", "0.5"], "--beyond must be"),
                          (["--inside", "--n", "0"], "--n must be an integer >= 1"),
                          (["--inside", "--alpha", "2"], "--alpha must lie in")):
        assert main(["attack", "--store", str(store), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("hybridcert: error:") and message in err
        assert len(err.splitlines()) == 1
    missing = tmp_path / "none.sqlite"
    assert main(["attack", "--store", str(missing), "--inside"]) == 2
    assert "not found" in capsys.readouterr().err and not missing.exists()


def test_a_model_that_returns_labels_is_refused(certified, tmp_path, capsys):
    folder, _ = certified
    store = tmp_path / "labels.sqlite"
    assert main(["certify", "--dataset", str(folder / "data.jsonl"), "--store", str(store),
                 "--model", "tests.runs.attack_model:labels_factory", *CERTIFY]) == 0
    capsys.readouterr()
    assert main(["attack", "--store", str(store), "--inside", *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs a model that returns logits" in err and len(err.splitlines()) == 1
    assert attacks(store) == []


def test_detector_outcomes_follow_the_clopper_pearson_bounds(certified, tmp_path, capsys):
    """A flag-side detector run: the stored outcome of each attack agrees with one-sided
    Clopper-Pearson bounds at alpha computed here from the stored counts (scipy's beta
    quantiles directly), and nothing flips inside."""
    folder, _ = certified
    store = tmp_path / "flag.sqlite"
    assert main(["certify", "--dataset", str(folder / "data.jsonl"), "--store", str(store),
                 *MODEL, *CERTIFY, "--rule", "flag", "--threshold", "0.5"]) == 0
    assert main(["attack", "--store", str(store), "--inside", "--beyond", "10", *FAST]) == 0
    rows = attacks(store)
    assert rows and all(r["decision"] == "flag" for r in rows)
    tau, alpha = 0.5, 0.01
    for row in rows:
        n, k = row["n"], row["counts_after"][1]
        assert sum(row["counts_after"]) == n
        upper = 1.0 if k == n else beta.ppf(1 - alpha, k + 1, n - k)
        lower = 0.0 if k == 0 else beta.ppf(alpha, k, n - k + 1)
        expected = "flipped" if upper < tau else "held" if lower >= tau else "undecided"
        assert row["outcome"] == expected
        assert row["kind"] == "beyond" or row["outcome"] != "flipped"
    assert any(r["outcome"] == "flipped" for r in rows if r["kind"] == "beyond")
