"""The batching engine: shared forward passes, per-job streams in draw order, decisions equal
to driving each rule alone, cancellation, the bounded queue and model failures."""

import io
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from hybridcert.runs.runner import plan
from hybridcert.sequential.driver import Driver, JobTimeout, QueueFull, ShuttingDown, slice_ends
from hybridcert.serve.rules import DecisionRules
from hybridcert.smoothing.core import Stage
from tests.serve.conftest import png, png_even, toy_config
from tests.serve.toy_model import factory

TEXTS = ["i will hurt you", "we bake a cake together", "lovely day at the park", "attack them"]


class Recorder:
    """A trivial fixed-n rule: asks for ``n`` labels in steps of ``step`` and keeps them."""

    def __init__(self, n, step):
        self.n, self.step, self.seen, self.calls = n, step, [], 0

    @property
    def done(self):
        return len(self.seen) >= self.n

    @property
    def queries(self):
        return min(len(self.seen), self.n)

    def next_draws(self):
        return min(self.step, self.n - len(self.seen))

    def observe(self, labels):
        self.calls += 1
        self.seen.extend(int(v) for v in labels)


def _setup(delay=0.0, **config):
    run = plan(toy_config(**config), batch_size=64, adapter=factory(delay))
    return run, DecisionRules(run.config, run.noise)


def _record(run, brightness, text):
    image, _ = run.adapter.images["image"].process(Image.open(io.BytesIO(png(brightness))))
    tokens = run.adapter.text["text"].encode(text)
    return run.classifier.validate({"image": image, "text": tokens})


def _records(run, count):
    return [_record(run, 0.05 + 0.9 * i / max(count - 1, 1), TEXTS[i % len(TEXTS)])
            for i in range(count)]


def test_jobs_share_batches_and_get_their_own_stream_in_order():
    run, _ = _setup()
    records = _records(run, 6)
    engine = Driver(run.classifier, batch_size=64, max_pending=16)
    rules = [Recorder(300, 37) for _ in records]
    jobs = [engine.submit(r, 1000 + i, rule, 30) for i, (r, rule) in
            enumerate(zip(records, rules, strict=True))]
    engine.start()
    for job in jobs:
        job.future.result(30)
    engine.close()
    for i, (record, rule) in enumerate(zip(records, rules, strict=True)):
        alone = run.classifier.stream(record, 1000 + i, Stage.SEQUENTIAL).labels(300)
        assert rule.seen == alone.tolist()        # same copies, same order as one job alone
    # 6 jobs x 300 copies asked 37 at a time (54 asks), in batches of <= 64 rows: shared
    assert engine.stats.rows == 1800
    assert engine.stats.batches <= 45                       # > 40 rows a pass on average
    assert sum(rule.calls for rule in rules) > engine.stats.batches   # several jobs per batch


@pytest.mark.parametrize("speculation,group_rows", [(0.0, 0), (1.0, 0), (0.0, 8), (1.0, 1)])
def test_decisions_equal_driving_each_rule_alone(speculation, group_rows):
    run, rules = _setup()
    records = _records(run, 8)
    engine = Driver(run.classifier, batch_size=64, speculation=speculation,
                            group_rows=group_rows).start()
    jobs = [engine.submit(r, 50 + i, rules.new(), 60) for i, r in enumerate(records)]
    outcomes = [job.future.result(60) for job in jobs]
    engine.close()
    labels = set()
    for i, (record, outcome) in enumerate(zip(records, outcomes, strict=True)):
        reference = rules.new()
        stream = run.classifier.stream(record, 50 + i, Stage.SEQUENTIAL)
        while not reference.done:
            reference.observe(stream.labels(reference.next_draws()))
        rule = outcome.rule
        assert rule.label == reference.label
        assert rule.queries == reference.queries
        assert rule.p_lower == reference.p_lower
        assert rule.certified.tolist() == reference.certified.tolist()
        assert outcome.drawn >= rule.queries
        if speculation == 0:
            assert outcome.drawn == rule.queries     # next_draws never over-asks
        labels.add(int(rule.label))
    assert {0, 1} <= labels                          # both classes decided


def test_the_configured_boundary_and_price_reach_the_service_rules():
    """A run config's sequential options are the service's too (they were silently dropped:
    every service rule used the mixture without a price)."""
    for boundary, price in (("mixture", None), ("looks", 500.0), ("spending", 800.0)):
        _, rules = _setup(boundary=boundary, price=price)
        rule = rules.new()
        assert rule.boundary == boundary and rule.price == price


def test_slice_ends_cut_where_the_length_changes_once_a_slice_is_full():
    parts = [((3,), 10), ((3,), 10), ((4,), 5), ((5,), 40)]
    assert slice_ends(parts, 0) == [65]                 # off: the whole batch
    assert slice_ends(parts, 16) == [20, 65]            # (4,) joins the (5,) slice: 5 < 16
    assert slice_ends(parts, 1) == [20, 25, 65]         # never inside one length
    assert slice_ends(parts, 100) == [65]
    assert slice_ends([((2, 7), 3), ((2, 8), 3)], 1) == [3, 6]   # every token block counts
    assert slice_ends([((5,), 40), ((9,), 1)], 32) == [41]       # no 1-row last pass
    assert slice_ends([((5,), 40), ((7,), 40), ((9,), 1)], 32) == [40, 81]


def test_a_bad_output_in_a_slice_names_its_rows_in_the_batch():
    from hybridcert.sequential.driver import labels_in_slices
    from hybridcert.smoothing.base import BaseClassifier, ModelOutputError

    def model(batch):
        logits = torch.zeros(batch["x"].shape[0], 2)
        logits[batch["x"] == 7] = float("nan")
        return logits

    base = BaseClassifier(model)
    batch = {"x": torch.arange(10)}
    assert labels_in_slices(base, {"x": torch.arange(7)}, [3, 7]).tolist() == [0] * 7
    with pytest.raises(ModelOutputError, match=r"row 3 of 6\).*rows 4\.\.9 of a batch of 10"):
        labels_in_slices(base, batch, [4, 10])


@pytest.mark.parametrize("group_rows", [0, 1])
def test_group_rows_runs_the_model_on_slices_of_one_text_length(group_rows):
    run, rules = _setup()
    records = _records(run, 8)                        # texts of 4, 5 and 6 attended ids
    events, lock = [], threading.Lock()
    base = run.classifier.base
    original = base.labels

    def spy(batch):
        with lock:
            events.append(sorted(set(batch["text_attention"].sum(1).tolist())))
        return original(batch)

    def on_batch(rows, seconds):           # after a batch's passes, before the next batch's
        with lock:
            events.append("end of batch")

    base.labels = spy
    engine = Driver(run.classifier, batch_size=64, group_rows=group_rows,
                            on_batch=on_batch).start()
    jobs = [engine.submit(r, 50 + i, rules.new(), 60) for i, r in enumerate(records)]
    for job in jobs:
        job.future.result(60)
    engine.close()
    batches, current = [], []
    for event in events:
        if event == "end of batch":
            batches.append(current)
            current = []
        else:
            current.append(event)
    assert len(batches) == engine.stats.batches
    if group_rows == 0:
        assert all(len(passes) == 1 for passes in batches)
        assert any(len(passes[0]) > 1 for passes in batches)      # batches mix lengths
        return
    assert any(len(passes) > 1 for passes in batches)             # some batches were cut
    for passes in batches:
        assert all(len(lengths) == 1 for lengths in passes)       # one length per pass
        order = [lengths[0] for lengths in passes]
        assert order == sorted(set(order))          # jobs ordered by length: one pass each


def test_cancelled_job_stops_drawing_and_reports_timeout():
    run, rules = _setup(delay=0.02)
    record = _record(run, 0.5, "lovely day")         # decided within ~200 draws
    image, _ = run.adapter.images["image"].process(Image.open(io.BytesIO(png_even())))
    mid = run.classifier.validate({"image": image,           # P(unsafe) = 1/2: runs long
                                   "text": run.adapter.text["text"].encode("unknown words")})
    engine = Driver(run.classifier, batch_size=32).start()
    job = engine.submit(mid, 3, rules.new(), 60)
    time.sleep(0.3)
    job.cancel()
    with pytest.raises(JobTimeout):
        job.future.result(5)
    drawn = job.drawn
    time.sleep(0.3)
    assert job.drawn == drawn                        # no more copies of it are drawn
    assert engine.pending == 0
    # a deadline works the same way, and the engine goes on serving others
    late = engine.submit(mid, 4, rules.new(), 0.2)
    with pytest.raises(JobTimeout):
        late.future.result(5)
    ok = engine.submit(record, 5, rules.new(), 60)
    assert ok.future.result(30).rule.done
    engine.close()
    assert engine.stats.expired == 2


def test_queue_is_bounded_and_closing_refuses_new_jobs():
    run, rules = _setup(delay=0.02)
    records = [_record(run, 0.5, "lovely day")] * 3
    engine = Driver(run.classifier, batch_size=64, max_pending=2).start()
    first = [engine.submit(records[i], i, rules.new(), 30) for i in range(2)]
    with pytest.raises(QueueFull):
        engine.submit(records[2], 2, rules.new(), 30)
    assert engine.close(drain=True, timeout=60)      # the running jobs finish
    assert all(job.future.result(0).rule.done for job in first)
    with pytest.raises(ShuttingDown):
        engine.submit(records[2], 2, rules.new(), 30)


def test_model_failure_fails_that_batch_only():
    run, rules = _setup()
    records = _records(run, 2)
    calls = {"n": 0}
    base = run.classifier.base
    original = base.labels
    lock = threading.Lock()

    def flaky(batch):
        with lock:
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("CUDA out of memory")
        return original(batch)

    base.labels = flaky
    engine = Driver(run.classifier, batch_size=64)
    bad = engine.submit(records[0], 0, rules.new(), 30)
    engine.start()
    with pytest.raises(RuntimeError, match="out of memory"):
        bad.future.result(10)
    good = engine.submit(records[1], 1, rules.new(), 30)
    assert good.future.result(30).rule.done
    engine.close()
    assert engine.stats.failed == 1


def test_refuses_bad_arguments():
    run, rules = _setup()
    with pytest.raises(ValueError, match="batch_size"):
        Driver(run.classifier, batch_size=0)
    with pytest.raises(ValueError, match="speculation"):
        Driver(run.classifier, speculation=float("nan"))
    with pytest.raises(ValueError, match="group_rows must be an integer >= 0"):
        Driver(run.classifier, group_rows=-1)
    engine = Driver(run.classifier)
    record = _records(run, 1)[0]
    with pytest.raises(ValueError, match="timeout_s"):
        engine.submit(record, 0, rules.new(), 0)
    done = rules.new()
    done.observe(np.ones(10_000, dtype=np.int64))
    with pytest.raises(ValueError, match="fresh"):
        engine.submit(record, 0, done, 1)


@pytest.mark.parametrize("group_rows", [0, 1])
def test_a_model_failure_on_one_job_fails_that_job_only(group_rows):
    """A model that raises on any batch holding the marker row: the marked job alone fails
    (with the model's error) and every job that shared its batches decides as it would
    alone (same label, queries and bound as its rule driven alone from its stream)."""
    from tests.serve.toy_model import MARKER, fragile_factory

    adapter = fragile_factory()
    run = plan(toy_config(), batch_size=64, adapter=adapter)
    rules = DecisionRules(run.config, run.noise)
    benign = [_record(run, 0.05 + 0.3 * i, TEXTS[i]) for i in range(4)]
    marked = _record(run, 0.5, f"we bake {MARKER} cake")
    engine = Driver(run.classifier, batch_size=64, group_rows=group_rows)
    records = benign[:2] + [marked] + benign[2:]
    jobs = [engine.submit(r, 70 + i, rules.new(), 60) for i, r in enumerate(records)]
    engine.start()                                 # all five share the first batch
    with pytest.raises(ValueError, match="image tokens do not match"):
        jobs[2].future.result(60)
    outcomes = {i: job.future.result(60) for i, job in enumerate(jobs) if i != 2}
    engine.close()
    assert adapter.model.mixed_failures >= 1       # the marked rows did share a batch
    assert engine.stats.failed == 1 and engine.stats.finished == 4
    for i, outcome in outcomes.items():
        reference = rules.new()
        stream = run.classifier.stream(records[i], 70 + i, Stage.SEQUENTIAL)
        while not reference.done:
            reference.observe(stream.labels(reference.next_draws()))
        assert outcome.rule.label == reference.label
        assert outcome.rule.queries == reference.queries
        assert outcome.rule.p_lower == reference.p_lower
        assert outcome.drawn == reference.queries


def test_run_drives_a_window_of_jobs_in_the_caller_s_thread_and_isolates_failures():
    """run(): jobs taken lazily, at most ``window`` in flight, each handed back when
    decided; the marked job alone fails, the others decide as their rule driven alone."""
    from tests.serve.toy_model import MARKER, fragile_factory

    adapter = fragile_factory()
    run = plan(toy_config(), batch_size=64, adapter=adapter)
    rules = DecisionRules(run.config, run.noise)
    records = [_record(run, 0.05 + 0.2 * i, TEXTS[i % 4]) for i in range(5)]
    records.insert(2, _record(run, 0.5, f"we bake {MARKER} cake"))
    taken = []

    def jobs():
        for i, record in enumerate(records):
            taken.append(i)
            yield record, 70 + i, rules.new(), f"job{i}"

    driver = Driver(run.classifier, batch_size=64)
    finished = {}
    for job in driver.run(jobs(), window=3):
        assert len(taken) - len(finished) <= 3           # never more than the window
        finished[job.key] = job
    assert sorted(finished) == [f"job{i}" for i in range(6)]
    with pytest.raises(ValueError, match="image tokens do not match"):
        finished["job2"].future.result()
    assert adapter.model.mixed_failures >= 1             # it did share a batch
    for i, record in enumerate(records):
        if i == 2:
            continue
        outcome = finished[f"job{i}"].future.result()
        reference = rules.new()
        stream = run.classifier.stream(record, 70 + i, Stage.SEQUENTIAL)
        while not reference.done:
            reference.observe(stream.labels(reference.next_draws()))
        assert (outcome.rule.label, outcome.rule.queries) == (reference.label,
                                                                reference.queries)
        assert outcome.key == f"job{i}"
    with pytest.raises(ValueError, match="window"):
        next(driver.run(jobs(), window=0))
    with pytest.raises(ValueError, match="at most max_pending"):
        next(Driver(run.classifier, max_pending=2).run(jobs(), window=3))


def test_run_leaves_the_caller_s_grad_mode_alone():
    """run() drives jobs in the caller's thread: it must not switch autograd off there (a
    training step after a sequential run would fail with 'does not require grad')."""
    import torch

    run = plan(toy_config(), batch_size=64)
    rules = DecisionRules(run.config, run.noise)
    jobs = [(_record(run, 0.9, TEXTS[0]), 1, rules.new())]
    torch.set_grad_enabled(True)
    assert len(list(Driver(run.classifier, batch_size=64).run(jobs, window=1))) == 1
    assert torch.is_grad_enabled()
