"""The committed full run (docs/benchmark/full/) agrees with its own per-input files.

The headline of `make full-benchmark` — certified unsafe recall of the detector per cell, per
seed, its mean over seeds and the Student-t interval — is recomputed here from the per-input
TSVs alone (``inputs/seed<S>_level<L>_anywhere_cells.tsv``: one 0/1 column per rule and cell)
with scipy's t quantile, and compared with results.json and with the REPORT.md text.  A
hand-edited figure, a stale TSV from an earlier run or a report rendered from other units
fails here.
"""

import csv
import json
import re
from pathlib import Path

import numpy as np
from scipy import stats

FULL = Path(__file__).resolve().parents[2] / "docs" / "benchmark" / "full"
EPS = [0.0, 0.25, 0.5, 0.75, 1.0]
TOKENS = [0, 1, 2, 4, 8]


def _results() -> dict:
    return json.loads((FULL / "results.json").read_text())


def _cells(path: Path) -> tuple[np.ndarray, dict, np.ndarray]:
    """(labels, {cell index: 0/1 column of the detector}, drawn) of one unit's TSV."""
    with path.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    labels = np.array([int(r["label"]) for r in rows])
    columns = {}
    for name in rows[0]:
        m = re.fullmatch(r"detector\[([0-9.]+),([0-9]+)\]", name)
        if m:
            cell = EPS.index(float(m.group(1))) * len(TOKENS) + TOKENS.index(int(m.group(2)))
            columns[cell] = np.array([int(r[name]) for r in rows])
    return labels, columns, np.array([int(r["drawn"]) for r in rows])


def _levels(results: dict) -> list[int]:
    return sorted(int(k[len("level"):-len("_anywhere")]) for k in results["metrics"]
                  if k.endswith("_anywhere"))


def test_the_full_run_is_at_a_fixed_n_with_five_seeds():
    results = _results()
    settings = results["config"]["settings"]
    assert settings["mode"] == "fixed"
    for li in _levels(results):
        seeds = results["metrics"][f"level{li}_anywhere"]["seeds"]
        assert len(seeds) >= 5
        for seed in seeds:
            _, _, drawn = _cells(FULL / "inputs" / f"seed{seed}_level{li}_anywhere_cells.tsv")
            assert (drawn == settings["n_max"]).all()


def test_headline_recomputed_from_the_per_input_files():
    results = _results()
    report = (FULL / "REPORT.md").read_text()
    levels = _levels(results)
    assert levels
    for li in levels:
        m = results["metrics"][f"level{li}_anywhere"]
        per_seed = []
        for seed in m["seeds"]:
            path = FULL / "inputs" / f"seed{seed}_level{li}_anywhere_cells.tsv"
            labels, columns, _ = _cells(path)
            assert sorted(columns) == list(range(25))
            per_seed.append([columns[c][labels == 1].mean() for c in range(25)])
        per_seed = np.array(per_seed)
        np.testing.assert_allclose(per_seed, m["detector"]["per_seed"], atol=1e-12)
        mean = per_seed.mean(0)
        np.testing.assert_allclose(mean, m["detector"]["mean"], atol=1e-12)
        sd = per_seed.std(0, ddof=1)
        # cells where every seed agrees have no spread (scipy wants a positive scale)
        spread = sd > 0
        low, high = mean.copy(), mean.copy()
        low[spread], high[spread] = stats.t.interval(
            0.95, len(per_seed) - 1, loc=mean[spread],
            scale=sd[spread] / np.sqrt(len(per_seed)))
        np.testing.assert_allclose(np.clip(low, 0, 1), m["detector"]["low"], atol=1e-9)
        np.testing.assert_allclose(np.clip(high, 0, 1), m["detector"]["high"], atol=1e-9)
        # the report prints the (0, 0) cell with every seed's own value
        text = (f"{100 * mean[0]:.1f} [{100 * np.clip(low[0], 0, 1):.1f}, "
                f"{100 * np.clip(high[0], 0, 1):.1f}] ("
                + " / ".join(f"{100 * v:.1f}" for v in per_seed[:, 0]) + ")")
        assert text in report, text


def test_no_file_of_an_earlier_run_is_left_beside_it():
    """Every per-input file belongs to a unit of this run's results."""
    units = set(_results()["units"])
    for path in (FULL / "inputs").iterdir():
        unit = re.sub(r"_(cells|detector|majority)$", "", path.stem)
        assert unit in units, path.name
