"""The one owner of a record's blocks: which exist, how each is noised, what a perturbation
budget is, and what region a confidence bound certifies.

A record is a dict ``{block name: data}``: continuous blocks hold real tensors (an image in
[0, 1], audio, an embedding), token blocks hold a :class:`TokenBlock`.  :class:`HybridNoise`
is built once from the block specs (:class:`Continuous`, :class:`Tokens`) and everything else
— Monte Carlo certification, the sequential modes, training, attacks, the command line,
reports and the service — asks it, and nothing else, about blocks.

Budgets are per block: an L2 radius ``eps_j`` for each continuous block, a number ``r_j`` of
changed positions for each token block.  Independent blocks multiply their likelihood
ratios; the Gaussian blocks enter only through ``gamma = sqrt(sum_j (eps_j / sigma_j)^2)``,
so a certified region is a set of token budgets ``(r_1, ..., r_k)`` each with the largest
certified ``gamma*``: every split of the continuous budgets with
``sum_j (eps_j / sigma_j)^2 <= gamma*^2`` is certified at those token budgets.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import product as grid_points

import numpy as np
import torch

from hybridcert._validation import check_count, check_nonnegative
from hybridcert.blocks.threats import Anywhere, Append, Threat
from hybridcert.blocks.tokens import TokenBlock, Vocabulary
from hybridcert.noise import Gaussian, LikelihoodRatio, Mask, Noise, Substitution

Record = dict[str, "torch.Tensor | TokenBlock"]


@dataclass(frozen=True)
class Continuous:
    """A real-valued block (image pixels in [0, 1], audio samples, an embedding).

    Parameters
    ----------
    name : str
        Key of the block in a record and in the model's batch.
    noise : Gaussian or None
        Its smoothing noise; None: passed to the model unchanged (and never attacked).
    """

    name: str
    noise: Gaussian | None = None

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.noise is not None and getattr(self.noise, "kind", None) != "continuous":
            raise ValueError(f"continuous block {self.name!r} takes Gaussian noise, got "
                             f"{type(self.noise).__name__}")

    def describe(self) -> dict:
        return {"name": self.name, "kind": "continuous",
                "noise": None if self.noise is None else self.noise.describe()}


@dataclass(frozen=True)
class Tokens:
    """A token block (a caption, a prompt, text read off an image).

    Parameters
    ----------
    name : str
        Key of the ids in a record and in the model's batch (``name + "_attention"`` holds
        the attention mask).
    noise : Substitution or Mask or None
        Its smoothing noise; None: passed unchanged (and never attacked).
    vocabulary : Vocabulary
        The ids the noise draws from (the model's noisable ids; ``V`` = its size).
    threat : Anywhere, Suffix or Append
        Which positions are noised and attackable (default: every content position).
    max_length : int, optional
        The model's maximum length (checked when slots are appended).
    """

    name: str
    noise: Substitution | Mask | None = None
    vocabulary: Vocabulary | None = None
    threat: Threat = field(default_factory=Anywhere)
    max_length: int | None = None

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.noise is None:
            return
        if getattr(self.noise, "kind", None) != "discrete":
            raise ValueError(f"token block {self.name!r} takes Substitution or Mask noise, got "
                             f"{type(self.noise).__name__}")
        if self.vocabulary is None:
            raise ValueError(f"token block {self.name!r} is noised but has no vocabulary")
        self.noise.check_block(self.name, self.vocabulary)

    def describe(self) -> dict:
        noise = None if self.noise is None else self.noise.describe()
        return {"name": self.name, "kind": "tokens", "noise": noise, **self.threat.describe()}


Block = Continuous | Tokens


class HybridNoise:
    """Independent noise on every block of a record, and the certificate of the joint change.

    Parameters
    ----------
    blocks : sequence of Continuous and Tokens
        One spec per block; names must be unique.  Records may hold further blocks, which are
        passed to the model unchanged.
    """

    def __init__(self, blocks: Sequence[Block]):
        blocks = tuple(blocks)
        for block in blocks:
            if not isinstance(block, (Continuous, Tokens)):
                raise ValueError(f"blocks must be Continuous or Tokens specs, got "
                                 f"{type(block).__name__}")
        names = [b.name for b in blocks]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"block names must be unique, got {duplicated} more than once")
        self.blocks = blocks
        self.by_name = {b.name: b for b in blocks}
        self.continuous = tuple(b for b in blocks if isinstance(b, Continuous))
        self.tokens = tuple(b for b in blocks if isinstance(b, Tokens))
        #: The blocks an adversary may change: the noised ones.
        self.noised_continuous = tuple(b for b in self.continuous if b.noise is not None)
        self.noised_tokens = tuple(b for b in self.tokens if b.noise is not None)
        self._thresholds: dict = {}

    @classmethod
    def from_noises(cls, noises: Mapping[str, Noise],
                    vocabularies: Mapping[str, Vocabulary] | None = None) -> HybridNoise:
        """From ``{name: noise}`` and ``{token block name: Vocabulary}`` (the short form):
        Gaussian noises make continuous blocks, discrete ones token blocks; a vocabulary
        without a noise makes an un-noised token block."""
        vocabularies = dict(vocabularies or {})
        blocks: list[Block] = []
        for name, noise in noises.items():
            if noise.kind == "continuous":
                blocks.append(Continuous(name, noise))
            else:
                blocks.append(Tokens(name, noise, vocabularies.get(name)))
        blocks += [Tokens(name, None, vocab) for name, vocab in vocabularies.items()
                   if name not in noises]
        return cls(blocks)

    def describe(self) -> list[dict]:
        """JSON-ready description (stored with every run)."""
        return [b.describe() for b in self.blocks]

    # -- budgets and certificates ------------------------------------------------------------
    def budget(self, budget: Mapping[str, float] | None = None, **sizes) -> dict[str, float]:
        """A validated perturbation budget ``{block: size}`` (L2 for continuous blocks, a count
        for token blocks); blocks not named get 0.  A budget on a block that is not noised must
        be 0 (nothing certifies a change there)."""
        merged = dict(budget or {}, **sizes)
        unknown = sorted(set(merged) - set(self.by_name))
        if unknown:
            raise ValueError(f"budget names unknown block(s) {unknown}; blocks are "
                             f"{sorted(self.by_name)}")
        out: dict[str, float] = {}
        for block in self.blocks:
            value = merged.get(block.name, 0)
            if isinstance(block, Continuous):
                value = check_nonnegative(f"L2 budget of {block.name!r}", value)
            else:
                value = check_count(f"token budget of {block.name!r}", value)
            if value and block.noise is None:
                raise ValueError(f"block {block.name!r} is not noised, so a change of it "
                                 f"cannot be certified (its budget must be 0)")
            out[block.name] = value
        return out

    def pair_budget(self, eps: float, r: int) -> dict[str, float]:
        """The budget of the common two-block case: L2 ``eps`` on the noised continuous block
        and ``r`` changed tokens on the noised token block (:func:`pair_budget`)."""
        return self.budget(pair_budget(eps, r, [b.name for b in self.noised_continuous],
                                       [b.name for b in self.noised_tokens]))

    def gamma(self, budget: Mapping[str, float]) -> float:
        """Joint Gaussian shift in standard deviations, ``sqrt(sum_j (eps_j / sigma_j)^2)``."""
        budget = self.budget(budget)
        return math.hypot(*[b.noise.gamma(budget[b.name]) for b in self.noised_continuous]) \
            if self.noised_continuous else 0.0

    def ratio(self, budget: Mapping[str, float]) -> LikelihoodRatio:
        """Joint likelihood ratio of the worst change within ``budget``."""
        budget = self.budget(budget)
        ratio = LikelihoodRatio.identity(self.gamma(budget))
        for block in self.noised_tokens:
            if budget[block.name]:
                ratio = ratio * block.noise.likelihood_ratio(int(budget[block.name]))
        return ratio

    def threshold(self, budget: Mapping[str, float], rule=None) -> float:
        """``p*`` of a region: the bound a confidence bound must clear to certify it (see
        :func:`hybridcert.certificate.threshold_probability`)."""
        from hybridcert.certificate import MAJORITY, threshold_probability

        budget = self.budget(budget)
        key = (tuple(sorted(budget.items())), rule or MAJORITY)
        if key not in self._thresholds:           # a bisection: worth remembering
            self._thresholds[key] = threshold_probability(self.ratio(budget), rule or MAJORITY)
        return self._thresholds[key]

    def is_certified(self, p, budget: Mapping[str, float], *, p_upper=None, rule=None):
        """Whether bound(s) ``p`` certify the region ``budget``."""
        from hybridcert.certificate import MAJORITY, is_certified

        return is_certified(p, self.ratio(budget), p_upper=p_upper, rule=rule or MAJORITY)

    def frontier(self, p, *, p_upper=None, rule=None, max_tokens: int | Mapping | None = 16,
                 noised_positions: Sequence[Mapping[str, int]] | None = None,
                 batch_invariant: bool = False) -> list[CertifiedRegion]:
        """Certified regions of a batch of bounds.

        Parameters
        ----------
        p : float or array_like of shape (n,)
            Confidence bounds: the lower bound on the top class (majority and flag rules) or
            the upper bound on the flagged class (benign rule).
        p_upper : array_like, optional
            Majority rule with more than two classes: upper bound on every other class.
        rule : hybridcert.certificate.Rule, optional
            What must hold (default: majority).
        max_tokens : int or {token block: int}
            Largest token budget explored per token block.
        noised_positions : list of {token block: int}, optional
            Per input, how many positions each token block noises: budgets beyond it are not
            reported (an adversary cannot change more positions than the threat allows).
        batch_invariant : bool
            Solve each input on its own, so that its region is bit-identical whatever else is
            in the batch (vectorised linear algebra may round the last digit differently for
            different batch sizes; both are sound).  Runs use it, so that every backend gives
            the same rows.
        """
        if batch_invariant:
            p = np.atleast_1d(np.asarray(p, dtype=float))
            upper = None if p_upper is None else \
                np.broadcast_to(np.atleast_1d(np.asarray(p_upper, dtype=float)), p.shape)
            return [self.frontier(p[i:i + 1], p_upper=None if upper is None else upper[i:i + 1],
                                  rule=rule, max_tokens=max_tokens,
                                  noised_positions=None if noised_positions is None
                                  else noised_positions[i:i + 1])[0]
                    for i in range(p.size)]
        from hybridcert.certificate import MAJORITY, frontier_grid

        p = np.atleast_1d(np.asarray(p, dtype=float))
        caps = self._caps(max_tokens)
        certified, gamma = frontier_grid(p, [b.noise for b in self.noised_tokens], caps,
                                         p_upper=p_upper, rule=rule or MAJORITY)
        certified = certified.reshape((p.size,) + tuple(c + 1 for c in caps))
        gamma = gamma.reshape(certified.shape)
        gamma = np.where(certified, gamma, np.nan)
        if not self.noised_continuous:
            gamma = np.where(certified, 0.0, np.nan)
        regions = []
        for i in range(p.size):
            g = gamma[i]
            if noised_positions is not None and self.noised_tokens:
                # No more positions can change than the threat noises.
                g = g[tuple(slice(0, int(noised_positions[i].get(b.name, 0)) + 1)
                            for b in self.noised_tokens)]
            regions.append(CertifiedRegion.of(self, g.copy()))
        return regions

    def _caps(self, max_tokens) -> list[int]:
        if max_tokens is None or isinstance(max_tokens, (int, np.integer)):
            cap = 16 if max_tokens is None else check_count("max_tokens", max_tokens)
            return [cap] * len(self.noised_tokens)
        unknown = sorted(set(max_tokens) - {b.name for b in self.noised_tokens})
        if unknown:
            raise ValueError(f"max_tokens names {unknown}, which are not noised token blocks")
        return [check_count(f"max_tokens of {b.name!r}", max_tokens.get(b.name, 16))
                for b in self.noised_tokens]

    # -- records -----------------------------------------------------------------------------
    def prepare(self, record: Mapping) -> Record:
        """Check a record and fix, for each token block, the positions the noise touches
        (its threat model: appended slots are inserted here)."""
        if not isinstance(record, Mapping) or not record:
            raise ValueError("a record must be a non-empty dict of block name -> data")
        missing = [b.name for b in self.blocks if b.noise is not None and b.name not in record]
        if missing:
            raise ValueError(f"record lacks the noised block(s) {missing}")
        return {name: self.prepare_block(name, data) for name, data in record.items()}

    def prepare_block(self, name: str, data):
        """:meth:`prepare` for one block of a record (e.g. to check every row's text before a
        run without reading its images)."""
        block = self.by_name.get(name)
        if isinstance(data, TokenBlock):
            if block is not None and not isinstance(block, Tokens):
                raise ValueError(f"block {name!r} is continuous but the record holds tokens")
            return _prepare_tokens(name, data, block)
        if isinstance(block, Tokens):
            raise ValueError(f"token block {name!r} must be a TokenBlock, got "
                             f"{type(data).__name__}")
        return _check_continuous(name, data)

    def noised_positions(self, record: Record) -> dict[str, int]:
        """How many positions of each noised token block the (prepared) record noises."""
        return {b.name: int(record[b.name].noisable.sum()) for b in self.noised_tokens}

    def sample(self, record: Record, copies: int, generator: torch.Generator,
               device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """``copies`` noisy versions of a prepared record, as a model batch."""
        batch, noisable, attention = {}, {}, {}
        for name, data in record.items():
            if isinstance(data, TokenBlock):
                batch[name] = data.ids.to(device).expand(copies, -1)
                noisable[name] = data.noisable.to(device).expand(copies, -1)
                if data.attention is not None:
                    attention[name] = data.attention.to(device).expand(copies, -1)
            else:
                batch[name] = data.to(device).unsqueeze(0).expand(copies, *data.shape)
        return self.noise_batch(batch, generator, noisable, attention)

    def sampler(self, record: Record, device: torch.device | str = "cpu") -> RecordSampler:
        """Noisy copies of one prepared record drawn again and again (the chunks of a
        sequential stream): :meth:`sample` with the work that does not depend on the draw
        done once (:class:`RecordSampler`)."""
        return RecordSampler(self, record, device)

    def noise_batch(self, batch: Mapping[str, torch.Tensor], generator: torch.Generator,
                    noisable: Mapping[str, torch.Tensor] | None = None,
                    attention: Mapping[str, torch.Tensor] | None = None
                    ) -> dict[str, torch.Tensor]:
        """Apply each block's noise to a model batch — the one code path shared by Monte Carlo
        certification, noise-augmented training and attacks.

        Token blocks (``(B, L)`` ids) are noised at ``noisable[name]`` (default: ids in the
        vocabulary that the model attends to) and get a ``name + "_attention"`` entry (given,
        or taken from the batch, or all ones).  Blocks are noised in the batch's key order, so
        the same generator state gives the same noise.
        """
        noisable, attention = dict(noisable or {}), dict(attention or {})
        out = {}
        for name, tensor in batch.items():
            if name.endswith("_attention") and name[: -len("_attention")] in batch:
                continue
            block = self.by_name.get(name)
            if isinstance(block, Tokens):
                ids = tensor
                mask = attention.get(name, batch.get(name + "_attention"))
                if block.noise is not None:
                    index = block.vocabulary.to_indices(ids)
                    where = noisable.get(name)
                    if where is None:
                        where = index >= 0 if mask is None else (index >= 0) & (mask != 0)
                    ids = block.vocabulary.to_ids(block.noise.sample(index, generator,
                                                                     where=where), ids, where)
                out[name] = ids.contiguous()
                out[name + "_attention"] = torch.ones_like(ids) if mask is None \
                    else mask.contiguous()
            elif block is not None and block.noise is not None:
                out[name] = block.noise.sample(tensor, generator)
            else:
                out[name] = tensor.contiguous()
        return out


class RecordSampler:
    """``noise.sample(record, copies, generator, device)`` for one prepared record, drawn
    again and again: each token block's noise indices (:meth:`Vocabulary.to_indices`) and
    the record's tensors on ``device`` are worked out once, not per call.  A call makes the
    same draws, in the same order, from the generator as :meth:`HybridNoise.sample` and
    returns the same batch (``tests/blocks/test_sampler.py``).  Every noise is drawn through
    its own ``sample``, as there.  A record this class does not know how to prepare (a block
    whose name ends in ``_attention`` beside its token block) is drawn by ``sample`` itself.
    """

    def __init__(self, noise: HybridNoise, record: Record, device: torch.device | str = "cpu"):
        self.noise, self.record, self.device = noise, record, device
        self._steps: list[tuple] | None = []
        for name, data in record.items():
            block = noise.by_name.get(name)
            if name.endswith("_attention") and name[: -len("_attention")] in record:
                self._steps = None              # sample() has a rule for these: use it
                return
            if not isinstance(data, TokenBlock):
                x = data.to(device)
                if isinstance(block, Tokens):
                    self._steps = None
                    return
                noised = block is not None and block.noise is not None
                self._steps.append(("continuous" if noised else "tensor", name, x, block))
                continue
            ids = data.ids.to(device)
            if block is None:
                self._steps.append(("tensor", name, ids, None))
                continue
            if not isinstance(block, Tokens):
                self._steps = None
                return
            attention = None if data.attention is None else data.attention.to(device)
            if block.noise is None:
                self._steps.append(("ids", name, ids, attention))
                continue
            where = data.noisable.to(device)
            index = block.vocabulary.to_indices(ids)
            self._steps.append(("tokens", name, (ids, where, index, block), attention))

    def __call__(self, copies: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``copies`` noisy copies of the record, as a model batch."""
        if self._steps is None:
            return self.noise.sample(self.record, copies, generator, self.device)
        out = {}
        for kind, name, data, extra in self._steps:
            if kind == "continuous":
                out[name] = extra.noise.sample(data.unsqueeze(0).expand(copies, *data.shape),
                                               generator)
                continue
            if kind == "tensor":
                out[name] = data.unsqueeze(0).expand(copies, *data.shape).contiguous()
                continue
            if kind == "ids":
                ids = data.expand(copies, -1)
            else:
                ids, where, index, block = data
                ids, where = ids.expand(copies, -1), where.expand(copies, -1)
                ids = block.vocabulary.to_ids(
                    block.noise.sample(index.expand(copies, -1), generator, where=where),
                    ids, where)
            out[name] = ids.contiguous()
            out[name + "_attention"] = torch.ones_like(ids) if extra is None \
                else extra.expand(copies, -1).contiguous()
        return out


@dataclass(frozen=True)
class CertifiedRegion:
    """The certified region of one input.

    ``gamma[r_1, ..., r_k]`` (one axis per noised token block, in ``token_blocks`` order) is
    the largest certified joint Gaussian shift ``gamma*`` at those token budgets, NaN where not
    certified; 0-d with no noised token block.  Read it as: every change with ``r_j`` or fewer
    positions of token block j and L2 changes ``eps_i`` of the Gaussian-noised blocks with
    ``sum_i (eps_i / sigma_i)^2 <= gamma*^2`` is certified; blocks not named here are never
    changed.

    Attributes
    ----------
    token_blocks : tuple of str
        The noised token blocks (the axes of ``gamma``).
    sigmas : dict
        Gaussian-noised block -> sigma.
    gamma : ndarray
    """

    token_blocks: tuple[str, ...]
    sigmas: dict[str, float]
    gamma: np.ndarray

    @classmethod
    def of(cls, noise: HybridNoise, gamma: np.ndarray) -> CertifiedRegion:
        return cls(tuple(b.name for b in noise.noised_tokens),
                   {b.name: b.noise.sigma for b in noise.noised_continuous}, gamma)

    @classmethod
    def empty(cls, noise: HybridNoise) -> CertifiedRegion:
        return cls.of(noise, np.full((1,) * len(noise.noised_tokens), np.nan))

    @property
    def certified(self) -> bool:
        """Anything certified (the unperturbed input at least)."""
        return bool(not np.isnan(self.gamma.flat[0]))

    @property
    def max_tokens(self) -> int:
        """One noised token block: the largest certified ``r`` (-1: nothing certified); 0
        with no noised token block when certified."""
        if not self.certified:
            return -1
        if self.gamma.ndim == 0:
            return 0
        if self.gamma.ndim > 1:
            raise ValueError("max_tokens is defined for one token block; use "
                             "max_tokens_by_block")
        return int(np.flatnonzero(~np.isnan(self.gamma)).max())

    @property
    def max_tokens_by_block(self) -> dict[str, int]:
        """Per noised token block, the largest budget certified with all others at 0."""
        out = {}
        for axis, name in enumerate(self.token_blocks):
            index = [0] * self.gamma.ndim
            index[axis] = slice(None)
            line = ~np.isnan(self.gamma[tuple(index)])
            out[name] = int(np.flatnonzero(line).max()) if line.any() else -1
        return out

    def gamma_at(self, tokens: Mapping[str, int] | int = 0) -> float:
        """``gamma*`` at a token budget (NaN where not certified)."""
        if isinstance(tokens, Mapping):
            unknown = sorted(set(tokens) - set(self.token_blocks))
            if any(tokens[k] for k in unknown):
                return float("nan")
            index = tuple(int(tokens.get(name, 0)) for name in self.token_blocks)
        else:
            if len(self.token_blocks) > 1:
                raise ValueError("give the token budget per block")
            index = (int(tokens),) if self.token_blocks else ()
            if not self.token_blocks and tokens:
                return float("nan")
        if any(i < 0 or i >= n for i, n in zip(index, self.gamma.shape, strict=True)):
            return float("nan")
        return float(self.gamma[index] if index else self.gamma[()])

    def certifies(self, budget: Mapping[str, float]) -> bool:
        """Whether every change within ``budget`` (``{block: L2 or token count}``) is
        certified.  A non-zero budget on a block that is not noised is never certified."""
        tokens = {k: int(v) for k, v in budget.items() if k not in self.sigmas}
        g = self.gamma_at(tokens)
        if np.isnan(g):
            return False
        shift = math.hypot(*[float(budget.get(k, 0.0)) / s for k, s in self.sigmas.items()]) \
            if self.sigmas else 0.0
        return bool(shift <= g)

    def l2_radius(self, tokens: int | Mapping[str, int] = 0) -> float | dict[str, float]:
        """L2 radius certified at the given token budget: a number with one Gaussian-noised
        block, else ``{block: radius if the whole shift went to it}``; 0 where not certified
        (and 0 with no Gaussian-noised block)."""
        g = self.gamma_at(tokens)
        g = 0.0 if np.isnan(g) else float(g)
        radii = {name: sigma * g for name, sigma in self.sigmas.items()}
        if len(radii) == 1:
            return next(iter(radii.values()))
        return radii if radii else 0.0

    def frontier(self) -> list[float]:
        """One noised token block: ``[eps*(0), eps*(1), ..., eps*(r_max)]`` (radii in the
        Gaussian block's units)."""
        return [self.l2_radius(r) for r in range(self.max_tokens + 1)]

    def rows(self) -> list[dict]:
        """Every certified token budget: ``{"tokens": r (or {block: r}), "gamma": gamma*,
        "l2_radius": eps (or {block: eps})}`` — the JSON form used by exports and the store.
        An unbounded radius (every shift certified, e.g. a bound of exactly 1) is written as
        ``null``, as in ``hybridcert radius --json`` (budgets not certified have no row)."""
        rows = []
        for index in grid_points(*[range(n) for n in self.gamma.shape]):
            g = self.gamma[index] if index else self.gamma[()]
            if np.isnan(g):
                continue
            if len(self.token_blocks) == 1:
                tokens = int(index[0])
            else:
                tokens = dict(zip(self.token_blocks, (int(i) for i in index), strict=True)) \
                    if self.token_blocks else 0
            radii = {name: _json_number(sigma * float(g)) for name, sigma in self.sigmas.items()}
            rows.append({"tokens": tokens, "gamma": _json_number(float(g)),
                         "l2_radius": next(iter(radii.values())) if len(radii) == 1
                         else (radii or 0.0)})
        return rows

    def __str__(self) -> str:
        """The region as a sentence, e.g. "image within L2 0.52; or image within L2 0.40 and
        any 2 caption tokens": every certified corner (token budgets with their largest L2
        radius), radii rounded down."""
        if not self.certified:
            return "nothing certified"
        points = []
        for index in grid_points(*[range(n) for n in self.gamma.shape]):
            g = float(self.gamma[index] if index else self.gamma[()])
            if not np.isnan(g):
                points.append((index, g))
        corners = [(i, g) for i, g in points
                   if not any(j != i and h >= g and all(a >= b for a, b in zip(j, i,
                                                                                 strict=True))
                              for j, h in points)]
        return "; or ".join(self._phrase(index, g) for index, g in corners)

    def _phrase(self, index: tuple, gamma: float) -> str:
        parts = []
        if len(self.sigmas) == 1:
            name, sigma = next(iter(self.sigmas.items()))
            parts.append(f"any {name} change" if math.isinf(gamma) else
                         f"{name} within L2 {_down(sigma * gamma)}" if gamma > 0 else
                         f"{name} unchanged")
        elif self.sigmas:
            names = ", ".join(self.sigmas)
            parts.append(f"any change of {names}" if math.isinf(gamma) else
                         f"{names} within joint shift {_down(gamma)} (sum of (L2/sigma)^2 "
                         f"<= {_down(gamma)}^2)" if gamma > 0 else
                         f"{names} unchanged")
        parts += [f"any {r} {name} token{'s' if r > 1 else ''}"
                  for name, r in zip(self.token_blocks, index, strict=True) if r]
        return " and ".join(parts) or "the input itself"

    @classmethod
    def from_rows(cls, token_blocks: Sequence[str], sigmas: Mapping[str, float],
                  rows: Iterable[dict]) -> CertifiedRegion:
        """Inverse of :meth:`rows` (for stored results)."""
        token_blocks = tuple(token_blocks)
        rows = list(rows)
        if not rows:
            return cls(token_blocks, dict(sigmas), np.full((1,) * len(token_blocks), np.nan))

        def index_of(row):
            t = row["tokens"]
            if not token_blocks:
                return ()
            return (int(t),) if len(token_blocks) == 1 else tuple(int(t[n]) for n in token_blocks)

        indices = [index_of(r) for r in rows]
        shape = tuple(max(i[a] for i in indices) + 1 for a in range(len(token_blocks)))
        gamma = np.full(shape, np.nan)
        for index, row in zip(indices, rows, strict=True):
            gamma[index] = np.inf if row["gamma"] is None else float(row["gamma"])
        return cls(token_blocks, dict(sigmas), gamma)


def _down(value: float) -> str:
    """A radius rounded down for display (never shown larger than certified)."""
    if value >= 0.01:
        return f"{math.floor(value * 100) / 100:.2f}"
    return f"{math.floor(value * 1e4) / 1e4:.4f}"


def _json_number(value: float):
    return None if value == float("inf") else value


def pair_budget(eps: float, r: int, continuous: Sequence[str], tokens: Sequence[str]
                ) -> dict[str, float]:
    """An ``[eps, r]`` pair as a per-block budget: L2 ``eps`` on the one Gaussian-noised block
    (``continuous``: the names of the noised continuous blocks) and ``r`` changed tokens on
    the one noised token block (``tokens``).  The one place the pair is resolved (the run
    config and :meth:`HybridNoise.pair_budget`); ValueError when it is ambiguous."""
    out: dict[str, float] = {}
    if eps:
        if len(continuous) != 1:
            raise ValueError(f"an L2 budget needs exactly one Gaussian-noised block, there are "
                             f"{list(continuous)}; give a per-block budget such as "
                             f"image=0.25,text=1")
        out[continuous[0]] = eps
    if r:
        if len(tokens) != 1:
            raise ValueError(f"a token budget needs exactly one noised token block, there are "
                             f"{list(tokens)}; give a per-block budget")
        out[tokens[0]] = r
    return out


def _check_name(name) -> None:
    if not isinstance(name, str) or not name or name.endswith("_attention"):
        raise ValueError(f"a block name must be a non-empty string not ending in '_attention', "
                         f"got {name!r}")


def _prepare_tokens(name: str, block: TokenBlock, spec: Tokens | None) -> TokenBlock:
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
    attention = None
    if block.attention is not None:
        attention = torch.as_tensor(block.attention).long()
        if attention.shape != ids.shape:
            raise ValueError(f"attention mask of {name!r} has shape {tuple(attention.shape)}, "
                             f"ids have {tuple(ids.shape)}")
    noisable = block.noisable
    if noisable is not None:
        noisable = torch.as_tensor(noisable, dtype=torch.bool)
        if noisable.shape != ids.shape:
            raise ValueError(f"noisable mask of {name!r} has shape {tuple(noisable.shape)}, "
                             f"ids have {tuple(ids.shape)}")
    block = TokenBlock(ids, noisable, attention)
    if spec is None or spec.noise is None:
        return TokenBlock(ids, torch.zeros_like(ids, dtype=torch.bool), attention)
    vocab = spec.vocabulary
    if noisable is not None:
        outside = noisable & ~vocab.contains(ids)
        if outside.any():
            bad = int(ids[outside][0])
            raise ValueError(f"token block {name!r}: id {bad} is marked noisable but is not "
                             f"among the vocabulary's {vocab.size} noisable ids")
        if not isinstance(spec.threat, Anywhere):
            raise ValueError(f"token block {name!r}: a noisable mask cannot be combined with "
                             f"the {spec.threat.name} threat, which chooses the positions")
    if isinstance(spec.threat, Append):
        return spec.threat.apply(block, vocab, spec.max_length)
    return spec.threat.apply(block, vocab)


def _check_continuous(name: str, block) -> torch.Tensor:
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
