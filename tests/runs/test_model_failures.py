"""A user model that raises on some inputs: every other input is certified and stored, as
it would be undisturbed; the run ends with one line naming the failed rows and blaming the
model (exit 4), and a resume once the model is fixed certifies the rest."""

import json

import pytest

from hybridcert.cli.main import main
from hybridcert.runs.store import RunStore

ARGS = ["--model", "tests.runs.toy_model:failing_factory", "--sigma", "0.25",
        "--keep-prob", "0.3", "--n0", "16", "--n", "200", "--alpha", "0.01",
        "--max-tokens", "4"]
MODES = {"fixed": [], "decision": ["--mode", "decision", "--target", "0.1,0", "--n", "3200"]}
TEXTS = ["i will hurt you", "we bake a cake", "lovely day at the park",
         "i want to attack them", "a lovely cake"]


def write_dataset(folder, marked="bd", marker="boom"):
    """Five rows, ids a to e; the rows in ``marked`` end with ``marker``."""
    from PIL import Image

    folder.mkdir()
    rows = []
    for i, text in enumerate(TEXTS):
        Image.new("RGB", (16, 16), (60 * i, 120, 200)).save(folder / f"img{i}.png")
        key = "abcde"[i]
        rows.append({"id": key, "image": f"img{i}.png", "label": i % 2,
                     "text": f"{text} {marker}" if key in marked else text})
    path = folder / "data.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def run(dataset, store, mode, *extra, quiet=True):
    return main(["certify", "--dataset", str(dataset), "--store", str(store), *ARGS,
                 *MODES[mode], *extra, *(["--quiet"] if quiet else [])])


def rows(store):
    """Stored rows by id, without the wall-clock time."""
    with RunStore(store, readonly=True) as s:
        return {r["id"]: {k: v for k, v in r.items() if k != "time"} for r in s.rows()}


@pytest.mark.parametrize("mode", list(MODES))
def test_the_inputs_the_model_fails_on_are_named_and_the_others_stored(
        tmp_path, capsys, monkeypatch, mode):
    """Rows b and d hold a word the model raises on; b shares its group of eight (fixed n)
    or its forward batches (decision) with every other row.  That used to end in
    "internal error ... please report it", exit 1, with nothing stored (fixed n)."""
    dataset = write_dataset(tmp_path / "data")
    store = tmp_path / "run.sqlite"
    assert run(dataset, store, mode) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"hybridcert: error: {dataset}:2 (id 'b'): the model failed on this "
                       f"input: RuntimeError: unknown word 'boom' (and 1 more input(s): "
                       f"{dataset}:4 (id 'd'))")
    assert "3 of 5 inputs are stored" in err[-2]
    failed = rows(store)
    assert sorted(failed) == ["a", "c", "e"]

    # The others' results are those of an undisturbed run with the same seeds: the same
    # rows where no input fails (rows b and d end with a word the model accepts).
    clean = write_dataset(tmp_path / "clean", marker="cake")
    reference = tmp_path / "reference.sqlite"
    assert run(clean, reference, mode) == 0
    undisturbed = rows(reference)
    assert all(failed[k] == undisturbed[k] for k in failed)

    # Resumable: once the model is fixed, the same command certifies only b and d.
    monkeypatch.setenv("TOY_MODEL_FIXED", "1")
    capsys.readouterr()
    assert run(dataset, store, mode, quiet=False) == 0
    assert "3 already done, 2 to go" in capsys.readouterr().err
    resumed = rows(store)
    assert sorted(resumed) == list("abcde")
    assert all(resumed[k] == failed[k] for k in failed)


def test_a_model_failing_on_every_input_after_the_fit_check_stores_nothing_else(
        tmp_path, capsys):
    """Every row but the first (which passes the pre-run fit check) fails."""
    dataset = write_dataset(tmp_path / "data", marked="bcde")
    store = tmp_path / "run.sqlite"
    assert run(dataset, store, "fixed") == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"hybridcert: error: {dataset}:2 (id 'b'): the model failed")
    assert err[-1].endswith(f"(and 3 more input(s): {dataset}:3 (id 'c'), {dataset}:4 "
                            f"(id 'd'), {dataset}:5 (id 'e'))")
    assert sorted(rows(store)) == ["a"]


def test_on_ray_too(tmp_path, capsys, ray_cluster):
    dataset = write_dataset(tmp_path / "data")
    store = tmp_path / "run.sqlite"
    assert run(dataset, store, "fixed", "--backend", "ray", "--workers", "2") == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"hybridcert: error: {dataset}:2 (id 'b'): the model failed on "
                              f"this input: RuntimeError: unknown word 'boom' (and 1 more")
    reference = tmp_path / "reference.sqlite"
    assert run(dataset, reference, "fixed") == 4
    assert rows(store) == rows(reference)


def test_a_failing_first_row_is_named_by_the_pre_run_check(tmp_path, capsys):
    """The first row is the pre-run fit check's: refused before any store, naming it."""
    dataset = write_dataset(tmp_path / "data", marked="a")
    store = tmp_path / "run.sqlite"
    assert run(dataset, store, "fixed") == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"hybridcert: error: the model does not accept the noisy inputs of "
                   f"{dataset}:1 (id 'a') (the pre-run check on the first row): RuntimeError: "
                   f"unknown word 'boom'")
    assert not store.exists()
