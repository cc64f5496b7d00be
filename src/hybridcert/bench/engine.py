"""Many inputs certified at once for the benchmark: several sequential rules per input, on
the one sequential driver (:class:`~hybridcert.sequential.driver.Driver`, as ``certify`` and
the service).

Several rules can read one stream (the detector, the majority vote and the baselines'
thresholds are all answered from the same draws; a
:class:`~hybridcert.sequential.driver.RuleSet`); each rule is valid on its own whatever the
others do, because a rule's answer depends only on the label sequence it is fed
(docs/SEQUENTIAL.md: any stopping time, any batching).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

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

    @property
    def done(self) -> bool:
        return all(rule.done for rule in self.rules.values())


def run_jobs(clf: SmoothedClassifier, jobs: Iterable[Job], *, labels_fn: LabelFn | None = None,
             batch_size: int = 128, window: int = 48,
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
        Inputs in flight (each keeps one noise chunk of its stream in memory).
    progress : callable, optional
        Called with the number of finished jobs after each batch that finished some.

    The owners handed to ``labels_fn`` are indices into ``jobs``.

    Returns
    -------
    list of Job
        The jobs, finished (every rule done), in the order given.
    """
    from hybridcert.sequential.driver import Driver, RuleSet

    for name, value in (("batch_size", batch_size), ("window", window)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    queue = list(jobs)
    for job in queue:
        if not job.rules:
            raise ValueError(f"job {job.key!r} has no rules")
        job.record = clf.validate(job.record)
    driver = Driver(clf, batch_size=batch_size, max_pending=window, labels_fn=labels_fn)
    finished = sum(job.done for job in queue)
    todo = ((job.record, job.seed, RuleSet(job.rules), index)
            for index, job in enumerate(queue) if not job.done)
    for ran in driver.run(todo, window=window):
        outcome = ran.future.result()
        job = queue[ran.key]
        job.drawn, job.seconds = outcome.drawn, outcome.seconds
        finished += 1
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
