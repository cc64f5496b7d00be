"""Resumable runs: SIGKILL and resume, Ray = local, report numbers, clear errors."""

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
ARGS = ["--model", "tests.runs.toy_model:factory", "--sigma", "0.25", "--keep-prob", "0.3",
        "--n0", "16", "--n", "200", "--alpha", "0.01", "--max-tokens", "4", "--quiet"]


def certify(dataset, store, *extra):
    return main(["certify", "--dataset", str(dataset), "--store", str(store), *ARGS, *extra])


def rows(store):
    s = RunStore(store)
    out = {(r.idx, r.input_id, r.label, r.predict, r.p_lower, r.max_tokens,
            tuple(r.l2_radius), tuple(r.counts)) for r in s.results()}
    s.close()
    return out


def test_sigkill_midway_then_resume_equals_an_uninterrupted_run(jsonl_dataset, tmp_path):
    reference = tmp_path / "reference.sqlite"
    assert certify(jsonl_dataset, reference) == 0
    killed = tmp_path / "killed.sqlite"
    env = dict(os.environ, TOY_MODEL_DELAY="0.05", PYTHONPATH=str(ROOT))
    process = subprocess.Popen(
        [sys.executable, "-m", "hybridcert.cli.main", "certify", "--dataset",
         str(jsonl_dataset), "--store", str(killed), *ARGS], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    done = 0
    while time.time() < deadline and done < 3:
        time.sleep(0.2)
        if killed.exists():
            try:
                done = sqlite3.connect(killed).execute(
                    "SELECT COUNT(*) FROM results").fetchone()[0]
            except sqlite3.OperationalError:
                done = 0
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = rows(killed)
    assert 3 <= len(partial) < 12, "the run must be killed midway"
    assert certify(jsonl_dataset, killed) == 0         # resume
    resumed = rows(killed)
    assert len(resumed) == 12
    assert len({r[0] for r in resumed}) == 12           # every input exactly once
    assert resumed == rows(reference)


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
    assert rows(local) == rows(distributed)


def test_parallel_batches_give_identical_results(jsonl_dataset, tmp_path):
    serial, threaded = tmp_path / "serial.sqlite", tmp_path / "threaded.sqlite"
    assert certify(jsonl_dataset, serial, "--batch-size", "64") == 0
    assert certify(jsonl_dataset, threaded, "--batch-size", "64", "--parallel-batches", "2") == 0
    assert rows(serial) == rows(threaded)


def test_report_numbers_recomputed_from_stored_rows(jsonl_dataset, tmp_path, capsys):
    store = tmp_path / "run.sqlite"
    assert certify(jsonl_dataset, store) == 0
    assert main(["report", str(store), "--out", str(tmp_path / "report")]) == 0
    # Independent recomputation straight from SQLite.
    db = sqlite3.connect(store)
    stored = db.execute("SELECT label, predict, max_tokens, frontier FROM results").fetchall()
    grid_eps, grid_r = (0.0, 0.25, 0.5, 0.75, 1.0), (0, 1, 2, 4, 8)
    expected = np.zeros((5, 5))
    for label, predict, max_tokens, frontier in stored:
        radii = json.loads(frontier)
        for a, eps in enumerate(grid_eps):
            for b, r in enumerate(grid_r):
                expected[a, b] += predict == label and r <= max_tokens and radii[r] >= eps
    expected /= len(stored)
    lines = (tmp_path / "report" / "certified_accuracy.csv").read_text().splitlines()[1:]
    got = np.array([[float(v) for v in line.split(",")[1:]] for line in lines])
    assert np.allclose(got, expected, atol=1e-4)
    abstain = np.mean([p == -1 for _, p, _, _ in stored])
    assert f"abstain rate {100 * abstain:.1f}%" in (tmp_path / "report" / "REPORT.md").read_text()
    for name in ("certify.tsv", "certify.json", "curves.png", "heatmap.png"):
        assert (tmp_path / "report" / name).exists()
    tsv = (tmp_path / "report" / "certify.tsv").read_text().splitlines()
    assert tsv[0].startswith("idx\tlabel\tpredict\tradius\tcorrect\ttime") and len(tsv) == 13


def test_toml_config_with_flag_override(jsonl_dataset, tmp_path):
    config = tmp_path / "run.toml"
    config.write_text(f'dataset = "{jsonl_dataset}"\nmodel = "tests.runs.toy_model:factory"\n'
                      'sigma = 0.25\nkeep_prob = 0.3\nn0 = 16\nn = 100\nalpha = 0.01\n'
                      'max_tokens = 4\n')
    store = tmp_path / "run.sqlite"
    assert main(["certify", "--config", str(config), "--n", "200", "--store", str(store),
                 "--quiet"]) == 0
    s = RunStore(store)
    assert s.config["n"] == 200 and s.config["n0"] == 16
    s.close()


@pytest.mark.parametrize(("argv", "message"), [
    (["--dataset", "missing.jsonl"], "dataset 'missing.jsonl' not found"),
    (["--model", "no_such_module:factory"], "entry point 'no_such_module:factory' does not load"),
    (["--model", "tests.runs.toy_model"], "must look like 'module:factory'"),
    (["--model", "tests.runs.toy_model:broken_factory"], "the model does not accept"),
    (["--config", "absent.toml"], "config file absent.toml not found"),
    (["--backend", "spark"], "--backend must be local or ray"),
])
def test_clear_one_line_errors(jsonl_dataset, tmp_path, capsys, argv, message):
    base = ["certify", "--dataset", str(jsonl_dataset), "--store", str(tmp_path / "s.sqlite"),
            *ARGS]
    # later flags win: put the faulty one last
    assert main(base + argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_unreadable_image_and_missing_image(jsonl_dataset, tmp_path, capsys):
    (jsonl_dataset.parent / "img3.png").write_text("not a png")
    assert certify(jsonl_dataset, tmp_path / "a.sqlite") == 2
    assert "cannot be read" in capsys.readouterr().err
    (jsonl_dataset.parent / "img3.png").unlink()
    assert certify(jsonl_dataset, tmp_path / "b.sqlite") == 2
    assert "img3.png not found" in capsys.readouterr().err


def test_noise_that_does_not_fit_the_inputs(tmp_path, capsys):
    path = tmp_path / "text_only.jsonl"
    path.write_text(json.dumps({"text": "hello there", "label": 0}))
    assert certify(path, tmp_path / "c.sqlite") == 2
    assert "the noise names block(s) ['image']" in capsys.readouterr().err


def test_sequential_modes_run_resumably_and_on_ray(jsonl_dataset, tmp_path, ray_cluster):
    extra = ["--mode", "decision", "--target", "0.1,0", "--target", "0.05,1", "--n", "3200"]
    local, distributed = tmp_path / "seq.sqlite", tmp_path / "seq_ray.sqlite"
    assert certify(jsonl_dataset, local, *extra) == 0
    assert certify(jsonl_dataset, distributed, *extra, "--backend", "ray") == 0
    assert rows(local) == rows(distributed)
    samples = sqlite3.connect(local).execute("SELECT samples FROM results").fetchall()
    assert all(16 + 100 <= s[0] <= 16 + 3200 for s in samples)
    assert certify(jsonl_dataset, local, *extra) == 0      # resume: nothing left to do
    assert len(rows(local)) == 12
    assert main(["certify", "--dataset", str(jsonl_dataset), "--store",
                 str(tmp_path / "x.sqlite"), *ARGS, "--mode", "decision"]) == 2


def test_radius_mode_with_a_radius_of_interest(jsonl_dataset, tmp_path):
    """--max-radius lets the radius mode stop once the frontier reaches it."""
    extra = ["--mode", "radius", "--tolerance", "0.05", "--n", "3200"]
    assert certify(jsonl_dataset, tmp_path / "a.sqlite", *extra) == 0
    assert certify(jsonl_dataset, tmp_path / "b.sqlite", *extra, "--max-radius", "0.01") == 0

    def samples(name):
        query = "SELECT samples FROM results ORDER BY idx"
        return [s for (s,) in sqlite3.connect(tmp_path / name).execute(query)]

    assert all(b <= a for a, b in zip(samples("a.sqlite"), samples("b.sqlite"), strict=True))
    assert sum(samples("b.sqlite")) < sum(samples("a.sqlite"))
    assert certify(jsonl_dataset, tmp_path / "c.sqlite", *extra, "--max-radius", "0") == 2
    assert not (tmp_path / "c.sqlite").exists()      # refused before the store is made
