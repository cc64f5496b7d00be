"""Decisions and query counts of ``certify --mode decision`` (into a store), the service
(in-process, requests batched together) and the benchmark's jobs are those recorded from the
code before the one driver (``recorded_decisions.json``, commit e5cbbac: three separate
loops), for the same inputs and seeds, on a CPU."""

import json
from pathlib import Path

import pytest

from tests.sequential import record_decisions

RECORDED = json.loads((Path(__file__).parent / "recorded_decisions.json").read_text())


def _same(now: dict, before: dict) -> None:
    assert set(now) == set(before)
    for key in before:
        assert now[key] == before[key], key


def test_certify_decision_mode_decides_as_before(tmp_path):
    _same(record_decisions._plain(record_decisions.cli_rows(tmp_path)), RECORDED["cli"])


def test_service_decides_as_before():
    _same(record_decisions._plain(record_decisions.service_rows()), RECORDED["service"])


def test_benchmark_jobs_decide_as_before():
    _same(record_decisions._plain(record_decisions.bench_rows()), RECORDED["bench"])


@pytest.mark.parametrize("window", [1, 4])
def test_certify_decides_as_before_whatever_shares_its_batches(tmp_path, window, monkeypatch):
    """One input at a time (the old runner's way) or four sharing batches: the same rows."""
    from hybridcert.runs import runner
    from hybridcert.sequential.driver import Driver

    real, finish = runner.certify_items, Driver._finish
    shared = []

    def spy(self, plan, batch, pending):
        shared.append(len(plan))
        return finish(self, plan, batch, pending)

    monkeypatch.setattr(runner, "certify_items",
                        lambda run, items, **kw: real(run, items, window=window))
    monkeypatch.setattr(Driver, "_finish", spy)
    _same(record_decisions._plain(record_decisions.cli_rows(tmp_path)), RECORDED["cli"])
    assert max(shared) == window                  # the inputs in flight share each batch
