"""``hybridcert attack``: the joint attack (:func:`hybridcert.attacks.joint_attack`: L2 PGD on
the image and greedy token substitution, adaptive to the smoothing noise) on the user's model,
for every certified input of a stored run.

Each input is attacked at a budget read off its own certified region: ``r`` changed tokens
(``tokens``, at most the region's largest certified ``r``) and the certified L2 radius
``eps*(r)`` at that ``r`` — **inside** the region, where no attack may change the smoothed
decision — or that budget scaled by ``factor`` (**beyond**: L2 ``factor * eps*(r)`` and
``ceil(factor * r)`` tokens), where an attack may.  The smoothed classifier is then
re-estimated on the attacked input with fresh noise draws (its own seeds, independent of the
certification and of the attack) and Clopper-Pearson bounds at the run's ``alpha``:

* majority vote: the attacked decision is **flipped** when the upper bound on the certified
  class is below another class's lower bound (each of the ``K`` one-sided bounds at
  ``alpha / K``), **held** when the lower bound is above every other class's upper bound;
* detector, flag side: flipped when the upper bound on the flagged class is below ``tau``;
  benign side: flipped when its lower bound reaches ``tau``.

A flip inside a certified region contradicts the certificate (up to the probability
``alpha`` of each bound being wrong): a **soundness alarm**.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from hybridcert._validation import check_count, check_level
from hybridcert.attacks import joint_attack
from hybridcert.blocks import CertifiedRegion, Continuous, HybridNoise, TokenBlock, Tokens
from hybridcert.runs.config import ConfigError, RunConfig
from hybridcert.runs.runner import Plan, load_items, plan
from hybridcert.runs.store import RunStore, StoreError
from hybridcert.smoothing import (
    ABSTAIN,
    Detector,
    SmoothedClassifier,
    Stage,
    lower_confidence_bound,
    upper_confidence_bound,
)
from hybridcert.smoothing.core import input_seed

KINDS = ("inside", "beyond")


@dataclass(frozen=True)
class AttackOptions:
    """How hard each input is attacked and how the attacked input is re-estimated.

    Parameters
    ----------
    tokens : int
        Token budget asked for (capped per input at its largest certified ``r``).
    samples : int
        Noisy copies per evaluation of the adaptive attack.
    steps : int
        PGD steps.
    candidates : int
        Token substitutions scored per round.
    n : int
        Fresh noise draws for each estimate (before and after the attack).
    alpha : float, optional
        Level of the bounds (default: the run's alpha).
    seed : int
        Seed of the attack and of the fresh draws (each input's derives from it and its id).
    limit : int, optional
        Attack only the first ``limit`` certified inputs.
    beyond_tokens : int
        Beyond: at least this many changed tokens (0, the command's: ``ceil(factor * r)``
        only), so that a region certifying no token change is still attacked on the text
        beyond it.
    """

    tokens: int = 1
    samples: int = 32
    steps: int = 20
    candidates: int = 16
    n: int = 1000
    alpha: float | None = None
    seed: int = 0
    limit: int | None = None
    beyond_tokens: int = 0

    def __post_init__(self) -> None:
        for name in ("samples", "steps", "candidates", "n"):
            _count(name, getattr(self, name), 1)
        for name in ("tokens", "beyond_tokens"):
            _count(name, getattr(self, name), 0)
        _count("seed", self.seed, 0)
        if self.limit is not None:
            _count("limit", self.limit, 1)
        if self.alpha is not None:
            try:
                check_level("--alpha", self.alpha)
            except ValueError as err:
                raise ConfigError(str(err)) from None


def check_kinds(inside: bool, beyond: float | None) -> list[tuple[str, float]]:
    """The attacks asked for, as ``(kind, factor)``: inside at factor 1, beyond at ``beyond``
    (> 1)."""
    kinds = [("inside", 1.0)] if inside else []
    if beyond is not None:
        if not (math.isfinite(beyond) and beyond > 1):
            raise ConfigError(f"--beyond must be a factor > 1 (the certified budget scaled "
                              f"up), got {beyond!r}")
        kinds.append(("beyond", float(beyond)))
    if not kinds:
        raise ConfigError("give --inside (a budget inside each certified region) and/or "
                          "--beyond FACTOR (that budget scaled by FACTOR > 1)")
    return kinds


def attack_store(store: str | Path, kinds: list[tuple[str, float]], options: AttackOptions,
                 device: str = "cpu", batch_size: int = 512,
                 on_row: Callable[[dict], None] | None = None) -> tuple[list[dict], list[str]]:
    """Attack every certified input of the store's last run; write each result to the store
    (table ``attacks``) as it finishes and hand it to ``on_row``; return the rows and the
    ids of the certified inputs not attacked (missing from the dataset, or changed).

    The run's configuration is read from the store, so the model, its arguments, the noise
    and the dataset are the certified run's own; an input whose content changed since it
    was certified is skipped (its certificate is about the old content).  Each input is
    attacked by :func:`attack_input`.
    """
    path = Path(store)
    if not path.is_file():
        raise StoreError(f"store {path} not found")
    with RunStore(path) as opened:
        config = RunConfig.from_dict(opened.config)
        rows, finished = opened.rows(), opened.finished()
    if config.rule in ("benign", "detector") and config.num_classes != 2:
        raise ConfigError("hybridcert attack on the benign side of a detector needs two "
                          "classes (it lowers the other class's probability)")
    run = plan(config, device, batch_size)
    view = AttackView.of(run.noise)
    target = AttackTarget(run.classifier, view,
                          lambda record: _Renamed(run, view, record),
                          Detector.for_rule(config.rule, config.threshold,
                                            config.flagged_class))
    alpha = options.alpha or config.alpha
    items = {it.input_id: it for it in load_items(run)}
    todo = [r for r in rows if r["predict"] != ABSTAIN and r["frontier"]]
    skipped = [r["id"] for r in todo if r["id"] not in items
               or items[r["id"]].content_hash != finished.get(r["id"])]
    todo = [r for r in todo if r["id"] not in skipped][: options.limit]
    out = []
    with RunStore(path) as opened:
        for row in todo:
            for result in attack_input(target, items[row["id"]].record(), row, kinds, options,
                                       alpha):
                opened.write_attack(result)
                out.append(result)
                if on_row is not None:
                    on_row(result)
    return out, skipped


@dataclass
class AttackView:
    """A noise's blocks seen as the attack's two: one Gaussian-noised block (``image``), at
    most one noised token block (``text``), any others passed through unchanged.

    Attributes
    ----------
    image, text : str
        The names of those blocks in the records (``text`` None without a noised token
        block).
    sigmas : dict
        ``{image: sigma}`` (the axes of a :class:`~hybridcert.blocks.CertifiedRegion`).
    token_blocks : tuple of str
        The noised token blocks (``(text,)`` or empty).
    noise : HybridNoise
        The same noise on blocks renamed ``image`` and ``text`` (the attack's batches).
    """

    image: str
    text: str | None
    sigmas: dict
    token_blocks: tuple
    noise: HybridNoise

    @classmethod
    def of(cls, noise: HybridNoise) -> AttackView:
        """The view of ``noise``; refused (ConfigError) for other block layouts."""
        if len(noise.noised_continuous) != 1 or len(noise.noised_tokens) > 1:
            raise ConfigError(
                f"hybridcert attack handles one Gaussian-noised block and at most one noised "
                f"token block; this run noises {[b.name for b in noise.noised_continuous]} "
                f"and {[b.name for b in noise.noised_tokens]}")
        image = noise.noised_continuous[0]
        blocks = [Continuous("image", image.noise)]
        text = None
        if noise.noised_tokens:
            tok = noise.noised_tokens[0]
            text = tok.name
            blocks.append(Tokens("text", tok.noise, tok.vocabulary, tok.threat, tok.max_length))
        return cls(image.name, text, {image.name: image.noise.sigma},
                   tuple(b.name for b in noise.noised_tokens), HybridNoise(blocks))

    def region(self, frontier: list[dict]) -> CertifiedRegion:
        """The certified region of a stored row's ``frontier``
        (:meth:`~hybridcert.blocks.CertifiedRegion.rows`)."""
        return CertifiedRegion.from_rows(self.token_blocks, self.sigmas, frontier)


@dataclass
class AttackTarget:
    """What is attacked and how its decision is re-estimated.

    Attributes
    ----------
    classifier : SmoothedClassifier
        The smoothed classifier that certified the inputs: prepares a record and draws the
        fresh copies of the estimates (stage ``ATTACK_CHECK``).
    view : AttackView
        Its noise as the attack's two blocks.
    model : callable
        ``model(prepared record)``: the base model as a ``torch.nn.Module`` on the attack's
        batches (``image``, ``text``, ``text_attention``) returning logits ``(B, C)``; a
        ``text_encoder`` attribute gives HotFlip candidates (see
        :func:`~hybridcert.attacks.joint_attack`).
    detector : Detector, optional
        The certified detector (None: the majority vote).
    """

    classifier: SmoothedClassifier
    view: AttackView
    model: Callable[[dict], torch.nn.Module]
    detector: Detector | None = None


def attack_input(target: AttackTarget, record: dict, row: dict,
                 kinds: list[tuple[str, float]], options: AttackOptions,
                 alpha: float) -> Iterator[dict]:
    """Attack one certified input at each of ``kinds`` (see :func:`check_kinds`) and yield
    one result per kind as it finishes.

    The budget is read off the input's own certified region (``row["frontier"]``): ``r =
    min(options.tokens, largest certified r)`` changed tokens and the certified L2 radius
    ``eps*(r)`` inside; ``factor * eps*(r)`` and ``max(ceil(factor * r),
    options.beyond_tokens)`` tokens beyond.  The smoothed decision is estimated on fresh
    draws before the attack and after each (module doc: held, flipped or undecided at
    ``alpha``); ``alarm`` is a flip inside.

    Parameters
    ----------
    target : AttackTarget
    record : dict
        The input as certified (prepared here by ``target.classifier``).
    row : dict
        Its stored result row (:func:`~hybridcert.smoothing.results.result_row`): ``id``,
        ``idx``, ``label``, ``predict``, ``decision`` and a non-empty ``frontier``.
    kinds : list of (kind, factor)
    options : AttackOptions
    alpha : float
        Level of the bounds of the estimates.
    """
    record = target.classifier.validate(record)
    region = target.view.region(row["frontier"])
    before = _estimate(target, record, row, alpha, options.n,
                       input_seed(options.seed, f"{row['id']}/attack/before"))
    for kind, factor in kinds:
        yield _attack_one(target, record, region, row, kind, factor, options, alpha, before)


class _Renamed(torch.nn.Module):
    """The user's model on the attack's batches (``image``, ``text``): the run's own block
    names restored, the un-noised blocks added, tensors moved to the model's device, float
    scores returned on the CPU."""

    def __init__(self, run: Plan, view: AttackView, record: dict):
        super().__init__()
        self.base, self.view = run.classifier.base, view
        self.others = {k: v for k, v in record.items() if k not in (view.image, view.text)}
        encoder = getattr(self.base.model, "text_encoder", None)
        if view.text is not None and isinstance(encoder, torch.nn.Module):
            self.text_encoder = encoder           # HotFlip candidates (see joint_attack)

    def forward(self, batch: dict) -> torch.Tensor:
        device = self.base.device
        size = batch["image"].shape[0]
        full = {self.view.image: batch["image"].to(device)}
        if self.view.text is not None:
            full[self.view.text] = batch["text"].to(device)
            full[self.view.text + "_attention"] = batch["text_attention"].to(device)
        for name, data in self.others.items():
            if isinstance(data, TokenBlock):
                full[name] = data.ids.to(device).expand(size, -1)
                attention = torch.ones_like(data.ids) if data.attention is None \
                    else data.attention
                full[name + "_attention"] = attention.to(device).expand(size, -1)
            else:
                full[name] = data.to(device).unsqueeze(0).expand(size, *data.shape)
        out = self.base.model(full)
        if not (isinstance(out, torch.Tensor) and out.ndim == 2 and out.is_floating_point()):
            raise ConfigError(f"hybridcert attack needs a model that returns logits (B, C) "
                              f"as a torch tensor differentiable in the image; "
                              f"{self.base.name} returns "
                              f"{type(out).__name__} {tuple(getattr(out, 'shape', ()))}")
        return out.float().cpu()


def _attack_one(target: AttackTarget, record, region, row, kind, factor, options, alpha,
                before) -> dict:
    start = time.perf_counter()
    view = target.view
    image = record[view.image]
    r_cert = max(region.max_tokens, 0) if view.text is not None else 0
    r_in = min(options.tokens, r_cert)
    eps_in = float(region.l2_radius(r_in))
    eps_in = min(eps_in, math.sqrt(image.numel()))    # unbounded: the whole [0, 1] cube
    eps, r = (eps_in, r_in) if kind == "inside" else \
        (factor * eps_in, max(math.ceil(factor * r_in), options.beyond_tokens))
    label = _attack_label(target.detector, row)
    text = record[view.text] if view.text is not None else None
    ids = text.ids if text is not None else torch.zeros(1, dtype=torch.long)
    attention = (torch.ones_like(ids) if text is None or text.attention is None
                 else text.attention)
    positions = text.noisable if text is not None else torch.zeros_like(ids, dtype=torch.bool)
    vocabulary = view.noise.by_name["text"].vocabulary if text is not None else None
    model = target.model(record)
    try:
        adv_image, adv_ids = joint_attack(
            model, image.cpu(), ids.cpu(), label, eps, r if text is not None else 0,
            vocabulary or _no_vocabulary(), attention=attention.cpu(),
            positions=positions.cpu(), noise=view.noise, samples=options.samples,
            steps=options.steps, candidates=options.candidates,
            seed=input_seed(options.seed, f"{row['id']}/attack/{kind}/{factor:g}"))
    except ConfigError:
        raise
    except RuntimeError as err:        # e.g. no gradient through the user's model
        raise ConfigError(f"the attack could not run on input {row['id']!r}: {err}") from None
    attacked = dict(record)
    attacked[view.image] = adv_image.to(image.dtype)
    if text is not None:
        attacked[view.text] = TokenBlock(adv_ids, text.noisable, text.attention)
    after = _estimate(target, attacked, row, alpha, options.n,
                      input_seed(options.seed, f"{row['id']}/attack/{kind}/{factor:g}/after"))
    budget = {view.image: eps, **({view.text: r} if view.text is not None else {})}
    outcome = after["outcome"]
    return {
        "id": row["id"], "idx": row["idx"], "label": row["label"], "predict": row["predict"],
        "decision": row.get("decision"), "kind": kind, "factor": factor, "budget": budget,
        "certified_budget": bool(region.certifies(budget)),
        "quantity": after["quantity"],
        "estimate_before": before["estimate"], "lower_before": before["lower"],
        "upper_before": before["upper"], "outcome_before": before["outcome"],
        "estimate_after": after["estimate"], "lower_after": after["lower"],
        "upper_after": after["upper"], "outcome": outcome,
        "counts_before": before["counts"], "counts_after": after["counts"],
        "alarm": bool(kind == "inside" and outcome == "flipped"),
        "tokens_changed": int((adv_ids != ids.cpu()).sum()) if text is not None else 0,
        "l2_used": float((adv_image - image.cpu()).flatten().norm()),
        "n": options.n, "alpha": alpha, "samples": options.samples, "steps": options.steps,
        "candidates": options.candidates, "seed": options.seed,
        "time": round(time.perf_counter() - start, 6),
    }


def _attack_label(detector: Detector | None, row: dict) -> int:
    """The class whose (smoothed) probability the attack lowers."""
    if detector is None:
        return int(row["predict"])
    if row.get("decision") == "flag":
        return detector.flagged_class
    return 1 - detector.flagged_class          # two classes (checked before the run)


def _estimate(target: AttackTarget, record, row, alpha, n, seed) -> dict:
    """The certified quantity on fresh draws: estimate, two-sided Clopper-Pearson interval at
    ``alpha``, and whether the stored decision provably held or flipped (see module doc)."""
    counts = target.classifier.sample_counts(record, n, seed, Stage.ATTACK_CHECK)
    detector = target.detector
    if detector is None:
        target_class = int(row["predict"])
        quantity = f"P(class {target_class})"
    else:
        target_class = detector.flagged_class
        quantity = f"P(flagged class {target_class})"
    k = int(counts[target_class])
    out = {"quantity": quantity, "estimate": k / n,
           "lower": lower_confidence_bound(k, n, alpha / 2),
           "upper": upper_confidence_bound(k, n, alpha / 2), "counts": counts.tolist()}
    if detector is None:
        num_classes = len(counts)
        level = alpha / num_classes
        lows = [lower_confidence_bound(int(c), n, level) for c in counts]
        highs = [upper_confidence_bound(int(c), n, level) for c in counts]
        others = [c for c in range(num_classes) if c != target_class]
        flipped = highs[target_class] < max(lows[c] for c in others)
        held = lows[target_class] > max(highs[c] for c in others)
    else:
        tau = detector.threshold
        low, high = lower_confidence_bound(k, n, alpha), upper_confidence_bound(k, n, alpha)
        if row.get("decision") == "flag":
            flipped, held = high < tau, low >= tau
        else:
            flipped, held = low >= tau, high < tau
    out["outcome"] = "flipped" if flipped else "held" if held else "undecided"
    return out


def _no_vocabulary():
    from hybridcert.blocks import Vocabulary

    return Vocabulary(torch.tensor([0, 1]))       # no token block: nothing is substituted


def _count(name: str, value, minimum: int) -> None:
    try:
        check_count(f"--{name}", value, minimum=minimum)
    except ValueError as err:
        raise ConfigError(str(err)) from None


__all__ = ["KINDS", "AttackOptions", "AttackTarget", "AttackView", "attack_input",
           "attack_store", "check_kinds"]
