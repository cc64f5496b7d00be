"""Decisions and query counts of the three sequential paths (``certify --mode decision``
into a store, the service in-process, the benchmark's jobs) on fixed inputs and seeds, as
JSON.  ``recorded_decisions.json`` was written by this script from the code BEFORE the one
driver (issue 23; commit e5cbbac); ``test_driver_equivalence.py`` compares today's code with
it.  Re-record only on purpose: ``PYTHONPATH=src python -m tests.sequential.record_decisions``.
"""

import dataclasses
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
GREYS = [0.05, 0.3, 0.45, 0.5, 0.55, 0.62, 0.7, 0.8, 0.95]
TEXTS = ["i will hurt you", "lovely day", "attack them tonight", "we bake a cake together",
         "unknown words", "at the park"]
INPUTS = [(f"in{i}", g, TEXTS[i % len(TEXTS)]) for i, g in enumerate(GREYS)]


def _row(answer: dict) -> dict:
    keep = ("label", "queries", "p_lower", "p_upper", "status", "decided_at")
    out = {k: answer.get(k) for k in keep}
    out["targets"] = [[t["certified"], t["status"], t["decided_at"]]
                      for t in answer.get("certified", answer.get("targets", []))]
    return out


def cli_rows(tmp: Path, **extra) -> dict:
    """``hybridcert certify --mode decision`` of INPUTS into a store: row per id."""
    from hybridcert.cli.main import main
    from hybridcert.runs.store import RunStore
    from tests.serve.conftest import TARGETS, png

    rows = []
    for name, grey, text in INPUTS:
        (tmp / f"{name}.png").write_bytes(png(grey))
        rows.append({"id": name, "image": f"{name}.png", "text": text, "label": 0})
    (tmp / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    targets = [arg for eps, r in TARGETS for arg in ("--target", f"{eps},{r}")]
    args = ["certify", "--dataset", str(tmp / "data.jsonl"), "--model",
            "tests.serve.toy_model:factory", "--sigma", "0.25", "--keep-prob", "0.8",
            "--mode", "decision", "--n", "10000", "--alpha", "0.001", "--seed", "7",
            *targets, "--store", str(tmp / "run.sqlite"), "--quiet", "--allow-empty-text"]
    for key, value in extra.items():
        args += [f"--{key}", str(value)]
    assert main(args) == 0
    store = RunStore(tmp / "run.sqlite", None)
    stored = {row["id"]: _row({**row, "label": row["predict"]}) for row in store.rows()}
    store.close()
    return stored


def service_rows() -> dict:
    """The service in-process (its engine batching all INPUTS together) at seeds 1000 + i."""
    import time

    from hybridcert.runs.runner import plan
    from hybridcert.serve.service import ModerationService
    from tests.serve.conftest import png, toy_config
    from tests.serve.toy_model import factory

    service = ModerationService(plan(toy_config(), batch_size=256, adapter=factory()))
    service.start()
    try:
        prepared = [dataclasses.replace(service.prepare(png(g), text, name), seed=1000 + i)
                    for i, (name, g, text) in enumerate(INPUTS)]
        jobs = [service.submit(p) for p in prepared]
        out = {}
        for p, job in zip(prepared, jobs, strict=True):
            answer = service.answer(p, job.future.result(120), time.perf_counter())
            out[p.request_id] = _row(answer)
    finally:
        service.close(10)
    return out


def bench_rows() -> dict:
    """The benchmark's shared-stream jobs: two rules per input on one stream."""
    from hybridcert.bench.engine import Job, run_jobs
    from hybridcert.sequential.question import SequentialQuestion
    from hybridcert.smoothing import Detector, SmoothedClassifier
    from tests.benchmark.test_engine import CELLS, NOISE, Toy, _records

    clf = SmoothedClassifier(Toy(), NOISE, 2, batch_size=64)
    records = _records(12, seed=5)
    questions = {
        "looks": SequentialQuestion(NOISE, 2, 0.01, 3000, targets=CELLS, boundary="looks",
                                    price=300),
        "mixture": SequentialQuestion(NOISE, 2, 0.01, 3000, targets=CELLS),
        "spending": SequentialQuestion(NOISE, 2, 0.01, 3000, targets=CELLS[1:],
                                       boundary="spending"),
        "flag": SequentialQuestion(NOISE, 2, 0.01, 3000, targets=CELLS,
                                   detector=Detector(0.3, 1, "both")),
    }
    jobs = [Job(r, 300 + i, {k: q.new_rule() for k, q in questions.items()}, key=i)
            for i, r in enumerate(records)]
    run_jobs(clf, jobs, batch_size=32, window=5)
    out = {}
    for job in jobs:
        for name, q in questions.items():
            row = q.result(job.rules[name], NOISE.noised_positions(job.record)).to_row()
            out[f"{job.key}/{name}"] = _row({**row, "label": row["predict"]})
    return out


def record() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cli = cli_rows(Path(tmp))
    return {"cli": cli, "service": service_rows(), "bench": bench_rows()}


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


if __name__ == "__main__":
    data = _plain(record())
    data["_note"] = ("recorded from commit " + (sys.argv[1] if len(sys.argv) > 1 else "?") +
                     " (before the one driver of issue 23)")
    (HERE / "recorded_decisions.json").write_text(json.dumps(data, indent=1, sort_keys=True)
                                                  + "\n")
