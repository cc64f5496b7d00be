"""Monte Carlo prediction and certification of a smoothed classifier (docs/THEORY.md).

``certify`` (majority vote) draws ``n0`` noisy copies to pick the top class A and ``n``
fresh copies to bound its probability, and abstains unless the joint certificate holds at no
perturbation; otherwise it returns A and the certified region.  With probability at least
``1 - alpha`` over the sampling the returned region is correct:

* two classes (``p_upper="complement"``): ``pA`` is a one-sided Clopper–Pearson lower bound at
  level ``1 - alpha`` and ``pB = 1 - pA``; valid for any number of classes (it is
  conservative with more than two);
* more classes (``p_upper="bonferroni"``): ``pA`` at ``alpha / 2`` and an upper bound on
  *every* other class at ``alpha / (2 (C - 1))``; ``pB`` is the largest of them.  By the union
  bound all C bounds hold together with probability ``>= 1 - alpha``, whichever class the
  selection sample ranked second.

``certify_detector`` smooths a thresholded detector: class c is flagged iff
``P(f = c) >= tau``.  No selection sample is needed (c is fixed).  The flag side certifies a
flagged input (``lower(pc_lower) >= tau`` in the region, ``pc_lower`` a lower bound at level
``1 - alpha``); the benign side certifies that an input cannot be pushed into a flag
(``upper(pc_upper) < tau``, ``pc_upper`` an upper bound at ``1 - alpha``); asking for both
spends ``alpha / 2`` on each bound (a two-sided interval), since either claim may be made.

``predict`` abstains unless a two-sided binomial test between the two most frequent classes
rejects at ``alpha``.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.stats import beta, binomtest

from hybridcert._validation import check_alpha, check_count, check_probability
from hybridcert.blocks import CertifiedRegion, HybridNoise, Record, TokenBlock
from hybridcert.noise import Noise
from hybridcert.sequential.rules import benign_label
from hybridcert.smoothing.base import BaseClassifier
from hybridcert.smoothing.results import ABSTAIN, Certification, Prediction

#: Noise is drawn in chunks of this many copies, each from its own seeded generator, so
#: that results do not depend on the model batch size.
NOISE_CHUNK = 256
#: Sequential streams draw smaller chunks: a decision often needs only tens of copies, and the
#: first look's latency includes drawing its whole chunk.
STREAM_CHUNK = 64
#: On an accelerator a stream's chunks are larger (fewer, larger noise kernels: the per-kernel
#: cost dominates there), up to this many copies and this many bytes of noisy copies per
#: chunk (a job holds one chunk); never fewer than ``STREAM_CHUNK``.
ACCELERATOR_CHUNK, ACCELERATOR_CHUNK_BYTES = 1024, 32 * 2**20


class Stage:
    """Names of the independent noise streams of one input (each seeds its own chunks)."""

    SELECTION = 0
    ESTIMATION = 1
    PREDICTION = 2
    FIT_CHECK = 9
    SEQUENTIAL = 100      # sequential rules: one stream, chunk by chunk
    ATTACK_CHECK = 200    # hybridcert attack: fresh draws before and after an attack


#: A detector's sides -> the name of its rule (``--rule``, ``Certification.rule``, the mode of
#: :class:`~hybridcert.sequential.rules.DecisionTest`); the one map between the two.
RULE_OF_SIDES = {"flag": "flag", "benign": "benign", "both": "detector"}


@dataclass(frozen=True)
class Detector:
    """A thresholded detector: ``flagged_class`` is flagged iff its smoothed probability is at
    least ``threshold``.

    Parameters
    ----------
    threshold : float
        ``tau`` in (0, 1) (the hybrid-smoothing paper's guard uses 4.6e-5).
    flagged_class : int
        The class whose probability is thresholded (e.g. 1 = unsafe).
    sides : str
        ``"flag"`` (certify that a flagged input stays flagged: the evasion direction),
        ``"benign"`` (certify that an unflagged input cannot be pushed into a flag) or
        ``"both"`` (each bound at ``alpha / 2``).
    """

    threshold: float
    flagged_class: int = 1
    sides: str = "flag"

    def __post_init__(self) -> None:
        check_probability("threshold", self.threshold, open_low=True, open_high=True)
        check_count("flagged_class", self.flagged_class)
        if self.sides not in RULE_OF_SIDES:
            raise ValueError(f"sides must be 'flag', 'benign' or 'both', got {self.sides!r}")

    @classmethod
    def for_rule(cls, rule: str, threshold: float | None, flagged_class: int = 1
                 ) -> Detector | None:
        """The detector of a rule name (``flag``, ``benign``, ``detector``); None for
        ``majority`` (the vote)."""
        if rule == "majority":
            return None
        sides = {name: side for side, name in RULE_OF_SIDES.items()}.get(rule)
        if sides is None:
            raise ValueError(f"rule must be majority, flag, benign or detector, got {rule!r}")
        return cls(threshold, flagged_class, sides)

    def rules(self):
        """(flag rule or None, benign rule or None) of the certificate engine."""
        from hybridcert.certificate import Rule

        flag = Rule.flag(self.threshold) if self.sides in ("flag", "both") else None
        benign = Rule.benign(self.threshold) if self.sides in ("benign", "both") else None
        return flag, benign

    def level(self, alpha: float) -> float:
        return alpha / 2 if self.sides == "both" else alpha

    @property
    def name(self) -> str:
        return RULE_OF_SIDES[self.sides]


class SmoothedClassifier:
    """A base classifier smoothed by independent noise on each block of a record.

    Parameters
    ----------
    base : torch.nn.Module or callable
        See :class:`~hybridcert.smoothing.base.BaseClassifier`.
    noise : HybridNoise or dict
        The blocks and their noise (:class:`~hybridcert.blocks.HybridNoise`), or the short
        form ``{block name: noise}`` (Gaussian -> continuous block, Substitution/Mask -> token
        block) with ``vocabularies``.
    num_classes : int
    vocabularies : dict, optional
        Short form only: token block name -> :class:`~hybridcert.blocks.Vocabulary`.
    batch_size : int
        Noisy copies per forward pass.
    device : str
    prefetch : bool
        Draw the next batch's noise in a background thread while the model runs on the
        current one.  The noise is the same either way (one producer, same order).
    parallel_batches : int
        Batches run at once, each in its own thread with single-threaded torch (then
        ``prefetch`` is moot).  On a CPU, whole batches side by side use the cores better
        than one batch split across them; set it to the number of cores.  The base
        classifier must then be safe to call from several threads (an ``nn.Module`` in eval
        mode is).  The counts are the same whatever the value.
    """

    def __init__(self, base, noise: HybridNoise | Mapping[str, Noise], num_classes: int,
                 vocabularies: Mapping | None = None, batch_size: int = 256,
                 device: str = "cpu", prefetch: bool = True, parallel_batches: int = 1):
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) \
                or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) \
                or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if isinstance(noise, HybridNoise):
            if vocabularies:
                raise ValueError("vocabularies belong in the HybridNoise's Tokens blocks")
            self.noise = noise
        else:
            self.noise = HybridNoise.from_noises(noise, vocabularies)
        self.base = base if isinstance(base, BaseClassifier) else BaseClassifier(base, device)
        self.num_classes = int(num_classes)
        self.batch_size = int(batch_size)
        self.prefetch = bool(prefetch)
        if isinstance(parallel_batches, bool) or \
                not isinstance(parallel_batches, numbers.Integral) or parallel_batches < 1:
            raise ValueError(f"parallel_batches must be an integer >= 1, got "
                             f"{parallel_batches!r}")
        self.parallel_batches = int(parallel_batches)

    # -- the algorithm -------------------------------------------------------------------
    def certify(self, x: Record, n0: int, n: int, alpha: float, seed: int = 0,
                p_upper: str = "complement", max_tokens: int | Mapping | None = 16
                ) -> Certification:
        """Certify one record: class (or ABSTAIN) and region, valid w.p. >= 1 - alpha.

        ``p_upper``: "complement" uses pB = 1 - pA (two classes; conservative with more);
        "bonferroni" bounds pA at alpha / 2 and every other class at alpha / (2 (C - 1)).
        """
        return self.certify_many([x], n0, n, alpha, [seed], p_upper, max_tokens)[0]

    def certify_many(self, records: list[Record], n0: int, n: int, alpha: float,
                     seeds: list[int], p_upper: str = "complement",
                     max_tokens: int | Mapping | None = 16) -> list[Certification]:
        """:meth:`certify` for several records, sharing forward passes between records of
        the same shapes.  Each result equals ``certify(records[i], ..., seed=seeds[i])``."""
        return _in_order(len(records), self.certify_each(records, n0, n, alpha, seeds, p_upper,
                                                         max_tokens))

    def certify_each(self, records: list[Record], n0: int, n: int, alpha: float,
                     seeds: list[int], p_upper: str = "complement",
                     max_tokens: int | Mapping | None = 16
                     ) -> Iterator[tuple[int, Certification]]:
        """:meth:`certify_many`, yielding ``(i, result)`` as soon as record ``i``'s draws are
        all counted.  Forward passes are still shared; within records of one shape a record's
        draws are queued before the next one's, so results arrive one by one, in order
        (``parallel_batches > 1``: in the order their last batch finishes)."""
        _check_counts(n0=n0, n=n, alpha=alpha)
        if p_upper not in ("complement", "bonferroni"):
            raise ValueError(f"p_upper must be 'complement' or 'bonferroni', got {p_upper!r}")
        self._check_seeds(records, seeds)
        check_can_certify(n, alpha / 2 if p_upper == "bonferroni" else alpha)
        return self._certify_each([self.validate(x) for x in records], n0, n, alpha, seeds,
                                  p_upper, max_tokens)

    def _certify_each(self, prepared, n0, n, alpha, seeds, p_upper, max_tokens):
        stages = ((Stage.SELECTION, n0), (Stage.ESTIMATION, n))
        for i, (selection, counts), seconds in self._counts_each(prepared, seeds, stages):
            top = int(np.argsort(-selection, kind="stable")[0])
            p_a, p_b = self._majority_bounds(counts[None], [top], n, alpha, p_upper)
            region = self.noise.frontier(p_a, p_upper=p_b, max_tokens=max_tokens,
                                         noised_positions=[self.noise.noised_positions(
                                             prepared[i])], batch_invariant=True)[0]
            label = top if region.certified else ABSTAIN
            yield i, Certification(
                label, float(p_a[0]), None if p_b is None else float(p_b[0]),
                region if region.certified else CertifiedRegion.empty(self.noise),
                counts, n0 + n, time_s=float(seconds))

    def _majority_bounds(self, counts, top, n, alpha, p_upper):
        """Lower bound on each record's top class; with "bonferroni", the largest upper bound
        over all other classes (each at alpha / (2 (C - 1)))."""
        if p_upper == "complement":
            return np.array([lower_confidence_bound(int(c[t]), n, alpha)
                             for c, t in zip(counts, top, strict=True)]), None
        others = self.num_classes - 1
        p_a = np.array([lower_confidence_bound(int(c[t]), n, alpha / 2)
                        for c, t in zip(counts, top, strict=True)])
        p_b = np.array([max(upper_confidence_bound(int(c[k]), n, alpha / (2 * others))
                            for k in range(self.num_classes) if k != t)
                        for c, t in zip(counts, top, strict=True)])
        return p_a, p_b

    def certify_detector(self, x: Record, n: int, alpha: float, detector: Detector,
                         seed: int = 0, max_tokens: int | Mapping | None = 16
                         ) -> Certification:
        """Certify one record as a thresholded detector (see :class:`Detector`)."""
        return self.certify_detector_many([x], n, alpha, detector, [seed], max_tokens)[0]

    def certify_detector_many(self, records: list[Record], n: int, alpha: float,
                              detector: Detector, seeds: list[int],
                              max_tokens: int | Mapping | None = 16) -> list[Certification]:
        """:meth:`certify_detector` for several records (shared forward passes)."""
        return _in_order(len(records), self.certify_detector_each(records, n, alpha, detector,
                                                                  seeds, max_tokens))

    def certify_detector_each(self, records: list[Record], n: int, alpha: float,
                              detector: Detector, seeds: list[int],
                              max_tokens: int | Mapping | None = 16
                              ) -> Iterator[tuple[int, Certification]]:
        """:meth:`certify_detector_many`, yielding ``(i, result)`` as each record finishes
        (see :meth:`certify_each`)."""
        _check_counts(n=n, alpha=alpha)
        if detector.flagged_class >= self.num_classes:
            raise ValueError(f"flagged_class must lie in [0, {self.num_classes - 1}], got "
                             f"{detector.flagged_class}")
        self._check_seeds(records, seeds)
        return self._detector_each([self.validate(x) for x in records], n, alpha, detector,
                                   seeds, max_tokens)

    def _detector_each(self, prepared, n, alpha, detector, seeds, max_tokens):
        level = detector.level(alpha)
        for i, (counts,), seconds in self._counts_each(prepared, seeds,
                                                       ((Stage.ESTIMATION, n),)):
            yield i, detector_results(
                self.noise, detector, counts[detector.flagged_class], n, level,
                [self.noise.noised_positions(prepared[i])], max_tokens, counts[None], [n],
                [seconds], self.num_classes)[0]

    def predict(self, x: Record, n: int, alpha: float, seed: int = 0) -> Prediction:
        """Top class, or ABSTAIN unless a two-sided binomial test rejects at ``alpha``."""
        _check_counts(n=n, alpha=alpha)
        if 2 * 0.5**n > alpha:
            raise ValueError(f"n={n} can never predict at alpha={alpha}: the smallest "
                             f"two-sided p-value is 2 * 0.5**n = {2 * 0.5**n:.3g}; use "
                             f"n >= {math.ceil(math.log2(2 / alpha))}")
        counts = self.sample_counts(self.validate(x), n, seed, stage=Stage.PREDICTION)
        top = np.argsort(-counts, kind="stable")[:2]
        n_a, n_b = int(counts[top[0]]), int(counts[top[1]])
        p_value = binomtest(n_a, n_a + n_b, 0.5).pvalue if n_a + n_b > 0 else 1.0
        label = int(top[0]) if p_value <= alpha else ABSTAIN
        return Prediction(label, counts, float(p_value))

    def _check_seeds(self, records, seeds) -> None:
        if len(seeds) != len(records):
            raise ValueError(f"seeds must have one entry per record ({len(records)}), "
                             f"got {len(seeds)}")

    # -- sampling ------------------------------------------------------------------------
    def sample_counts(self, x: Record, num: int, seed: int, stage: int) -> np.ndarray:
        """Class counts of the base classifier on ``num`` noisy copies of a prepared ``x``."""
        return self.sample_counts_many([x], num, [seed], stage)[0]

    def stream(self, x: Record, seed: int, stage: int = Stage.SEQUENTIAL) -> LabelStream:
        """The base model's labels on the noisy copies of the stream ``(seed, stage)`` of a
        prepared record, drawn on demand in order (see :class:`LabelStream`)."""
        return LabelStream(self, x, seed, stage)

    def sample_counts_many(self, records: list[Record], num: int, seeds: list[int],
                           stage: int, seconds: np.ndarray | None = None) -> np.ndarray:
        """Counts ``(len(records), num_classes)``; records whose blocks have the same
        shapes share batches, and each record's noise comes from its own seed.  ``seconds``
        (optional, per record) accumulates each record's share of the forward passes."""
        out = np.zeros((len(records), self.num_classes), dtype=np.int64)
        for i, (counts,), spent in self._counts_each(records, seeds, ((stage, num),)):
            out[i] = counts
            if seconds is not None:
                seconds[i] += spent
        return out

    def _counts_each(self, records: list[Record], seeds: list[int],
                     stages: tuple[tuple[int, int], ...]
                     ) -> Iterator[tuple[int, np.ndarray, float]]:
        """Class counts of each prepared record at each ``(stage, copies)`` of ``stages``,
        yielded as ``(i, counts (len(stages), num_classes), seconds)`` as soon as record
        ``i``'s copies are all counted.  Records whose blocks have the same shapes share
        batches (a record's copies, all its stages, are queued before the next record's);
        each stream's noise comes from its own seed, so counts do not depend on the
        batching.  ``seconds``: the record's share of the forward passes."""
        per = len(stages)
        expected = np.tile(np.array([num for _, num in stages], dtype=np.int64), len(records))
        groups: dict[tuple, list[int]] = {}
        for i, x in enumerate(records):
            groups.setdefault(shape_key(x), []).append(i)
        for members in groups.values():
            streams = ((i * per + s, self._noise_chunks(records[i], num, seeds[i], stage))
                       for i in members for s, (stage, num) in enumerate(stages))
            batches = _rebatch(streams, self.batch_size)
            tally = _Tally(expected, per, self.num_classes)
            if self.parallel_batches > 1:
                finished = self._finished_in_threads(batches, tally)
            else:
                finished = (i for batch, owner in (_prefetched(batches) if self.prefetch
                                                   else batches)
                            for i in tally.add(self._count_slots(batch, owner, tally), owner))
            left = set(members)
            for i in finished:
                left.discard(i)
                yield i, tally.counts(i), tally.seconds(i)
            for i in sorted(left):        # no copies asked (num = 0)
                yield i, tally.counts(i), tally.seconds(i)

    def _count_slots(self, batch, owner, tally: _Tally) -> tuple[np.ndarray, np.ndarray]:
        spent = np.zeros(tally.expected.size)
        return self._count(batch, owner, tally.expected.size, spent), spent

    def _count(self, batch: dict[str, torch.Tensor], owner: np.ndarray,
               records: int, seconds: np.ndarray | None = None) -> np.ndarray:
        """Class counts ``(records, num_classes)`` of one batch whose row j is a noisy copy
        of record ``owner[j]``."""
        start = time.perf_counter()
        labels = self.base.labels(batch).to(self.base.device)
        self._check_labels(labels)
        local = torch.as_tensor(owner, device=labels.device)
        flat = torch.bincount(local * self.num_classes + labels,
                              minlength=records * self.num_classes)
        if seconds is not None:
            np.add.at(seconds, owner, (time.perf_counter() - start) / owner.size)
        return flat.view(records, self.num_classes).cpu().numpy()

    def _check_labels(self, labels) -> None:
        if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"the base classifier returned a label outside "
                             f"[0, {self.num_classes - 1}]")

    def _finished_in_threads(self, batches, tally: _Tally) -> Iterator[int]:
        """Count over ``batches`` with ``parallel_batches`` threads: each takes the next
        batch (drawn under a lock, so in the serial order) and runs the model on it; yields
        each record as soon as its copies are all counted."""
        lock, stop, done = threading.Lock(), threading.Event(), queue.Queue()
        workers = self.parallel_batches
        # One intra-op thread per worker (the workers are the parallelism).  That setting is
        # not the worker's own: torch.set_num_threads sets the process-wide count that every
        # thread starting torch work afterwards takes (only threads that already ran torch
        # code keep theirs), so the caller's count is put back once the workers are done.
        caller_threads = torch.get_num_threads()

        def work() -> None:
            torch.set_num_threads(1)
            try:
                while not stop.is_set():
                    with lock:
                        item = next(batches, None)
                    if item is None:
                        break
                    counted = self._count_slots(*item, tally)
                    with lock:
                        for i in tally.add(counted, item[1]):
                            done.put(i)
            except BaseException as err:
                stop.set()
                done.put(err)
            finally:
                done.put(None)

        try:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for _ in range(workers):
                    pool.submit(work)
                try:
                    ended = 0
                    while ended < workers:
                        got = done.get()
                        if got is None:
                            ended += 1
                        elif isinstance(got, BaseException):
                            raise got
                        else:
                            yield got
                finally:
                    stop.set()                # e.g. Ctrl-C here: the workers stop, not finish
        finally:
            torch.set_num_threads(caller_threads)     # the pool has joined its workers

    def _noise_chunks(self, x: Record, num: int, seed: int, stage: int):
        x = _record_on(x, self.base.device)          # once per record, not per chunk
        for chunk in range(math.ceil(num / NOISE_CHUNK)):
            copies = min(NOISE_CHUNK, num - chunk * NOISE_CHUNK)
            yield self.noisy_copies(x, copies, _chunk_seed(seed, stage, chunk))

    def noisy_copies(self, x: Record, copies: int, seed: int, sampler=None
                     ) -> dict[str, torch.Tensor]:
        """``copies`` noisy versions of a prepared record, as a model batch (``sampler``:
        ``noise.sampler(x, device)``, the same copies for a record drawn again and again)."""
        generator = torch.Generator(device=self.base.device).manual_seed(seed)
        if sampler is not None:
            return sampler(copies, generator)
        return self.noise.sample(x, copies, generator, self.base.device)

    # -- validation ----------------------------------------------------------------------
    def validate(self, x: Record) -> Record:
        """Check a record and fix each token block's noised positions (its threat model)."""
        return self.noise.prepare(x)


class LabelStream:
    """Labels of noisy copies of one record, in draw order, as many at a time as asked.

    Copy ``j`` is the same whatever the split into calls: noise is drawn in seeded chunks
    (the current chunk is kept until used up) of ``STREAM_CHUNK`` copies on a CPU, and of
    :func:`stream_chunk` copies on an accelerator.
    """

    def __init__(self, classifier: SmoothedClassifier, record: Record, seed: int, stage: int):
        self.classifier, self.record, self.seed, self.stage = classifier, record, seed, stage
        self._on_device: Record | None = None
        self._sampler = None
        self.drawn = 0
        self._chunk: tuple[int, dict] | None = None
        self.chunk_size = stream_chunk(classifier.base.device, record)

    def copies(self, num: int) -> dict[str, torch.Tensor]:
        """The next ``num`` noisy copies as a model batch (advances the stream)."""
        return concat_batches(self.copy_parts(num))

    def copy_parts(self, num: int) -> list[dict[str, torch.Tensor]]:
        """The next ``num`` noisy copies as consecutive pieces (views of the drawn chunks, in
        draw order), for a caller that concatenates them with other streams' copies anyway
        (advances the stream)."""
        if self._on_device is None:
            # On a GPU the record goes there once, at the first draw (in the drawing thread: a
            # copy waits for the forward pass queued before it); the noise is the same.
            self._on_device = _record_on(self.record, self.classifier.base.device)
            self._sampler = self.classifier.noise.sampler(self._on_device,
                                                          self.classifier.base.device)
        parts = []
        for chunk, begin, end in _chunk_span(self.drawn, num, self.chunk_size):
            if self._chunk is None or self._chunk[0] != chunk:
                batch = self.classifier.noisy_copies(self._on_device, self.chunk_size,
                                                     _chunk_seed(self.seed, self.stage, chunk),
                                                     self._sampler)
                self._chunk = (chunk, batch)
            if begin == 0 and end == self.chunk_size:
                parts.append(self._chunk[1])
            else:
                parts.append({k: v[begin:end] for k, v in self._chunk[1].items()})
        self.drawn += num
        return parts

    def labels(self, num: int) -> np.ndarray:
        """The base model's labels on the next ``num`` copies."""
        labels = self.classifier.base.labels(self.copies(num)).cpu().numpy()
        self.classifier._check_labels(labels)
        return labels.astype(np.int64)


def stream_chunk(device: torch.device, record: Record) -> int:
    """Copies per noise chunk of a sequential stream: ``STREAM_CHUNK`` on a CPU; on an
    accelerator the largest power of two up to ``ACCELERATOR_CHUNK`` whose copies of the
    record take at most ``ACCELERATOR_CHUNK_BYTES`` (at least ``STREAM_CHUNK``).  A seed so
    names the same copies on every CPU; on an accelerator it names other copies (drawn by
    the device's generator, cut into these chunks), the same ones on every device of one
    kind for records of one shape."""
    if torch.device(device).type == "cpu":
        return STREAM_CHUNK
    row = sum(2 * block.ids.numel() * block.ids.element_size()      # ids and attention
              if isinstance(block, TokenBlock) else block.numel() * block.element_size()
              for block in record.values())
    size = ACCELERATOR_CHUNK
    while size > STREAM_CHUNK and size * row > ACCELERATOR_CHUNK_BYTES:
        size //= 2
    return size


def detector_results(noise: HybridNoise, detector: Detector, hits, n, level, positions,
                     max_tokens, counts, queries, seconds, num_classes, looks=None,
                     mode="fixed") -> list[Certification]:
    """Detector certificates from flagged-class counts ``hits`` out of ``n`` draws each,
    bounds at ``level`` (shared by fixed-n and sequential runs)."""
    flag, benign = detector.rules()
    hits = np.atleast_1d(hits)
    n = np.broadcast_to(np.asarray(n), hits.shape)
    p_low = np.array([lower_confidence_bound(int(h), int(m), level)
                      for h, m in zip(hits, n, strict=True)]) if flag else None
    p_high = np.array([upper_confidence_bound(int(h), int(m), level)
                       for h, m in zip(hits, n, strict=True)]) if benign else None
    flagged = noise.frontier(p_low, rule=flag, max_tokens=max_tokens,
                             noised_positions=positions, batch_invariant=True) if flag else None
    cleared = noise.frontier(p_high, rule=benign, max_tokens=max_tokens,
                             noised_positions=positions, batch_invariant=True) \
        if benign else None
    other = benign_label(detector.flagged_class, num_classes)
    out = []
    for i in range(hits.size):
        if flagged is not None and flagged[i].certified:
            label, decision, region = detector.flagged_class, "flag", flagged[i]
        elif cleared is not None and cleared[i].certified:
            label, decision, region = other, "benign", cleared[i]
        else:
            label, decision, region = ABSTAIN, "abstain", CertifiedRegion.empty(noise)
        out.append(Certification(
            label, None if p_low is None else float(p_low[i]),
            None if p_high is None else float(p_high[i]), region, counts[i], int(queries[i]),
            1 if looks is None else int(looks[i]), time_s=float(seconds[i]), mode=mode,
            rule=detector.name, decision=decision))
    return out


def _check_counts(**values) -> None:
    for key in ("n0", "n"):
        if key in values:
            v = values[key]
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{key} must be an integer >= 1, got {v!r}")
    check_alpha(values["alpha"])


def lower_confidence_bound(successes: int, trials: int, alpha: float) -> float:
    """One-sided Clopper–Pearson lower bound at level ``1 - alpha``."""
    return float(beta.ppf(alpha, successes, trials - successes + 1)) if successes else 0.0


def upper_confidence_bound(successes: int, trials: int, alpha: float) -> float:
    """One-sided Clopper–Pearson upper bound at level ``1 - alpha``."""
    if successes >= trials:
        return 1.0
    return float(beta.ppf(1 - alpha, successes + 1, trials - successes))


def best_possible_p_lower(n: int, alpha: float) -> float:
    """The largest pA lower bound ``n`` samples can give (all n agree): ``alpha ** (1/n)``."""
    return alpha ** (1.0 / n)


def max_certifiable_radius(n: int, alpha: float, sigma: float) -> float:
    """Largest L2 radius ``n`` samples at level ``alpha`` can ever certify (at r = 0)."""
    from scipy.special import ndtri

    return max(0.0, sigma * float(ndtri(best_possible_p_lower(n, alpha))))


def check_can_certify(n: int, alpha: float) -> None:
    """Refuse (n, alpha) pairs for which even unanimous samples certify nothing."""
    best = best_possible_p_lower(n, alpha)
    if best <= 0.5:
        need = math.floor(math.log(alpha) / math.log(0.5)) + 1
        raise ValueError(f"n={n} can never certify at alpha={alpha}: even if all samples "
                         f"agree the lower bound on pA is {best:.4f} <= 1/2; use n >= {need}")


class _Tally:
    """Counts and forward-pass seconds per stream slot (``per`` consecutive slots are one
    record's stages) as batches come in; which records have all their copies counted."""

    def __init__(self, expected: np.ndarray, per: int, num_classes: int):
        self.expected, self.per = expected, per
        self.total = np.zeros((expected.size, num_classes), dtype=np.int64)
        self.seen = np.zeros(expected.size, dtype=np.int64)
        self.spent = np.zeros(expected.size)

    def add(self, counted: tuple[np.ndarray, np.ndarray], owner: np.ndarray) -> list[int]:
        """Absorb one batch's counts; the records it completed, in order."""
        counts, spent = counted
        self.total += counts
        self.spent += spent
        self.seen += np.bincount(owner, minlength=self.seen.size)
        # a record completes in exactly one batch: the one that brings its last copy
        return [i for i in np.unique(owner // self.per).tolist()
                if np.array_equal(self.seen[i * self.per: (i + 1) * self.per],
                                  self.expected[i * self.per: (i + 1) * self.per])]

    def counts(self, i: int) -> np.ndarray:
        return self.total[i * self.per: (i + 1) * self.per].copy()

    def seconds(self, i: int) -> float:
        return float(self.spent[i * self.per: (i + 1) * self.per].sum())


def _in_order(size: int, finished: Iterator[tuple[int, Certification]]) -> list:
    out: list = [None] * size
    for i, result in finished:
        out[i] = result
    return out


def concat_batches(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Model batches (same keys) stacked row-wise, in order; one part is returned as is."""
    if len(parts) == 1:
        return parts[0]
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _record_on(record: Record, device: torch.device) -> Record:
    """The record's tensors on ``device`` (the record itself on a CPU)."""
    if device.type == "cpu":
        return record
    out = {}
    for name, block in record.items():
        if isinstance(block, TokenBlock):
            out[name] = replace(block, **{
                f: getattr(block, f).to(device) for f in ("ids", "noisable", "attention")
                if getattr(block, f) is not None})
        else:
            out[name] = block.to(device)
    return out


def shape_key(x: Record) -> tuple:
    """Block names and shapes: records with equal keys can share one forward batch."""
    return tuple((name, tuple((b.ids if isinstance(b, TokenBlock) else b).shape))
                 for name, b in sorted(x.items()))


def _chunk_span(start: int, num: int, size: int = NOISE_CHUNK):
    """(chunk, begin, end) pieces covering copies ``start .. start + num - 1`` in chunks of
    ``size`` copies."""
    position, stop = start, start + num
    while position < stop:
        chunk = position // size
        begin = position - chunk * size
        end = min(size, stop - chunk * size)
        yield chunk, begin, end
        position = chunk * size + end
def _prefetched(iterator):
    """Iterate in a background thread, one item ahead (torch ops release the GIL, so the
    next item's noise is drawn while the caller's forward pass runs)."""
    end = object()
    with ThreadPoolExecutor(max_workers=1) as pool:
        ahead = pool.submit(next, iterator, end)
        while (item := ahead.result()) is not end:
            ahead = pool.submit(next, iterator, end)
            yield item


def _rebatch(streams, batch_size: int):
    """Concatenate chunks from several records into model batches of ``batch_size``,
    yielding (batch, owner) with ``owner[j]`` the record index of row j."""
    pending, owners, size = [], [], 0
    for index, chunks in streams:
        for chunk in chunks:
            rows = next(iter(chunk.values())).shape[0]
            pending.append(chunk)
            owners.append(np.full(rows, index))
            size += rows
            while size >= batch_size:
                yield from _flush(pending, owners, batch_size)
                size -= batch_size
    if size:
        yield from _flush(pending, owners, size)


def _flush(pending: list, owners: list, take: int):
    merged = concat_batches(pending)
    owner = np.concatenate(owners)
    total = owner.size
    if take == total:
        pending.clear()
        owners.clear()
        yield merged, owner
        return
    rest = {k: v[take:] for k, v in merged.items()}
    pending[:] = [rest]
    owners[:] = [owner[take:]]
    yield {k: v[:take] for k, v in merged.items()}, owner[:take]


def input_seed(run_seed: int, input_id: str) -> int:
    """The noise seed of one input of a run: derived from the run seed and the input's id
    (never its position), so results do not depend on order, batching or backend."""
    digest = hashlib.blake2b(f"{run_seed}:{input_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF


def _chunk_seed(seed: int, stage: int, chunk: int) -> int:
    digest = hashlib.blake2b(f"{seed}/{stage}/{chunk}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF
