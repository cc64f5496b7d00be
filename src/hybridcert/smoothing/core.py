"""Monte Carlo prediction and certification of a smoothed classifier (THEORY.md section 4).

``certify`` draws ``n0`` noisy copies to pick the top class A, ``n`` fresh copies to bound
its probability from below (one-sided Clopper–Pearson), and abstains unless the joint
certificate holds at no perturbation; otherwise it returns A and the certified frontier.
With probability at least ``1 - alpha`` over the sampling the returned region is correct.
``predict`` abstains unless a two-sided binomial test between the two most frequent
classes rejects at ``alpha``.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.stats import beta, binomtest

from hybridcert.certificate import certified_frontier
from hybridcert.noise import Gaussian, Mask, Noise
from hybridcert.smoothing.base import BaseClassifier
from hybridcert.smoothing.inputs import Record, TokenBlock, Vocabulary

ABSTAIN = -1
#: Noise is drawn in chunks of this many copies, each from its own seeded generator, so
#: that results do not depend on the model batch size.
NOISE_CHUNK = 256


@dataclass
class Certification:
    """Result of :meth:`SmoothedClassifier.certify` for one record."""

    label: int                      # the class, or ABSTAIN (-1)
    counts: np.ndarray              # estimation counts per class (length num_classes)
    p_lower: float                  # lower confidence bound on pA
    p_upper: float | None           # upper bound on pB (None: pB = 1 - pA)
    max_tokens: int                 # r_max, -1 when abstaining
    l2_radius: list[float] = field(default_factory=list)  # eps*(r), r = 0..max_tokens
    time_s: float = 0.0

    @property
    def radius(self) -> float:
        """L2 radius at zero token changes (0 when abstaining)."""
        return self.l2_radius[0] if self.l2_radius else 0.0

    def frontier(self) -> list[dict]:
        return [{"tokens": r, "l2_radius": eps} for r, eps in enumerate(self.l2_radius)]


@dataclass
class Prediction:
    label: int
    counts: np.ndarray
    p_value: float


class SmoothedClassifier:
    """A base classifier smoothed by independent noise on each block of a record.

    Parameters
    ----------
    base : torch.nn.Module or callable
        See :class:`~hybridcert.smoothing.base.BaseClassifier`.
    noises : dict
        Block name -> noise.  Continuous blocks take :class:`~hybridcert.Gaussian` (all
        share one L2 budget, certified with the smallest sigma); at most one token block
        takes :class:`~hybridcert.Substitution` or :class:`~hybridcert.Mask`.  Blocks without
        an entry are passed through unchanged.
    num_classes : int
    vocabularies : dict, optional
        Token block name -> :class:`Vocabulary`; a Substitution's ``vocab_size`` must equal
        the vocabulary size.
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

    def __init__(self, base, noises: dict[str, Noise], num_classes: int,
                 vocabularies: dict[str, Vocabulary] | None = None, batch_size: int = 256,
                 device: str = "cpu", prefetch: bool = True, parallel_batches: int = 1):
        if num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.base = base if isinstance(base, BaseClassifier) else BaseClassifier(base, device)
        self.noises = dict(noises)
        self.num_classes = int(num_classes)
        self.vocabularies = dict(vocabularies or {})
        self.batch_size = int(batch_size)
        self.prefetch = bool(prefetch)
        if not isinstance(parallel_batches, numbers.Integral) or parallel_batches < 1:
            raise ValueError(f"parallel_batches must be an integer >= 1, got "
                             f"{parallel_batches!r}")
        self.parallel_batches = int(parallel_batches)
        discrete = [k for k, v in self.noises.items() if v.kind == "discrete"]
        if len(discrete) > 1:
            raise ValueError(f"at most one noised token block is supported, got {discrete}")
        for name in discrete:
            if name not in self.vocabularies:
                raise ValueError(f"token block {name!r} is noised but has no vocabulary")
            size = getattr(self.noises[name], "vocab_size", None)
            if size is not None and size != self.vocabularies[name].size:
                raise ValueError(f"noise on {name!r} has vocab_size {size} but its vocabulary "
                                 f"holds {self.vocabularies[name].size} noisable ids")
            if isinstance(self.noises[name], Mask) and self.vocabularies[name].mask_id is None:
                raise ValueError(f"Mask noise on {name!r} needs a Vocabulary with mask_id")
        self.token_block = discrete[0] if discrete else None
        sigmas = [v.sigma for v in self.noises.values() if isinstance(v, Gaussian)]
        self.sigma = min(sigmas) if sigmas else None

    # -- the algorithm -------------------------------------------------------------------
    def certify(self, x: Record, n0: int, n: int, alpha: float, seed: int = 0,
                p_upper: str = "complement", max_tokens: int | None = None) -> Certification:
        """Certify one record: class (or ABSTAIN) and frontier, valid w.p. >= 1 - alpha.

        ``p_upper``: "complement" uses pB = 1 - pA; "bonferroni" bounds pA and pB (the
        runner-up of the selection sample) separately at alpha / 2 each.
        """
        return self.certify_many([x], n0, n, alpha, [seed], p_upper, max_tokens)[0]

    def _certificate(self, selection, counts, n, alpha, p_upper, max_tokens, elapsed):
        level = alpha / 2 if p_upper == "bonferroni" else alpha
        top_two = np.argsort(-selection, kind="stable")[:2]
        c_a, c_b = int(top_two[0]), int(top_two[1])
        p_a = lower_confidence_bound(int(counts[c_a]), n, level)
        p_b = upper_confidence_bound(int(counts[c_b]), n, level) if level != alpha else None
        frontier = certified_frontier(p_a, sigma=self.sigma, discrete=self._discrete_noise(),
                                      p_upper=p_b, max_tokens=max_tokens)
        r_max = int(frontier.max_tokens[0])
        radii = [row["l2_radius"] for row in frontier.rows(0)]
        label = c_a if r_max >= 0 else ABSTAIN
        return Certification(label, np.asarray(counts), p_a, p_b, r_max, radii, elapsed)

    def predict(self, x: Record, n: int, alpha: float, seed: int = 0) -> Prediction:
        """Top class, or ABSTAIN unless a two-sided binomial test rejects at ``alpha``."""
        _check_counts(n=n, alpha=alpha)
        if 2 * 0.5**n > alpha:
            raise ValueError(f"n={n} can never predict at alpha={alpha}: the smallest "
                             f"two-sided p-value is 2 * 0.5**n = {2 * 0.5**n:.3g}; use "
                             f"n >= {math.ceil(math.log2(2 / alpha))}")
        counts = self.sample_counts(self.validate(x), n, seed, stage=2)
        top = np.argsort(-counts, kind="stable")[:2]
        n_a, n_b = int(counts[top[0]]), int(counts[top[1]])
        p_value = binomtest(n_a, n_a + n_b, 0.5).pvalue if n_a + n_b > 0 else 1.0
        label = int(top[0]) if p_value <= alpha else ABSTAIN
        return Prediction(label, counts, float(p_value))

    def certify_many(self, records: list[Record], n0: int, n: int, alpha: float,
                     seeds: list[int], p_upper: str = "complement",
                     max_tokens: int | None = None) -> list[Certification]:
        """:meth:`certify` for several records, sharing forward passes between records of
        the same shapes.  Each result equals ``certify(records[i], ..., seed=seeds[i])``."""
        _check_counts(n0=n0, n=n, alpha=alpha)
        if p_upper not in ("complement", "bonferroni"):
            raise ValueError(f"p_upper must be 'complement' or 'bonferroni', got {p_upper!r}")
        if len(seeds) != len(records):
            raise ValueError(f"seeds must have one entry per record ({len(records)}), "
                             f"got {len(seeds)}")
        level = alpha / 2 if p_upper == "bonferroni" else alpha
        check_can_certify(n, level)
        start = time.perf_counter()
        validated = [self.validate(x) for x in records]
        selection = self.sample_counts_many(validated, n0, seeds, stage=0)
        counts = self.sample_counts_many(validated, n, seeds, stage=1)
        elapsed = (time.perf_counter() - start) / max(1, len(records))
        return [self._certificate(selection[i], counts[i], n, alpha, p_upper, max_tokens,
                                  elapsed) for i in range(len(records))]

    # -- sampling ------------------------------------------------------------------------
    def sample_counts(self, x: Record, num: int, seed: int, stage: int) -> np.ndarray:
        """Class counts of the base classifier on ``num`` noisy copies of ``x``."""
        return self.sample_counts_many([x], num, [seed], stage)[0]

    def sample_counts_many(self, records: list[Record], num: int, seeds: list[int],
                           stage: int) -> np.ndarray:
        """Counts ``(len(records), num_classes)``; records whose blocks have the same
        shapes share batches, and each record's noise comes from its own seed."""
        out = np.zeros((len(records), self.num_classes), dtype=np.int64)
        groups: dict[tuple, list[int]] = {}
        for i, x in enumerate(records):
            groups.setdefault(_shape_key(x), []).append(i)
        for members in groups.values():
            streams = ((i, self._noise_chunks(records[i], num, seeds[i], stage))
                       for i in members)
            batches = _rebatch(streams, self.batch_size)
            if self.parallel_batches > 1:
                out += self._count_in_threads(batches, len(records))
                continue
            for batch, owner in _prefetched(batches) if self.prefetch else batches:
                out += self._count(batch, owner, len(records))
        return out

    def _count(self, batch: dict[str, torch.Tensor], owner: np.ndarray,
               records: int) -> np.ndarray:
        """Class counts ``(records, num_classes)`` of one batch whose row j is a noisy copy
        of record ``owner[j]``."""
        labels = self.base.labels(batch).to(self.base.device)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"the base classifier returned a label outside "
                             f"[0, {self.num_classes - 1}]")
        local = torch.as_tensor(owner, device=labels.device)
        flat = torch.bincount(local * self.num_classes + labels,
                              minlength=records * self.num_classes)
        return flat.view(records, self.num_classes).cpu().numpy()

    def _count_in_threads(self, batches, records: int) -> np.ndarray:
        """Count over ``batches`` with ``parallel_batches`` threads: each takes the next
        batch (drawn under a lock, so in the serial order) and runs the model on it."""
        lock, stop = threading.Lock(), threading.Event()

        def work() -> np.ndarray:
            torch.set_num_threads(1)      # per thread: the caller's setting is untouched
            total = np.zeros((records, self.num_classes), dtype=np.int64)
            try:
                while not stop.is_set():
                    with lock:
                        item = next(batches, None)
                    if item is None:
                        break
                    total += self._count(*item, records)
            except BaseException:
                stop.set()
                raise
            return total

        with ThreadPoolExecutor(max_workers=self.parallel_batches) as pool:
            futures = [pool.submit(work) for _ in range(self.parallel_batches)]
            try:
                return sum(future.result() for future in futures)
            finally:
                stop.set()                # e.g. Ctrl-C here: the workers stop, not finish

    def _noise_chunks(self, x: Record, num: int, seed: int, stage: int):
        for chunk in range(math.ceil(num / NOISE_CHUNK)):
            copies = min(NOISE_CHUNK, num - chunk * NOISE_CHUNK)
            yield self.noisy_copies(x, copies, _chunk_seed(seed, stage, chunk))

    def noisy_copies(self, x: Record, copies: int, seed: int) -> dict[str, torch.Tensor]:
        """``copies`` noisy versions of a validated record, as a model batch."""
        generator = torch.Generator(device=self.base.device).manual_seed(seed)
        batch, noisable = {}, {}
        for name, block in x.items():
            if isinstance(block, TokenBlock):
                batch[name] = block.ids.to(self.base.device).expand(copies, -1)
                noisable[name] = block.noisable.to(self.base.device).expand(copies, -1)
            else:
                batch[name] = block.to(self.base.device).unsqueeze(0).expand(copies, *block.shape)
        return noise_batch(batch, self.noises, self.vocabularies, generator, noisable)

    # -- validation ----------------------------------------------------------------------
    def _discrete_noise(self):
        return self.noises[self.token_block] if self.token_block else None

    def validate(self, x: Record) -> Record:
        """Check a record and fill in each token block's noisable mask."""
        if not isinstance(x, dict) or not x:
            raise ValueError("a record must be a non-empty dict of block name -> data")
        missing = [name for name in self.noises if name not in x]
        if missing:
            raise ValueError(f"record lacks the noised block(s) {missing}")
        out: Record = {}
        for name, block in x.items():
            if isinstance(block, TokenBlock):
                out[name] = self._validate_tokens(name, block)
            else:
                out[name] = _validate_continuous(name, block)
        return out

    def _validate_tokens(self, name: str, block: TokenBlock) -> TokenBlock:
        ids = torch.as_tensor(block.ids)
        if ids.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f"token block {name!r} must hold integer ids, got {ids.dtype}")
        if ids.ndim != 1:
            raise ValueError(f"token block {name!r} must be 1-D (one sequence), got shape "
                             f"{tuple(ids.shape)}")
        if ids.numel() == 0:
            raise ValueError(f"token block {name!r} is empty: a text needs at least one token")
        ids = ids.long()
        if int(ids.min()) < 0:
            raise ValueError(f"token block {name!r} holds negative id {int(ids.min())}")
        vocab = self.vocabularies.get(name)
        noisable = block.noisable
        if vocab is not None:
            index = vocab.to_indices(ids)
            if noisable is None:
                noisable = index >= 0
            noisable = torch.as_tensor(noisable, dtype=torch.bool)
            if noisable.shape != ids.shape:
                raise ValueError(f"noisable mask of {name!r} has shape {tuple(noisable.shape)}, "
                                 f"ids have {tuple(ids.shape)}")
            outside = noisable & (index < 0)
            if outside.any():
                bad = int(ids[outside][0])
                raise ValueError(f"token block {name!r}: id {bad} is marked noisable but is "
                                 f"not among the vocabulary's {vocab.size} noisable ids")
        else:
            noisable = torch.zeros_like(ids, dtype=torch.bool)
        return TokenBlock(ids, noisable)


def noise_batch(batch: dict[str, torch.Tensor], noises: dict[str, Noise],
                vocabularies: dict[str, Vocabulary], generator: torch.Generator,
                noisable: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Apply each block's noise to a model batch — the one code path shared by Monte Carlo
    certification and noise-augmented training.

    Token blocks (``(B, L)`` ids) are noised at ``noisable[name]`` positions (default: ids in
    the block's vocabulary) and get a ``name + "_attention"`` entry.
    """
    out = {}
    for name, tensor in batch.items():
        noise = noises.get(name)
        if name in vocabularies:
            vocab = vocabularies[name]
            ids = tensor
            if noise is not None:
                index = vocab.to_indices(ids)
                where = noisable[name] if noisable and name in noisable else index >= 0
                ids = vocab.to_ids(noise.sample(index, generator, where=where), ids, where)
            out[name] = ids.contiguous()
            out[name + "_attention"] = torch.ones_like(ids)
        elif noise is not None:
            out[name] = noise.sample(tensor, generator)
        else:
            out[name] = tensor.contiguous()
    return out


def _validate_continuous(name: str, block) -> torch.Tensor:
    if not isinstance(block, (torch.Tensor, np.ndarray)):
        raise ValueError(f"block {name!r} must be a tensor or array, got {type(block).__name__}")
    tensor = torch.as_tensor(block)
    if not tensor.is_floating_point():
        raise ValueError(f"continuous block {name!r} must be floating point, got {tensor.dtype}")
    if tensor.ndim == 0 or tensor.numel() == 0:
        raise ValueError(f"continuous block {name!r} is empty")
    if not torch.isfinite(tensor).all():
        raise ValueError(f"continuous block {name!r} holds NaN or infinite values")
    return tensor


def _check_counts(**values) -> None:
    for key in ("n0", "n"):
        if key in values:
            v = values[key]
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{key} must be an integer >= 1, got {v!r}")
    a = values["alpha"]
    if not (isinstance(a, (int, float)) and 0 < a < 1):
        raise ValueError(f"alpha must lie in (0, 1), got {a!r}")


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


def _shape_key(x: Record) -> tuple:
    return tuple((name, tuple((b.ids if isinstance(b, TokenBlock) else b).shape))
                 for name, b in sorted(x.items()))


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
    merged = pending[0] if len(pending) == 1 else \
        {k: torch.cat([p[k] for p in pending]) for k in pending[0]}
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


def _chunk_seed(seed: int, stage: int, chunk: int) -> int:
    digest = hashlib.blake2b(f"{seed}/{stage}/{chunk}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF
