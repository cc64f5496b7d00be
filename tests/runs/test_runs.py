"""Dataset runs through the CLI: resumable (SIGKILL, Ctrl-C), keyed by content, Ray = local,
reports recomputed from stored rows, the user's own tokenizer end to end, clear errors."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hybridcert.cli.main import main
from hybridcert.runs.store import RunStore

ROOT = Path(__file__).resolve().parents[2]
#: Subprocesses import the code under test (this checkout's src), then the tests package.
SUBPROCESS_PATH = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
ARGS = ["--model", "tests.runs.toy_model:factory", "--sigma", "0.25", "--keep-prob", "0.3",
        "--n0", "16", "--n", "200", "--alpha", "0.01", "--max-tokens", "4", "--quiet"]


def certify(dataset, store, *extra):
    return main(["certify", "--dataset", str(dataset), "--store", str(store), *ARGS, *extra])


def stored(store):
    with RunStore(store, readonly=True) as s:
        return s.rows()


def comparable(store):
    """Stored rows without the wall-clock time."""
    return sorted(json.dumps({k: v for k, v in row.items() if k != "time"}, sort_keys=True)
                   for row in stored(store))


def count_rows(path):
    try:
        return sqlite3.connect(path).execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def start_slow_run(dataset, store):
    """A 12-input run of several seconds (0.3 s per model call), long enough to be
    interrupted midway even on a slow, loaded machine."""
    env = dict(os.environ, TOY_MODEL_DELAY="0.3", PYTHONPATH=SUBPROCESS_PATH)
    # as in a terminal: SIGINT delivered (a test run started in the background by a
    # non-interactive shell inherits SIGINT ignored, and Python then keeps ignoring it)
    return subprocess.Popen(
        [sys.executable, "-m", "hybridcert.cli.main", "certify", "--dataset", str(dataset),
         "--store", str(store), *ARGS], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_rows(store, at_least, seconds=120):
    deadline = time.time() + seconds
    while time.time() < deadline and (not store.exists() or count_rows(store) < at_least):
        time.sleep(0.2)


def test_sigkill_midway_then_resume_equals_an_uninterrupted_run(jsonl_dataset, tmp_path):
    reference = tmp_path / "reference.sqlite"
    assert certify(jsonl_dataset, reference) == 0
    killed = tmp_path / "killed.sqlite"
    process = start_slow_run(jsonl_dataset, killed)
    wait_for_rows(killed, 3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = stored(killed)
    assert 3 <= len(partial) < 12, "the run must be killed midway"
    assert certify(jsonl_dataset, killed) == 0         # resume
    resumed = stored(killed)
    assert len(resumed) == 12 and len({r["id"] for r in resumed}) == 12
    assert comparable(killed) == comparable(reference)


def test_ctrl_c_stops_cleanly_keeps_work_and_says_how_to_resume(jsonl_dataset, tmp_path):
    """Issue 11: SIGINT used to exit 0 silently."""
    store = tmp_path / "interrupted.sqlite"
    process = start_slow_run(jsonl_dataset, store)
    wait_for_rows(store, 2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    last = err.strip().splitlines()[-1]
    assert "interrupted" in last and "run the same command again to resume" in last
    assert "Traceback" not in err
    kept = count_rows(store)
    assert 2 <= kept < 12
    assert certify(jsonl_dataset, store) == 0
    assert len(stored(store)) == 12


@pytest.mark.parametrize("stop_at", [3, 6])
def test_each_input_is_stored_as_soon_as_it_finishes(jsonl_dataset, tmp_path, capsys,
                                                     monkeypatch, stop_at):
    """Fixed n: a batch of 216 rows holds exactly one input's draws (n0 16 + n 200), so
    Ctrl-C during forward pass ``stop_at`` (the first is the pre-run fit check) finds every
    earlier input stored.  Inputs used to be stored in groups of eight: 0 were."""
    monkeypatch.setenv("TOY_MODEL_STOP_AT", str(stop_at))
    store = tmp_path / "each.sqlite"
    args = [a if a != "tests.runs.toy_model:factory" else
            "tests.runs.toy_model:interrupting_factory" for a in ARGS]
    code = main(["certify", "--dataset", str(jsonl_dataset), "--store", str(store), *args,
                 "--batch-size", "216"])
    assert code == 130
    done = stop_at - 2
    assert count_rows(store) == done
    assert f"interrupted; {done} of 12 inputs are stored" in capsys.readouterr().err
    monkeypatch.setenv("TOY_MODEL_STOP_AT", "0")
    assert main(["certify", "--dataset", str(jsonl_dataset), "--store", str(store), *args]) == 0
    reference = tmp_path / "reference.sqlite"
    assert certify(jsonl_dataset, reference) == 0
    assert comparable(store) == comparable(reference)


def test_report_of_a_run_without_results_says_it_is_incomplete(jsonl_dataset, tmp_path,
                                                                capsys, monkeypatch):
    """Interrupted in its first forward pass after the fit check: the run exists, with no
    results.  Its report used to print empty tables and exit 0."""
    monkeypatch.setenv("TOY_MODEL_STOP_AT", "2")
    store = tmp_path / "empty.sqlite"
    args = [a if a != "tests.runs.toy_model:factory" else
            "tests.runs.toy_model:interrupting_factory" for a in ARGS]
    assert main(["certify", "--dataset", str(jsonl_dataset), "--store", str(store),
                 *args]) == 130
    assert count_rows(store) == 0
    capsys.readouterr()
    assert main(["report", str(store), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hybridcert: error: run 1 of") and len(err.splitlines()) == 1
    assert "is incomplete: it holds no results yet" in err
    assert not (tmp_path / "rep").exists()


def test_resume_is_keyed_by_id_and_content_not_position(jsonl_dataset, tmp_path, capsys):
    """Issue 11: inserting a row at the top used to shift every stored result to the wrong
    input.  Now results stay with their ids; a changed row is refused unless re-certified."""
    store = tmp_path / "run.sqlite"
    assert certify(jsonl_dataset, store) == 0
    before = {r["id"]: r for r in stored(store)}
    lines = jsonl_dataset.read_text().splitlines()
    extra = json.loads(lines[0])
    extra.update(id="new-top", text="we bake a cake together")
    jsonl_dataset.write_text("\n".join([json.dumps(extra)] + lines))
    assert certify(jsonl_dataset, store) == 0
    after = {r["id"]: r for r in stored(store)}
    assert set(after) == set(before) | {"new-top"}
    for key, row in before.items():                    # untouched, still under its own id
        assert after[key] == row
    changed = json.loads(lines[3])
    changed["text"] = "lovely day at the park"
    jsonl_dataset.write_text("\n".join([json.dumps(extra)] + lines[:3] + [json.dumps(changed)]
                                       + lines[4:]))
    capsys.readouterr()
    assert certify(jsonl_dataset, store) == 2
    err = capsys.readouterr().err.strip()
    assert "1 input(s) changed" in err and "'row3'" in err and len(err.splitlines()) == 1
    assert {r["id"]: r for r in stored(store)} == after           # nothing altered
    assert certify(jsonl_dataset, store, "--recertify-changed") == 0
    assert len(stored(store)) == 13


def test_store_refuses_a_different_configuration(jsonl_dataset, tmp_path, capsys):
    store = tmp_path / "run.sqlite"
    assert certify(jsonl_dataset, store) == 0
    capsys.readouterr()
    assert certify(jsonl_dataset, store, "--n", "300") == 2
    err = capsys.readouterr().err.strip()
    assert "belongs to another run (differs in n)" in err and len(err.splitlines()) == 1
    assert certify(jsonl_dataset, store, "--n", "300", "--new-run") == 0


def test_ray_backend_gives_identical_results(jsonl_dataset, tmp_path, ray_cluster):
    local, distributed = tmp_path / "local.sqlite", tmp_path / "ray.sqlite"
    assert certify(jsonl_dataset, local) == 0
    assert certify(jsonl_dataset, distributed, "--backend", "ray", "--workers", "2") == 0
    assert comparable(local) == comparable(distributed)


def test_parallel_batches_give_identical_results(jsonl_dataset, tmp_path):
    serial, threaded = tmp_path / "serial.sqlite", tmp_path / "threaded.sqlite"
    assert certify(jsonl_dataset, serial, "--batch-size", "64") == 0
    assert certify(jsonl_dataset, threaded, "--batch-size", "64", "--parallel-batches", "2") == 0
    assert comparable(serial) == comparable(threaded)


def test_report_numbers_recomputed_from_stored_rows(jsonl_dataset, tmp_path):
    store = tmp_path / "run.sqlite"
    assert certify(jsonl_dataset, store) == 0
    assert main(["report", str(store), "--out", str(tmp_path / "report")]) == 0
    # Independent recomputation straight from SQLite: certified iff gamma* >= eps / sigma.
    rows = [json.loads(r) for (r,) in sqlite3.connect(store).execute("SELECT row FROM results")]
    grid_eps, grid_r = (0.0, 0.25, 0.5, 0.75, 1.0), (0, 1, 2, 4, 8)
    expected = np.zeros((5, 5))
    for row in rows:
        gammas = {item["tokens"]: float(item["gamma"]) for item in row["frontier"]}
        for a, eps in enumerate(grid_eps):
            for b, r in enumerate(grid_r):
                expected[a, b] += (row["predict"] == row["label"] and r in gammas
                                   and gammas[r] >= eps / 0.25)
    expected /= len(rows)
    lines = (tmp_path / "report" / "certified_accuracy.csv").read_text().splitlines()[1:]
    got = np.array([[float(v) for v in line.split(",")[1:]] for line in lines])
    assert np.allclose(got, expected, atol=1e-4)
    report = (tmp_path / "report" / "REPORT.md").read_text()
    abstain = np.mean([r["predict"] == -1 for r in rows])
    assert f"abstain rate {100 * abstain:.1f}%" in report
    assert "Balanced" in report and "constant classifier" in report
    for name in ("certify.tsv", "certify.json", "curves.png", "heatmap.png"):
        assert (tmp_path / "report" / name).exists()
    tsv = (tmp_path / "report" / "certify.tsv").read_text().splitlines()
    assert tsv[0].startswith("idx\tlabel\tpredict\tradius\tcorrect\ttime\tid") and len(tsv) == 13


def test_unlabelled_rows_are_certified_and_exported(jsonl_dataset, tmp_path):
    rows = [json.loads(line) for line in jsonl_dataset.read_text().splitlines()]
    for row in rows[:4]:
        del row["label"]
    jsonl_dataset.write_text("\n".join(json.dumps(r) for r in rows))
    store = tmp_path / "run.sqlite"
    assert certify(jsonl_dataset, store) == 0
    assert main(["report", str(store), "--out", str(tmp_path / "r")]) == 0
    exported = json.loads((tmp_path / "r" / "certify.json").read_text())
    assert len(exported) == 12 and sum(r["label"] is None for r in exported) == 4
    assert all(r["correct"] is None for r in exported if r["label"] is None)
    assert "12 inputs (8 labelled)" in (tmp_path / "r" / "REPORT.md").read_text()


def test_toml_config_with_flag_override(jsonl_dataset, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(f'dataset = "{jsonl_dataset}"\nmodel = "tests.runs.toy_model:factory"\n'
                      'sigma = 0.25\nkeep_prob = 0.3\nn0 = 16\nn = 100\nalpha = 0.01\n'
                      'max_tokens = 4\n')
    store = tmp_path / "run.sqlite"
    assert main(["certify", "--config", str(config), "--n", "200", "--store", str(store),
                 "--quiet"]) == 0
    with RunStore(store, readonly=True) as s:
        assert s.config["n"] == 200 and s.config["n0"] == 16


@pytest.mark.parametrize(("argv", "message"), [
    (["--dataset", "missing.jsonl"], "missing.jsonl"),
    (["--model", "no_such_module:factory"], "entry point 'no_such_module:factory' does not load"),
    (["--model", "tests.runs.toy_model"], "must look like 'module:factory'"),
    (["--model", "tests.runs.toy_model:broken_factory"], "the model does not accept"),
    (["--model", "tests.runs.toy_model:nan_factory"], "NaN or infinite logits"),
    (["--config", "absent.toml"], "config file absent.toml not found"),
    (["--backend", "spark"], "--backend must be local or ray"),
])
def test_clear_one_line_errors(jsonl_dataset, tmp_path, capsys, argv, message):
    base = ["certify", "--dataset", str(jsonl_dataset), "--store", str(tmp_path / "s.sqlite"),
            *ARGS]
    assert main(base + argv) == 2          # later flags win: the faulty one is last
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "s.sqlite").exists()


def test_unreadable_image_and_missing_image(jsonl_dataset, tmp_path, capsys):
    (jsonl_dataset.parent / "img3.png").write_text("not a png")
    assert certify(jsonl_dataset, tmp_path / "a.sqlite") == 2
    assert "img3.png" in capsys.readouterr().err
    (jsonl_dataset.parent / "img3.png").unlink()
    assert certify(jsonl_dataset, tmp_path / "b.sqlite") == 2
    assert "img3.png" in capsys.readouterr().err


def test_noise_that_does_not_fit_the_inputs(tmp_path, capsys):
    path = tmp_path / "text_only.jsonl"
    path.write_text(json.dumps({"id": "a", "text": "hello there", "label": 0}))
    assert certify(path, tmp_path / "c.sqlite") == 2
    assert "image" in capsys.readouterr().err


def test_the_users_own_tokenizer_end_to_end(tmp_path, monkeypatch):
    """Issue 12: a model with its own 110-word tokenizer receives only its own ids (padding
    masked out by the attention mask), and the certificate uses its V = 105."""
    from PIL import Image

    from hybridcert import Substitution, certified_frontier
    from tests.runs import spy_model

    log = tmp_path / "spy.jsonl"
    monkeypatch.setenv("SPY_LOG", str(log))
    rows = []
    for i in range(6):
        Image.new("RGB", (8, 8), (200, 200, 200)).save(tmp_path / f"im{i}.png")
        rows.append({"id": f"r{i}", "image": f"im{i}.png",
                     "text": " ".join(f"w{(7 * i + j) % 105}" for j in range(5)),
                     "label": i % 2})
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    store = tmp_path / "spy.sqlite"
    assert main(["certify", "--dataset", str(data), "--store", str(store), "--model",
                 "tests.runs.spy_model:factory", "--sigma", "0.25", "--keep-prob", "0.1",
                 "--n0", "16", "--n", "400", "--alpha", "0.01", "--quiet"]) == 0
    seen = [json.loads(line) for line in log.read_text().splitlines()]
    assert seen and all(s["min"] >= 0 and s["max"] < spy_model.SIZE for s in seen)
    assert not any(s["padding_attended"] for s in seen)
    text = Substitution(0.1, 105)
    for row in stored(store):
        if row["predict"] == -1:
            continue
        # Five words: no more than 5 tokens can be changed, so the region stops there.
        expected = certified_frontier(row["p_lower"], sigma=0.25, discrete=text, max_tokens=5)
        assert row["max_tokens"] == int(expected.max_tokens[0])
        assert [r["l2_radius"] for r in row["frontier"]] == pytest.approx(
            [r["l2_radius"] for r in expected.rows(0)], rel=1e-9)


def test_a_model_without_text_handling_is_refused(jsonl_dataset, tmp_path, capsys):
    assert certify(jsonl_dataset, tmp_path / "s.sqlite", "--model",
                   "tests.runs.toy_model:bare_factory") == 2
    err = capsys.readouterr().err
    assert "supplies no text handling" in err and "never falls back" in err


def test_sequential_modes_run_resumably_and_on_ray(jsonl_dataset, tmp_path, ray_cluster):
    extra = ["--mode", "decision", "--target", "0.1,0", "--target", "0.05,1", "--n", "3200"]
    local, distributed = tmp_path / "seq.sqlite", tmp_path / "seq_ray.sqlite"
    assert certify(jsonl_dataset, local, *extra) == 0
    assert certify(jsonl_dataset, distributed, *extra, "--backend", "ray") == 0
    assert comparable(local) == comparable(distributed)
    assert all(r["queries"] <= 16 + 3200 and r["mode"] == "decision" for r in stored(local))
    assert certify(jsonl_dataset, local, *extra) == 0      # resume: nothing left to do
    assert len(stored(local)) == 12


def test_fixed_and_sequential_rows_have_one_format(jsonl_dataset, tmp_path):
    """Issue 12: one row type for every mode (the store, exports and report read only it)."""
    fixed, seq = tmp_path / "f.sqlite", tmp_path / "s.sqlite"
    assert certify(jsonl_dataset, fixed, "--target", "0.1,0") == 0
    assert certify(jsonl_dataset, seq, "--mode", "decision", "--target", "0.1,0") == 0
    a, b = stored(fixed), stored(seq)
    assert [sorted(r) for r in a] == [sorted(r) for r in b]
    assert [r["id"] for r in a] == [r["id"] for r in b]
    assert all(len(r["targets"]) == 1 for r in a + b)


def test_radius_mode_with_a_radius_of_interest(jsonl_dataset, tmp_path):
    """--max-radius lets the radius mode stop once the frontier reaches it."""
    extra = ["--mode", "radius", "--tolerance", "0.05", "--n", "3200"]
    assert certify(jsonl_dataset, tmp_path / "a.sqlite", *extra) == 0
    assert certify(jsonl_dataset, tmp_path / "b.sqlite", *extra, "--max-radius", "0.01") == 0

    def queries(name):
        return [r["queries"] for r in sorted(stored(tmp_path / name), key=lambda r: r["idx"])]

    assert all(b <= a for a, b in zip(queries("a.sqlite"), queries("b.sqlite"), strict=True))
    assert sum(queries("b.sqlite")) < sum(queries("a.sqlite"))
    assert certify(jsonl_dataset, tmp_path / "c.sqlite", *extra, "--max-radius", "0") == 2
    assert not (tmp_path / "c.sqlite").exists()      # refused before the store is made


def test_ray_local_cluster_keeps_its_token_private(jsonl_dataset, tmp_path):
    """Issue 11: Ray wrote a world-readable token; the local cluster the Ray backend starts
    (token authentication on) leaves it readable by its owner only."""
    pytest.importorskip("ray")
    env = dict(os.environ, HOME=str(tmp_path), PYTHONPATH=SUBPROCESS_PATH)
    env.pop("RAY_AUTH_MODE", None)
    result = subprocess.run(
        [sys.executable, "-m", "hybridcert.cli.main", "certify", "--dataset",
         str(jsonl_dataset), "--store", str(tmp_path / "r.sqlite"), *ARGS, "--limit", "2",
         "--backend", "ray", "--workers", "1"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-1500:]
    token = tmp_path / ".ray" / "auth_token"
    if token.exists():
        assert token.stat().st_mode & 0o077 == 0


def test_noising_only_the_image_of_an_image_text_model(jsonl_dataset, tmp_path, capsys):
    """The model's text block, not noised, still reaches it as a token block (with its
    attention mask): it used to fail with KeyError 'text_attention'.  Leaving the text
    un-noised takes --no-text-noise (it used to pass without a word), and the report says no
    token change is certified."""
    store = tmp_path / "image_only.sqlite"
    image_only = ["certify", "--dataset", str(jsonl_dataset), "--store", str(store),
                  "--model", "tests.runs.toy_model:factory", "--sigma", "0.25", "--n0", "16",
                  "--n", "200", "--alpha", "0.01", "--quiet"]
    assert main(image_only) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "reads text block(s) ['text']" in err
    assert "--no-text-noise" in err and not store.exists()
    assert main(image_only + ["--no-text-noise"]) == 0
    rows = stored(store)
    assert len(rows) == 12 and all(r["max_tokens"] in (-1, 0) for r in rows)
    assert main(["report", str(store), "--out", str(tmp_path / "rep")]) == 0
    report = (tmp_path / "rep" / "REPORT.md").read_text()
    assert "Tokens: none certified" in report
    assert main(image_only + ["--no-text-noise", "--keep-prob", "0.3"]) == 2
    assert "no_text_noise contradicts" in capsys.readouterr().err


def test_report_of_a_detector_decision_run(jsonl_dataset, tmp_path):
    """Per-target answers, the false-flag rate, the token ceiling; --run picks an earlier run
    of the store."""
    store = tmp_path / "det.sqlite"
    assert certify(jsonl_dataset, store, "--rule", "flag", "--threshold", "0.2", "--mode",
                   "decision", "--target", "0.1,0", "--target", "0.05,1") == 0
    assert main(["report", str(store), "--out", str(tmp_path / "r")]) == 0
    report = (tmp_path / "r" / "REPORT.md").read_text()
    assert "## Target regions" in report and "| image 0.1 |" in report
    assert "False-flag rate:" in report and "Flag recall:" in report
    assert "Token ceiling:" in report
    rows = stored(store)
    safe = [r for r in rows if r["label"] == 0]
    expected = 100 * np.mean([r["decision"] == "flag" for r in safe])
    assert f"False-flag rate: {expected:.1f}%" in report
    assert certify(jsonl_dataset, store, "--n", "300", "--new-run") == 0
    assert main(["report", str(store), "--out", str(tmp_path / "r1"), "--run", "1"]) == 0
    assert "False-flag rate" in (tmp_path / "r1" / "REPORT.md").read_text()
    assert main(["report", str(store), "--out", str(tmp_path / "r2")]) == 0
    assert "False-flag rate" not in (tmp_path / "r2" / "REPORT.md").read_text()
    assert main(["report", str(store), "--run", "7"]) == 2


def test_every_answer_says_how_it_ended(jsonl_dataset, tmp_path):
    """Issue 22 item 3: decision mode stores, exports and reports a status per target and for
    the class at the zero budget, with the draw it was decided at; fixed n says certified or
    cap (its sample ran out)."""
    seq, fixed = tmp_path / "s.sqlite", tmp_path / "f.sqlite"
    assert certify(jsonl_dataset, seq, "--mode", "decision", "--target", "0.1,0",
                   "--target", "5.0,0", "--n", "3200") == 0
    statuses = {"certified", "refuted", "gave_up", "cap"}
    for row in stored(seq):
        assert row["status"] in statuses and 1 <= row["decided_at"] <= row["queries"]
        # 5.0 is out of any reach (p* rounds to 1) but not shown false by one draw: cap
        assert row["targets"][1]["status"] == "cap" and row["targets"][1]["decided_at"] == 1
        for target in row["targets"]:
            assert target["status"] in statuses
            assert (target["status"] == "certified") == target["certified"]
            assert 1 <= target["decided_at"] <= row["queries"]
        assert max(t["decided_at"] for t in row["targets"]) == row["queries"]
        assert (row["status"] == "certified") == (row["predict"] != -1)
    db = sqlite3.connect(seq)
    assert {r[0] for r in db.execute("SELECT status FROM results")} <= statuses
    db.close()
    assert main(["report", str(seq), "--out", str(tmp_path / "r")]) == 0
    report = (tmp_path / "r" / "REPORT.md").read_text()
    assert "## How the answers ended" in report and "| class (zero budget) |" in report
    header, *lines = (tmp_path / "r" / "certify.tsv").read_text().splitlines()
    columns = header.split("\t")
    for name in ("status", "decided_at", "target0_status", "target1_status",
                 "target1_decided_at", "target1_certified"):
        assert name in columns
    first = dict(zip(columns, lines[0].split("\t"), strict=True))
    assert first["target1_status"] == "cap" and first["target1_certified"] == "0"
    assert certify(jsonl_dataset, fixed, "--target", "0.1,0") == 0
    for row in stored(fixed):
        assert row["status"] == ("certified" if row["predict"] != -1 else "cap")
        assert row["targets"][0]["status"] in ("certified", "cap")


@pytest.mark.parametrize("mode", [["--n0", "16", "--n", "200"],
                                  ["--mode", "decision", "--n", "2000"]])
def test_targets_beyond_the_texts_noisable_positions_say_so(tmp_path, mode):
    """Issue 22 review: a target asking more token changes than the text has noisable
    positions (the toy tokenizer's known words; unknown words and an empty text have none)
    keeps its statistics but says in the row's notes what it covers."""
    from PIL import Image

    from tests.runs.toy_model import WORDS

    texts = {"two": "lovely day", "empty": "", "five": "we bake a cake together",
             "unknown": "zebra lovely"}
    rows = []
    for name, text in texts.items():
        pixels = np.full((32, 32, 3), 230, dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{name}.png")
        rows.append({"id": name, "image": f"{name}.png", "text": text, "label": 1})
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    store = tmp_path / "s.sqlite"
    assert main(["certify", "--dataset", str(tmp_path / "d.jsonl"), "--store", str(store),
                 "--model", "tests.runs.toy_model:factory", "--sigma", "0.25",
                 "--keep-prob", "0.3", "--alpha", "0.01", "--max-tokens", "3", "--quiet",
                 "--allow-empty-text", "--target", "0.05,0", "--target", "0.05,3", *mode]) == 0
    with RunStore(store, readonly=True) as s:
        stored = {r["id"]: r for r in s.rows()}
    for name, text in texts.items():
        have = sum(w in WORDS for w in text.split())
        notes = [n for n in stored[name].get("notes", []) if "target" in n]
        if have >= 3:
            assert notes == [], name
            continue
        covers = f"covers changes of those {have} only" if have else "covers no change there"
        assert notes == [f"text: target 2 asks 3 token change(s); the text has {have} "
                         f"noisable position(s), so it {covers}"], name
