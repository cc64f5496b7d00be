"""Many inputs certified at once: sequential rules driven by shared forward passes.

:func:`hybridcert.sequential.certify_sequential` certifies one input at a time, and
its rules ask for few draws at a time (16, 30, ...): one input's copies make small, slow
batches.  :func:`run_jobs` keeps a window of inputs in flight, asks every rule of every input
how many draws it needs next (``next_draws``), takes exactly those copies from each input's
own label stream (:meth:`SmoothedClassifier.stream`, seeded by the input's seed and
``Stage.SEQUENTIAL``: the same copies ``certify_sequential`` and the service draw) and runs
them through the model in shared batches.  Several rules can read one stream (the detector,
the majority vote and the baselines' thresholds are all answered from the same draws); each
rule is valid on its own whatever the others do, because a rule's answer depends only on the
label sequence it is fed (docs/SEQUENTIAL.md: any stopping time, any batching).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from hybridcert.blocks import Record
from hybridcert.sequential.rules import StoppingRule
from hybridcert.smoothing import SmoothedClassifier, Stage

#: ``labels_fn(batch, owners)``: base-model labels of a batch whose row j is a copy of job
#: ``owners[j]`` (the owners let a model reuse what it cached per input).
LabelFn = Callable[[dict[str, torch.Tensor], np.ndarray], torch.Tensor]


@dataclass
class Job:
    """One input of a run: its record, its noise seed and the rules its draws answer.

    Parameters
    ----------
    record : dict
        The record (prepared or not: :func:`run_jobs` prepares it with the classifier's noise).
    seed : int
        The input's noise seed (``input_seed(run_seed, input_id)``).
    rules : dict
        Name -> fresh stopping rule (e.g. ``SequentialQuestion.new_rule()``); all read the same
        label stream, in draw order.
    key : object
        Anything that identifies the input to the caller.

    Attributes
    ----------
    drawn : int
        Copies drawn (the most any rule used).
    seconds : float
        This input's share of the forward passes' wall time (s).
    """

    record: Record
    seed: int
    rules: dict[str, StoppingRule]
    key: object = None
    drawn: int = 0
    seconds: float = 0.0
    _stream: object = field(default=None, repr=False, init=False)
    _index: int = field(default=-1, repr=False, init=False)

    @property
    def done(self) -> bool:
        return all(rule.done for rule in self.rules.values())

    def need(self) -> int:
        """Draws before some rule of this input can be done."""
        return max(rule.next_draws() for rule in self.rules.values() if not rule.done)


def run_jobs(clf: SmoothedClassifier, jobs: Iterable[Job], *, labels_fn: LabelFn | None = None,
             batch_size: int = 128, window: int = 48, round_rows: int = 2048,
             progress: Callable[[int], None] | None = None) -> list[Job]:
    """Drive every job's rules to the end with copies from its own stream.

    Parameters
    ----------
    clf : SmoothedClassifier
        Its noise draws the copies; its base model labels them unless ``labels_fn`` is given.
    jobs : iterable of Job
        Taken in order, ``window`` at a time (order inputs by text length: a batch runs at
        its longest text).
    labels_fn : callable, optional
        ``(batch, owners) -> labels``; default ``clf.base.labels(batch)``.
    batch_size : int
        Rows per forward pass (128 is fastest on 2 CPU cores for the safety filter).
    window : int
        Inputs in flight (each keeps one noise chunk of 256 copies in memory).
    round_rows : int
        Copies drawn per round across the window (memory: one image is 27 kB).
    progress : callable, optional
        Called with the number of finished jobs after each round that finished some.

    The owners handed to ``labels_fn`` are indices into ``jobs``.

    Returns
    -------
    list of Job
        The jobs, finished (every rule done), in the order given.
    """
    for name, value in (("batch_size", batch_size), ("window", window),
                        ("round_rows", round_rows)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    labels_fn = labels_fn or (lambda batch, owners: clf.base.labels(batch))
    queue = list(jobs)
    for index, job in enumerate(queue):
        job._index = index
        if not job.rules:
            raise ValueError(f"job {job.key!r} has no rules")
        job.record = clf.validate(job.record)
        job._stream = clf.stream(job.record, job.seed, Stage.SEQUENTIAL)
    waiting = iter(queue)
    active: list[Job] = []
    finished = 0
    start = 0

    def fill() -> None:
        while len(active) < window:
            job = next(waiting, None)
            if job is None:
                return
            if job.done:
                continue
            active.append(job)

    fill()
    while active:
        chosen, sizes, parts, total = [], [], [], 0
        for k in range(len(active)):
            job = active[(start + k) % len(active)]
            need = job.need()
            if total and total + need > round_rows:
                continue
            chosen.append(job)
            sizes.append(need)
            parts.append(job._stream.copies(need))
            total += need
            if total >= round_rows:
                break
        start = (start + len(chosen)) % max(1, len(active))
        batch = _concatenate(parts)
        local = np.repeat(np.arange(len(chosen)), sizes)
        owners = np.array([job._index for job in chosen])[local]
        labels = np.empty(total, dtype=np.int64)
        for begin in range(0, total, batch_size):
            end = min(total, begin + batch_size)
            chunk = {k: v[begin:end] for k, v in batch.items()}
            t0 = time.perf_counter()
            out = labels_fn(chunk, owners[begin:end])
            elapsed = time.perf_counter() - t0
            out = np.asarray(torch.as_tensor(out).cpu().numpy(), dtype=np.int64)
            clf._check_labels(out)
            labels[begin:end] = out
            share = np.bincount(local[begin:end], minlength=len(chosen)) / (end - begin)
            for j in np.flatnonzero(share):
                chosen[j].seconds += elapsed * float(share[j])
        offset = 0
        for job, size in zip(chosen, sizes, strict=True):
            part = labels[offset: offset + size]
            offset += size
            job.drawn += size
            for rule in job.rules.values():
                if not rule.done:
                    rule.observe(part)
        done_now = [job for job in chosen if job.done]
        if done_now:
            active[:] = [job for job in active if not job.done]
            finished += len(done_now)
            fill()
            if progress is not None:
                progress(finished)
    return queue


def _concatenate(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One batch from several inputs' copies; token blocks of different lengths are padded
    with id 0 under attention 0 (the model never reads padding)."""
    if len(parts) == 1:
        return parts[0]
    out = {}
    for key in parts[0]:
        tensors = [p[key] for p in parts]
        if tensors[0].ndim == 2 and len({t.shape[1] for t in tensors}) > 1:
            width = max(t.shape[1] for t in tensors)
            tensors = [torch.nn.functional.pad(t, (0, width - t.shape[1])) for t in tensors]
        out[key] = torch.cat(tensors)
    return out


def count_copies(clf: SmoothedClassifier, records: list[Record], seeds: list[int], copies: int,
                 *, labels_fn: LabelFn | None = None, batch_size: int = 128,
                 stage: int = Stage.SELECTION) -> np.ndarray:
    """Class counts ``(len(records), num_classes)`` of ``copies`` noisy copies of each record
    (the first copies of its stream ``(seed, stage)``), several records per forward pass.
    ``labels_fn`` as for :func:`run_jobs` (owners index ``records``)."""
    if len(seeds) != len(records):
        raise ValueError(f"seeds must have one entry per record ({len(records)}), got "
                         f"{len(seeds)}")
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise ValueError(f"copies must be an integer >= 1, got {copies!r}")
    labels_fn = labels_fn or (lambda batch, owners: clf.base.labels(batch))
    counts = np.zeros((len(records), clf.num_classes), dtype=np.int64)
    per_batch = max(1, batch_size // copies)
    for begin in range(0, len(records), per_batch):
        members = range(begin, min(len(records), begin + per_batch))
        parts = [clf.stream(clf.validate(records[i]), seeds[i], stage).copies(copies)
                 for i in members]
        batch = _concatenate(parts)
        owners = np.repeat(np.fromiter(members, dtype=np.int64), copies)
        for start in range(0, owners.size, batch_size):
            chunk = {k: v[start: start + batch_size] for k, v in batch.items()}
            out = np.asarray(torch.as_tensor(labels_fn(chunk, owners[start: start + batch_size]))
                             .cpu().numpy(), dtype=np.int64)
            clf._check_labels(out)
            np.add.at(counts, (owners[start: start + batch_size], out), 1)
    return counts
