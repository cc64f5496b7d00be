"""Issue 25 item 5: a stored run as a DataFrame (one row per input and target, the region as
columns), a clear ImportError without pandas, and one line per input from ``certify``."""

import sys

import numpy as np
import pytest

from hybridcert.blocks import CertifiedRegion
from hybridcert.cli.main import main
from hybridcert.runs.store import RunStore

ARGS = ["--model", "tests.runs.toy_model:factory", "--sigma", "0.25", "--keep-prob", "0.3",
        "--n0", "16", "--n", "200", "--alpha", "0.01", "--max-tokens", "3"]


def stored(store):
    with RunStore(store, readonly=True) as s:
        return s.rows()


def test_load_one_row_per_input_with_the_region_as_columns(jsonl_dataset, tmp_path, capsys):
    pytest.importorskip("pandas")
    from hybridcert import results

    store = tmp_path / "s.sqlite"
    assert main(["certify", "--dataset", str(jsonl_dataset), "--store", str(store), *ARGS,
                 "--quiet"]) == 0
    frame = results.load(store)
    rows = stored(store)
    assert list(frame["id"]) == [r["id"] for r in rows] and len(frame) == 12
    assert [c for c in frame.columns if c.startswith("l2_r")] == ["l2_r0", "l2_r1", "l2_r2",
                                                                 "l2_r3"]
    for (_, line), row in zip(frame.iterrows(), rows, strict=True):
        assert line["predict"] == row["predict"] and line["p_lower"] == row["p_lower"]
        assert (line["label"], line["correct"]) == (row["label"], row["correct"])
        assert (line["status"], line["decided_at"]) == (row["status"], row["decided_at"])
        radii = {f["tokens"]: f["l2_radius"] for f in row["frontier"]}
        for r in range(4):
            if r in radii:
                assert line[f"l2_r{r}"] == pytest.approx(radii[r])
            else:
                assert np.isnan(line[f"l2_r{r}"])
        region = CertifiedRegion.from_rows(("text",), {"image": 0.25}, row["frontier"])
        assert line["region"] == str(region)


def test_load_one_row_per_input_and_target(jsonl_dataset, tmp_path):
    pytest.importorskip("pandas")
    from hybridcert import results

    store = tmp_path / "d.sqlite"
    assert main(["certify", "--dataset", str(jsonl_dataset), "--store", str(store), *ARGS,
                 "--quiet", "--mode", "decision", "--target", "0.1,0", "--target",
                 "0.2,1"]) == 0
    frame = results.load(store)
    rows = stored(store)
    assert len(frame) == 2 * len(rows)
    assert sorted(set(frame["target"])) == ["image=0.1", "image=0.2,text=1"]
    for row in rows:
        mine = frame[frame["id"] == row["id"]]
        assert list(mine["certified"]) == [t["certified"] for t in row["targets"]]
        assert list(mine["target_image"]) == [0.1, 0.2]
        # the input's ending and each target's (issue 22 item 3; dropped before)
        assert set(mine["status"]) == {row["status"]}
        assert set(mine["decided_at"]) == {row["decided_at"]}
        assert list(mine["target_status"]) == [t["status"] for t in row["targets"]]
        assert list(mine["target_decided_at"]) == [t["decided_at"] for t in row["targets"]]
    assert set(frame["target_status"]) <= {"certified", "refuted", "gave_up", "cap"}


def test_a_missing_pandas_is_one_clear_line(monkeypatch, tmp_path):
    from hybridcert import results

    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"^hybridcert.results needs pandas: pip install "
                                          r"'hybridcert\[data\]'$"):
        results.load(tmp_path / "any.sqlite")


def test_certify_prints_one_line_per_input(jsonl_dataset, tmp_path, capsys):
    store = tmp_path / "lines.sqlite"
    assert main(["certify", "--dataset", str(jsonl_dataset), "--store", str(store),
                 *ARGS]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    rows = {r["id"]: r for r in stored(store)}
    assert len(out) == 12 and {line.split(":")[0] for line in out} == set(rows)
    for line in out:
        row = rows[line.split(":")[0]]
        region = CertifiedRegion.from_rows(("text",), {"image": 0.25}, row["frontier"])
        head = f"{row['id']}: " + ("abstain" if row["predict"] < 0 else
                                   f"class {row['predict']}") + f" (label {row['label']})"
        assert line == (head + f": {region}" if region.certified else head)
    again = tmp_path / "quiet.sqlite"
    assert main(["certify", "--dataset", str(jsonl_dataset), "--store", str(again), *ARGS,
                 "--quiet"]) == 0
    assert capsys.readouterr().out == ""
