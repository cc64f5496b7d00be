"""The one driver of sequential certification: many stopping rules over shared forward
batches, for ``certify --mode decision|radius``, the HTTP service and the benchmark.

A *job* is a prepared record, its label stream (``SmoothedClassifier.stream``: the noisy
copies of the stream ``(seed, Stage.SEQUENTIAL)``, drawn in order) and a stopping rule (a
per-input state machine with ``next_draws()``, ``observe(labels)``, ``done``; see
:mod:`hybridcert.sequential.rules`; several rules reading one stream are one
:class:`RuleSet`).  :class:`Driver` repeats one cycle:

1. drop jobs that were cancelled or ran past their deadline (their copies stop being drawn);
2. fill one batch of at most ``batch_size`` rows, oldest job first: each job contributes the
   next ``min(rule.next_draws() - copies in flight, room)`` copies of its own stream (at most
   a quarter of the batch in the first pass while other jobs wait, then whatever room is
   left, oldest first);
3. hand the batch to the model (a second thread) and, while it runs, collect the labels of
   the previous batch and give every job its labels, in draw order (the rules of one kind
   sharing a prototype are updated together, one array update per batch:
   :mod:`hybridcert.sequential.batched`).

So the noise of batch k + 1 is drawn while the model runs batch k.  The cycle runs in a
worker thread behind :meth:`Driver.submit` (the service: a future per job, deadlines,
a bounded queue) or in the caller's thread in :meth:`Driver.run` (``certify`` and the
benchmark: a window of jobs from an iterable, each handed back as soon as it is decided).

A job's copies come from its own stream in order and its labels reach its rule in order, so
its decision is the one that driving the same rule from the same stream one job at a time
gives (a rule's outcome depends on its label sequence only, not on how it is cut), whatever
else shares the batches.  ``next_draws`` is a lower bound on the draws a rule needs before it
can stop, so without ``speculation`` no copy is drawn that the decision does not use; with
it, rows that no rule asked for go to running jobs as extra copies (fewer forward passes per
decision at low load; a rule ignores labels past its decision, so decisions are unchanged).

Jobs whose records have different shapes never share a batch (the oldest job's shape goes
first).  With ``group_rows`` a batch's jobs are ordered by the attended length of their texts
and the batch goes to the model in slices of equal length (each of at least ``group_rows``
rows, where lengths allow): a model that trims padding then pays for each slice's own longest
text rather than for the batch's (``benchmarks/service_load.py`` measures both on mixed
batches).  Each row's label is its own whatever slice it is in, so decisions are unchanged.

A model failure on a batch fails only the jobs it fails on: the batch's jobs are run again
in halves on their own (already drawn) rows, a half that fails again is split again, and a
job that fails alone gets the model's error; the others get their labels as usual.  One job's
input (a text the model cannot take, a row that gives NaN logits) so never fails another's,
at the price of about ``2 log2(jobs)`` extra model calls for the batch it is in.

The queue is bounded: :meth:`Driver.submit` raises :class:`QueueFull` when ``max_pending``
jobs are waiting or running.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from hybridcert._validation import check_count
from hybridcert.blocks.tokens import TokenBlock
from hybridcert.sequential.batched import next_draws_many, observe_many
from hybridcert.smoothing.base import ModelOutputError
from hybridcert.smoothing.core import SmoothedClassifier, Stage, concat_batches, shape_key


class DriverError(RuntimeError):
    """Base class of the driver's refusals."""


class QueueFull(DriverError):
    """``max_pending`` jobs are already waiting or running."""


class ShuttingDown(DriverError):
    """The driver is draining or closed and takes no new jobs."""


class JobTimeout(DriverError):
    """The job ran past its deadline (or was cancelled) before its rule was done."""

    def __init__(self, message: str, queries: int):
        super().__init__(message)
        self.queries = queries


@dataclass
class Outcome:
    """A finished job.

    Attributes
    ----------
    rule : object
        The stopping rule, done (``label``, ``certified``, ``p_lower``, ``queries`` ...).
    drawn : int
        Noisy copies drawn and evaluated for this job (= labels handed to its rule).
    batches : int
        Forward batches the job took part in.
    queued_s, elapsed_s : float
        Seconds from submission to the first batch, and to the end (wall clock).
    seconds : float
        The job's share of the model's seconds (each batch's by its rows).
    key : object
        What the caller named the job with (:meth:`Driver.submit`).
    """

    rule: object
    drawn: int
    batches: int
    queued_s: float
    elapsed_s: float
    seconds: float = 0.0
    key: object = None


class RuleSet:
    """Several stopping rules reading one label stream, as one rule: it needs the most draws
    any open rule needs, hands every label to the rules not yet done, and is done when all
    are (each rule's answer depends on its own label sequence only).

    Parameters
    ----------
    rules : dict
        Name -> fresh stopping rule.
    """

    def __init__(self, rules: dict):
        if not rules:
            raise ValueError("a rule set needs at least one rule")
        self.rules = dict(rules)

    @property
    def done(self) -> bool:
        return all(rule.done for rule in self.rules.values())

    @property
    def queries(self) -> int:
        """The most draws any of the rules used."""
        return max(int(rule.queries) for rule in self.rules.values())

    @property
    def n_max(self) -> int:
        return max(int(rule.n_max) for rule in self.rules.values())

    def next_draws(self) -> int:
        return max((rule.next_draws() for rule in self.rules.values() if not rule.done),
                   default=0)

    def observe(self, labels) -> None:
        for rule in self.rules.values():
            if not rule.done:
                rule.observe(labels)


@dataclass(eq=False)
class Job:
    """One job of the driver (see :meth:`Driver.submit`)."""

    number: int
    stream: object
    rule: object
    deadline: float
    shape: tuple
    lengths: tuple = ()
    key: object = None
    owner: int = 0
    submitted: float = field(default_factory=time.monotonic)
    future: Future = field(default_factory=Future)
    cancelled: bool = False
    batches: int = 0
    started: float | None = None
    in_flight: int = 0
    seconds: float = 0.0
    _need: tuple = (-1, 0)

    def need(self) -> int:
        """``rule.next_draws()`` (at least 1), asked again only after the rule got labels
        (the driver asks it of a batch's rules together: :func:`need_all`)."""
        if self._need[0] != self.batches:
            self._need = (self.batches, max(1, int(self.rule.next_draws())))
        return self._need[1]

    @property
    def drawn(self) -> int:
        """Copies drawn from this job's stream so far."""
        return int(self.stream.drawn)

    def cancel(self) -> None:
        """Stop drawing this job's copies (takes effect before the driver's next batch)."""
        self.cancelled = True


@dataclass
class BatchStats:
    """Running totals of the driver (read them for metrics): batches (one or, with
    ``group_rows``, several model calls each), rows evaluated,
    copies drawn (a batch in flight is drawn but not yet evaluated), model seconds, jobs
    expired, finished and failed."""

    batches: int = 0
    rows: int = 0
    drawn: int = 0
    forward_s: float = 0.0
    expired: int = 0
    finished: int = 0
    failed: int = 0


class Driver:
    """Run the sequential decisions of many records through shared model batches.

    Parameters
    ----------
    classifier : SmoothedClassifier
        Supplies the noise (``stream``) and the base model (``base.labels``).
    batch_size : int
        Most noisy copies per forward pass.
    max_pending : int
        Most jobs waiting or running at once; more are refused with :class:`QueueFull`.
    speculation : float
        When a batch has rows no rule asked for, give each job (oldest first) up to this
        multiple of the copies it has drawn so far beyond its rule's ``next_draws`` (0: never).
        Fewer, fuller forward passes per decision at low load, at the price of copies that
        may go unused; the decisions are the same (a rule ignores labels past its stop).
    group_rows : int
        When > 0, order each batch's jobs by the attended length of their token blocks and
        run the model on slices of one length, each of at least this many rows (0: the whole
        batch in one forward pass).  Pays off for models that trim padding (the per-pass
        overhead grows with the number of slices); decisions are the same.
    on_batch : callable, optional
        Called as ``on_batch(rows, seconds)`` after every batch (metrics; with ``group_rows``
        a batch may take several model calls, counted together).
    labels_fn : callable, optional
        ``labels_fn(batch, owners) -> labels`` instead of ``classifier.base.labels(batch)``;
        row j of the batch is a copy of the job whose ``owner`` is ``owners[j]`` (lets a
        model reuse what it cached per input).
    """

    def __init__(self, classifier: SmoothedClassifier, batch_size: int = 256,
                 max_pending: int = 256, speculation: float = 0.0, group_rows: int = 0,
                 on_batch: Callable[[int, float], None] | None = None,
                 labels_fn: Callable[[dict, np.ndarray], object] | None = None):
        if not isinstance(classifier, SmoothedClassifier):
            raise ValueError(f"classifier must be a SmoothedClassifier, got "
                             f"{type(classifier).__name__}")
        self.classifier = classifier
        self.batch_size = check_count("batch_size", batch_size, minimum=1)
        self.max_pending = check_count("max_pending", max_pending, minimum=1)
        if not (isinstance(speculation, (int, float)) and 0 <= speculation < math.inf):
            raise ValueError(f"speculation must be a finite number >= 0, got {speculation!r}")
        self.speculation = float(speculation)
        self.group_rows = check_count("group_rows", group_rows, minimum=0)
        self.on_batch = on_batch
        self.labels_fn = labels_fn
        self.stats = BatchStats()
        self._jobs: OrderedDict[int, Job] = OrderedDict()
        self._cond = threading.Condition()
        self._numbers = itertools.count()
        self._accepting = True
        self._stop = False
        self._thread: threading.Thread | None = None

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> Driver:
        """Start the worker thread (idempotent)."""
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="hybridcert-batcher",
                                                daemon=True)
                self._thread.start()
        return self

    def close(self, drain: bool = True, timeout: float | None = None) -> bool:
        """Refuse new jobs; with ``drain`` let the running ones finish, else fail them.
        Returns True once the worker has stopped (within ``timeout`` seconds)."""
        with self._cond:
            self._accepting = False
            if not drain:
                for job in list(self._jobs.values()):
                    job.cancel()
            self._stop = True
            self._cond.notify_all()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def refuse_new(self) -> None:
        """Refuse new jobs from now on; the running ones go on."""
        with self._cond:
            self._accepting = False

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def pending(self) -> int:
        """Jobs waiting or running."""
        return len(self._jobs)

    # -- submission ------------------------------------------------------------------------
    def submit(self, record, seed: int, rule, timeout_s: float = math.inf,
               stage: int = Stage.SEQUENTIAL, key: object = None, owner: int = 0) -> Job:
        """Queue the sequential decision of a prepared record (run by the worker thread of
        :meth:`start`, or by :meth:`run`).

        Parameters
        ----------
        record : dict
            A record prepared by ``classifier.validate``.
        seed : int
            The record's noise seed (the service's ``request_seed``; ``certify``'s
            ``input_seed(run_seed, input_id)``).
        rule : stopping rule
            A fresh rule (``next_draws``, ``observe``, ``done``).
        timeout_s : float
            Seconds until the job is dropped (its future then raises :class:`JobTimeout`);
            default: never.
        key, owner : object, int
            Handed back in the outcome; ``owner`` is the job's number for ``labels_fn``.

        Returns
        -------
        Job
            ``job.future`` resolves to an :class:`Outcome`; ``job.cancel()`` drops it.
        """
        if rule.done:
            raise ValueError("the rule is already done: give a fresh one")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        stream = self.classifier.stream(record, seed, stage)
        with self._cond:
            if not self._accepting:
                raise ShuttingDown("the service is shutting down")
            if len(self._jobs) >= self.max_pending:
                raise QueueFull(f"{len(self._jobs)} requests are already queued or running")
            job = Job(next(self._numbers), stream, rule, time.monotonic() + timeout_s,
                      shape_key(record), attended_lengths(record), key, owner)
            self._jobs[job.number] = job
            self._cond.notify_all()
        return job

    # -- the worker ------------------------------------------------------------------------
    def _work(self) -> None:
        """The worker thread of :meth:`start`: cycles while jobs run, waits while none do."""
        torch.set_grad_enabled(False)
        with ThreadPoolExecutor(1, thread_name_prefix="hybridcert-forward") as model:
            flight = None                        # (plan, batch, future of the labels)
            while True:
                with self._cond:
                    while not self._jobs and flight is None and not self._stop:
                        self._cond.wait()
                    if not self._jobs and flight is None:
                        return
                flight = self._cycle(model, flight)

    def _cycle(self, model: ThreadPoolExecutor, flight):
        """One cycle (pipelined: while the model runs batch k in its thread, draw the noise
        of batch k + 1 from what the rules are known to need beyond the copies in flight,
        then hand batch k's labels to its jobs).  Returns the batch now in flight."""
        with self._cond:
            jobs = list(self._jobs.values())
        live = self._drop_expired(jobs)
        ready = self._draw(self._plan_batch(live)) if live else None
        if flight is not None:
            self._finish(*flight)
        if ready is None:
            return None
        plan, batch = ready
        return plan, batch, model.submit(self._forward, batch, self._slices(plan),
                                         self._owners(plan))

    def run(self, jobs: Iterable[tuple], window: int = 256) -> Iterator[Job]:
        """Run jobs in this thread, ``window`` at a time, and hand each back as soon as it
        is decided (or failed: ``job.future`` holds the outcome or the error).

        Parameters
        ----------
        jobs : iterable of tuple
            ``(record, seed, rule)`` or ``(record, seed, rule, key)``: a prepared record,
            its noise seed and a fresh rule (:class:`RuleSet` for several); taken lazily, in
            order; the ``owner`` of the i-th job is i.
        window : int
            Jobs in flight at once, at most ``max_pending`` (each holds one noise chunk of its
            stream).

        Yields
        ------
        Job
            Finished jobs, in the order they finish; an interrupted run (Ctrl-C) loses
            only the jobs in flight.
        """
        window = check_count("window", window, minimum=1)
        if window > self.max_pending:
            raise ValueError(f"window must be at most max_pending ({self.max_pending}), got "
                             f"{window}")
        if self._thread is not None:
            raise RuntimeError("run() drives the jobs in the caller's thread; this driver "
                               "already has a worker thread (start())")
        pending = iter(enumerate(jobs))
        running = 0
        finished: list[Job] = []          # filled as futures resolve (in this thread)
        # No grad-mode change here: this is the caller's thread (the forward thread disables
        # grad for itself in _forward).
        with ThreadPoolExecutor(1, thread_name_prefix="hybridcert-forward") as model:
            flight = None
            while True:
                while running < window:
                    item = next(pending, None)
                    if item is None:
                        break
                    owner, (record, seed, rule, *key) = item
                    job = self.submit(record, seed, rule, key=key[0] if key else None,
                                      owner=owner)
                    job.future.add_done_callback(lambda _, job=job: finished.append(job))
                    running += 1
                if not running and flight is None:
                    return
                flight = self._cycle(model, flight)
                if finished:
                    done = sorted(finished, key=lambda job: job.number)   # submission order
                    finished.clear()
                    running -= len(done)
                    yield from done

    def _drop_expired(self, jobs: list[Job]) -> list[Job]:
        now = time.monotonic()
        live = []
        for job in jobs:
            if job.cancelled or now >= job.deadline:
                self._remove(job)
                self.stats.expired += 1
                reason = "was cancelled" if job.cancelled else "ran past its deadline"
                _set(job.future, exception=JobTimeout(
                    f"the request {reason} after {job.rule.queries} base-model evaluations",
                    job.rule.queries))
            else:
                live.append(job)
        return live

    def _plan_batch(self, live: list[Job]) -> list[tuple[Job, int]]:
        """(job, copies) pairs of the next batch: oldest first, one shape; a job gets at most
        what its rule needs beyond its copies in flight (plus speculation)."""
        shape = live[0].shape
        group = [job for job in live if job.shape == shape]
        room = self.batch_size
        wants: dict[int, int] = {}          # asked lazily: jobs past a full batch are not
        takes: dict[int, int] = {}
        quantum = room if len(group) == 1 else max(1, self.batch_size // 4)
        for limit in (quantum, room):
            for job in group:
                if room == 0:
                    break
                if job.number not in wants:
                    wants[job.number] = job.need() - job.in_flight
                extra = min(wants[job.number] - takes.get(job.number, 0), limit, room)
                if extra > 0:
                    takes[job.number] = takes.get(job.number, 0) + extra
                    room -= extra
        if self.speculation and room:
            # Spare rows: copies beyond what a rule asked for (it ignores labels past its
            # decision, so the decision is unchanged); at most `speculation` x its draws.
            for job in group:
                if room == 0:
                    break
                have = job.drawn + takes.get(job.number, 0)
                cap = getattr(job.rule, "n_max", None)
                extra = min(room, math.ceil(self.speculation * have),
                            room if cap is None else max(0, int(cap) - have))
                if extra > 0:
                    takes[job.number] = takes.get(job.number, 0) + extra
                    room -= extra
        chosen = [(job, takes[job.number]) for job in group if takes.get(job.number)]
        if self.group_rows:
            chosen.sort(key=lambda pair: pair[0].lengths)      # stable: oldest first within
        return chosen

    def _slices(self, plan: list[tuple[Job, int]]) -> list[int]:
        return slice_ends([(job.lengths, take) for job, take in plan], self.group_rows)

    def _owners(self, plan: list[tuple[Job, int]]) -> np.ndarray | None:
        if self.labels_fn is None:
            return None
        return np.repeat(np.array([job.owner for job, _ in plan], dtype=np.int64),
                         [take for _, take in plan])

    def _draw(self, plan: list[tuple[Job, int]]):
        """(plan, batch) with each job's next copies, or None for an empty plan."""
        if not plan:
            return None
        now = time.monotonic()
        parts, drawn = [], []
        for job, take in plan:
            try:
                parts.extend(job.stream.copy_parts(take))
            except Exception as err:  # noise on this record failed: fail the job only
                self._fail(job, err)
                continue
            if job.started is None:
                job.started = now
            job.in_flight += take
            self.stats.drawn += take
            drawn.append((job, take))
        if not drawn:
            return None
        return drawn, concat_batches(parts)

    def _forward(self, batch: dict, ends: list[int], owners: np.ndarray | None = None
                 ) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        # Scoped: the bisection of a failed batch runs this in the caller's thread too.
        with torch.no_grad():
            if self.labels_fn is None:
                labels = labels_in_slices(self.classifier.base, batch, ends)
            else:
                labels = np.asarray(torch.as_tensor(self.labels_fn(batch, owners)).cpu()
                                    .numpy(), dtype=np.int64)
        seconds = time.perf_counter() - start
        self.classifier._check_labels(labels)
        return labels, seconds

    def _finish(self, plan: list[tuple[Job, int]], batch: dict, pending) -> None:
        """Hand a batch's labels to its jobs, in draw order; when the model fails on the
        batch, find the jobs it fails on (:meth:`_isolate`) and fail those only."""
        for job, take in plan:
            job.in_flight -= take
        try:
            labels, seconds = pending.result()
            parts = _split(labels, plan)
        except Exception as err:  # noqa: BLE001 - whatever the model raised
            parts, seconds = self._isolate(plan, batch, err)
        rows = sum(len(part) for part in parts.values())
        if rows:
            self.stats.batches += 1
            self.stats.rows += rows
            self.stats.forward_s += seconds
            if self.on_batch is not None:
                self.on_batch(rows, seconds)
        end = time.monotonic()
        given = []
        for job, _ in plan:
            part = parts.get(job.number)
            if part is None or job.number not in self._jobs:   # failed, dropped or decided
                continue
            job.batches += 1
            if rows:
                job.seconds += seconds * len(part) / rows
            given.append((job, part))
        going = []
        for job, err in observe_all(given):
            if err is not None:
                self._fail(job, err)
            elif job.rule.done:
                self._remove(job)
                self.stats.finished += 1
                _set(job.future, result=Outcome(job.rule, job.drawn, job.batches,
                                                (job.started or end) - job.submitted,
                                                end - job.submitted, job.seconds, job.key))
            else:
                going.append(job)
        need_all(going)

    def _isolate(self, plan: list[tuple[Job, int]], batch: dict, err: BaseException
                 ) -> tuple[dict[int, np.ndarray], float]:
        """The labels of the jobs of a batch the model failed on (``err``), by bisection:
        each half of the jobs is run again on its own rows; a half that fails again is split
        again, and a job that fails alone is failed with its error.  One job's input can so
        never fail another's (a model whose label for a row does not depend on the other
        rows gives each row the same label in a smaller call).  Returns the labels of the
        jobs that got them (by job number) and the model seconds spent."""
        if len(plan) == 1:
            self._fail(plan[0][0], err)
            return {}, 0.0
        parts: dict[int, np.ndarray] = {}
        seconds = 0.0
        middle = len(plan) // 2
        begin = 0
        for half in (plan[:middle], plan[middle:]):
            end = begin + sum(take for _, take in half)
            rows = {k: v[begin:end] for k, v in batch.items()}
            begin = end
            try:
                labels, spent = self._forward(rows, self._slices(half), self._owners(half))
                found = _split(labels, half)
            except Exception as again:  # noqa: BLE001 - whatever the model raised
                found, spent = self._isolate(half, rows, again)
            parts.update(found)
            seconds += spent
        return parts, seconds

    def _fail(self, job: Job, err: BaseException) -> None:
        if job.number in self._jobs:
            self._remove(job)
            self.stats.failed += 1
        _set(job.future, exception=err)

    def _remove(self, job: Job) -> None:
        with self._cond:
            self._jobs.pop(job.number, None)
            self._cond.notify_all()


def observe_all(given: list[tuple[Job, np.ndarray]]) -> Iterator[tuple[Job, BaseException | None]]:
    """Hand each job its labels (in draw order), the rules of one kind together
    (:func:`~hybridcert.sequential.batched.observe_many`); yields ``(job, error or None)``."""
    rules, parts, owner = [], [], []
    for index, (job, part) in enumerate(given):
        inner = job.rule.rules.values() if isinstance(job.rule, RuleSet) else (job.rule,)
        for rule in inner:
            if not rule.done:
                rules.append(rule)
                parts.append(part)
                owner.append(index)
    errors: list[BaseException | None] = [None] * len(given)
    for index, err in zip(owner, observe_many(rules, parts), strict=True):
        if err is not None and errors[index] is None:
            errors[index] = err
    for (job, _), err in zip(given, errors, strict=True):
        yield job, err


def need_all(jobs: list[Job]) -> None:
    """Each job's ``need()`` after its rule got labels, the rules of one kind computed
    together (:func:`~hybridcert.sequential.batched.next_draws_many`)."""
    rules, owner = [], []
    for index, job in enumerate(jobs):
        inner = job.rule.rules.values() if isinstance(job.rule, RuleSet) else (job.rule,)
        for rule in inner:
            if not rule.done:
                rules.append(rule)
                owner.append(index)
    need = [0] * len(jobs)
    for index, value in zip(owner, next_draws_many(rules), strict=True):
        need[index] = max(need[index], value)
    for job, value in zip(jobs, need, strict=True):
        job._need = (job.batches, max(1, value))


def _split(labels: np.ndarray, plan: list[tuple[Job, int]]) -> dict[int, np.ndarray]:
    """A batch's labels cut into each job's part (by job number), in plan order."""
    if labels.size != sum(take for _, take in plan):
        raise ValueError(f"the model gave {labels.size} labels for a batch of "
                         f"{sum(take for _, take in plan)} rows")
    parts, offset = {}, 0
    for job, take in plan:
        parts[job.number] = labels[offset: offset + take]
        offset += take
    return parts


def slice_ends(parts: list[tuple[tuple, int]], group_rows: int) -> list[int]:
    """Row offsets where the forward slices of a batch end.

    ``parts`` are the batch's consecutive (text lengths, rows) pieces, one per job, already
    ordered by length; a slice ends where the length changes once it holds at least
    ``group_rows`` rows, and a last slice shorter than that joins the one before it (0: one
    slice, the whole batch)."""
    ends, rows, start = [], 0, 0
    for i, (lengths, count) in enumerate(parts):
        rows += count
        if i + 1 == len(parts) or (group_rows and rows - start >= group_rows
                                   and parts[i + 1][0] != lengths):
            ends.append(rows)
            start = rows
    if len(ends) > 1 and ends[-1] - ends[-2] < group_rows:
        del ends[-2]
    return ends


def labels_in_slices(base, batch: dict, ends: list[int]) -> np.ndarray:
    """``base.labels`` of a batch, one forward pass per slice ``[previous end, end)``; a
    :class:`~hybridcert.smoothing.base.ModelOutputError` names the slice's rows in the batch."""
    if len(ends) == 1:
        return base.labels(batch).cpu().numpy().astype(np.int64)
    out = []
    for begin, end in zip([0, *ends[:-1]], ends, strict=True):
        try:
            labels = base.labels({k: v[begin:end] for k, v in batch.items()})
        except ModelOutputError as err:
            raise ModelOutputError(f"{err} (the call held rows {begin}..{end - 1} of a batch "
                                   f"of {ends[-1]})") from None
        out.append(labels.cpu().numpy().astype(np.int64))
    return np.concatenate(out)


def attended_lengths(record) -> tuple[int, ...]:
    """Attended positions of each token block of a record, in block-name order."""
    return tuple(block.attended for _, block in sorted(record.items())
                 if isinstance(block, TokenBlock))


def _set(future: Future, result=None, exception: BaseException | None = None) -> None:
    if future.done():
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)
