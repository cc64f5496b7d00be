"""Certification over a dataset: model, noise, inputs, and the backends that run them.

Data flows one way: a validated :class:`~hybridcert.runs.config.RunConfig` -> the model side
(:class:`~hybridcert.adapters.ModelAdapter`: the model, its tokenizers, its image sizes) ->
the :class:`~hybridcert.blocks.HybridNoise` of the record's blocks -> the dataset's items
(:mod:`hybridcert.datasets`) -> a backend that certifies each item and hands every finished
result to a callback (which stores it).

Every input's noise seed is derived from the run seed and the input's id, so a result does
not depend on the backend, the worker, the batch or the order in which inputs finish.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hybridcert.adapters import ModelAdapter
from hybridcert.blocks import Anywhere, Append, Continuous, HybridNoise, Suffix, Tokens
from hybridcert.runs.config import ConfigError, RunConfig
from hybridcert.smoothing import Certification, Detector, SmoothedClassifier
from hybridcert.smoothing.core import input_seed

#: The placeholder written into appended slots unless the run names one.
DEFAULT_PLACEHOLDER = "!"


class ModelFailure(RuntimeError):
    """The user's model raised on some inputs of a run; every other input was certified.

    ``failures`` holds ``(item, error)`` pairs, in dataset order (an error is the exception
    the model raised, or its ``"Type: message"`` from another process); the message names the
    first row (its file, line and id) and how many more failed."""

    def __init__(self, failures: list[tuple[object, BaseException | str]]):
        self.failures = sorted(failures, key=lambda f: f[0].idx)
        item, err = self.failures[0]
        more = len(self.failures) - 1
        also = (f" (and {more} more input(s): "
                + ", ".join(f.where for f, _ in self.failures[1:4])
                + (" ..." if more > 3 else "") + ")") if more else ""
        super().__init__(f"{item.where}: the model failed on this input: "
                         f"{_described(err)}{also}")
        if isinstance(err, BaseException):
            self.__cause__ = err      # HYBRIDCERT_DEBUG=1 shows the model's own traceback


def _described(err: BaseException | str) -> str:
    return err if isinstance(err, str) else f"{type(err).__name__}: {err}"


@dataclass
class Plan:
    """What a run certifies with: the model side, the noise, the smoothed classifier."""

    config: RunConfig
    adapter: ModelAdapter
    noise: HybridNoise
    classifier: SmoothedClassifier


# -- model ---------------------------------------------------------------------------------

def load_adapter(config: RunConfig) -> ModelAdapter:
    """The model side of a run.  ``--model module:factory`` imports and runs that code (the
    current directory is importable); a checkpoint folder is loaded without unpickling."""
    if config.checkpoint is not None:
        from hybridcert.models import fusion

        return ModelAdapter.wrap(fusion.load_adapter(config.checkpoint))
    module_name, _, attr = config.model.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"entry point {config.model!r} does not load: {err}") from None
    check_factory_args(factory, config.model, config.model_args)
    try:
        adapter = ModelAdapter.wrap(factory(**config.model_args))
    except Exception as err:  # the user's factory failed
        raise ConfigError(f"entry point {config.model!r} failed: {type(err).__name__}: "
                          f"{err}") from None
    if adapter.num_classes is not None and adapter.num_classes != config.num_classes:
        raise ConfigError(f"the model predicts {adapter.num_classes} classes but the run says "
                          f"num_classes = {config.num_classes}")
    return adapter


def check_factory_args(factory, entry: str, args: dict) -> None:
    """Refuse, before the factory runs, an argument it does not take or a required one that
    is missing (one line naming the argument and the ones allowed)."""
    if not callable(factory):
        raise ConfigError(f"entry point {entry!r} is not callable")
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):      # a builtin without a signature: let the call decide
        return
    params = signature.parameters.values()
    named = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    allowed = ", ".join(named) or "none"
    if not any(p.kind == p.VAR_KEYWORD for p in params):
        unknown = [k for k in args if k not in named]
        if unknown:
            raise ConfigError(f"--model-arg {unknown[0]!r} is not an argument of {entry} "
                              f"(its arguments: {allowed})")
    missing = [p.name for p in params if p.default is p.empty and p.name not in args
               and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if missing:
        raise ConfigError(f"{entry} needs argument {missing[0]!r}: give --model-arg "
                          f"{missing[0]}=VALUE (its arguments: {allowed})")


def build_noise(config: RunConfig, adapter: ModelAdapter) -> HybridNoise:
    """The record's blocks: noise from the configuration, vocabularies and lengths from the
    model side (never from another model).  A text block the model reads with no noise named
    for it needs ``no_text_noise`` (no token change is then certified)."""
    specs = config.block_noises()
    silent = [name for name in adapter.text if name not in specs]
    if silent and not config.no_text_noise:
        raise ConfigError(
            f"the model reads text block(s) {silent} but no text noise is configured, so no "
            f"token change would be certified: give --keep-prob A (or --block "
            f"{silent[0]}=substitution:A), or pass --no-text-noise to certify image changes "
            f"alone (the report then says tokens: none certified)")
    blocks = []
    for name, spec in specs.items():
        encoder = adapter.text.get(name)
        if spec.continuous:
            if encoder is not None:
                raise ConfigError(f"block {name!r} is a token block of the model; Gaussian "
                                  f"noise is for continuous blocks")
            blocks.append(Continuous(name, spec.build()))
            continue
        if spec.kind == "none":
            blocks.append(Continuous(name) if encoder is None
                          else Tokens(name, None, encoder.vocabulary))
            continue
        if encoder is None:
            raise ConfigError(
                f"token block {name!r} is noised but the model supplies no text handling for "
                f"it: return a ModelAdapter with text={{{name!r}: TextEncoder(...)}} from the "
                f"entry point (hybridcert never falls back to another model's tokenizer)")
        vocab = encoder.vocabulary
        try:
            noise = spec.build(vocab.size)
            noise.check_block(name, vocab)
        except ValueError as err:
            raise ConfigError(f"block {name!r}: {err} (the model's tokenizer: "
                              f"{encoder.name})") from None
        blocks.append(Tokens(name, noise, vocab, _threat(config, encoder),
                             max_length=encoder.max_length))
    # The model's other blocks are passed through un-noised, but still as what they are (a
    # token block keeps its attention mask).
    named = {b.name for b in blocks}
    blocks += [Tokens(name, None, encoder.vocabulary, max_length=encoder.max_length)
               for name, encoder in adapter.text.items() if name not in named]
    blocks += [Continuous(name) for name in adapter.images if name not in named]
    try:
        return HybridNoise(blocks)
    except ValueError as err:
        raise ConfigError(str(err)) from None


def _threat(config: RunConfig, encoder):
    if config.threat == "suffix":
        return Suffix(config.suffix_length)
    if config.threat == "append":
        token = config.append_placeholder or DEFAULT_PLACEHOLDER
        try:
            placeholder = encoder.token_id(token)
        except ValueError as err:
            raise ConfigError(f"--append-placeholder: {err}") from None
        return Append(config.append_slots, placeholder)
    return Anywhere()


def plan(config: RunConfig, device: str = "cpu", batch_size: int = 512,
         parallel_batches: int = 1, adapter: ModelAdapter | None = None) -> Plan:
    """Model, noise and smoothed classifier of a run (everything checked, nothing run)."""
    adapter = adapter or load_adapter(config)
    noise = build_noise(config, adapter)
    classifier = SmoothedClassifier(adapter.model, noise, config.num_classes,
                                    batch_size=batch_size, device=device,
                                    parallel_batches=parallel_batches)
    return Plan(config, adapter, noise, classifier)


def data_spec(config: RunConfig):
    from hybridcert.datasets import DataSpec

    return DataSpec(source=config.dataset,
                    columns=None if config.columns is None else dict(config.columns),
                    label_column=config.label_column, id_column=config.id_column,
                    limit=config.limit,
                    label_map=config.label_map, num_classes=config.num_classes,
                    allow_outside_paths=config.allow_outside_paths, strict=config.strict,
                    image_size=None if config.image_size is None else tuple(config.image_size))


def load_items(run: Plan) -> list:
    """The run's inputs, validated, in a fixed order."""
    from hybridcert.datasets import load_items as load

    noised = {b.name for b in run.noise.blocks if b.noise is not None}
    return load(data_spec(run.config), run.adapter, noised)


def check_rows(run: Plan, items: list) -> None:
    """Refuse, before anything is stored, every row the run would fail on or certify
    silently on less than it says, naming the row: each noised token block laid out as its
    threat says (appended slots must fit the model's maximum length) with at least one
    noisable position.  With ``allow_empty_text`` a row without one is certified on its other
    blocks alone and says so in its notes."""
    from hybridcert.datasets import DataError

    for item in items:
        for spec in run.noise.noised_tokens:
            data = item.blocks.get(spec.name)
            if data is None:        # check_fit names a missing block
                continue
            try:
                prepared = run.noise.prepare_block(spec.name, data.load(item.where))
            except ValueError as err:
                raise DataError(f"{item.where}: {err}") from None
            if bool(prepared.noisable.any()):
                continue
            if not run.config.allow_empty_text:
                raise DataError(f"{item.where}: text block {spec.name!r} has no noisable token "
                                f"(empty, or only unknown or special tokens), so its "
                                f"certificate would cover the other blocks alone; pass "
                                f"--allow-empty-text to certify such rows so (noted per row)")
            note = f"{spec.name}: no noisable token; certified on the other blocks alone"
            if note not in item.notes:
                item.notes.append(note)


def check_fit(run: Plan, item) -> None:
    """One noisy forward pass, so that a noise/model/input mismatch fails fast and clearly."""
    record = item.record()
    missing = [b.name for b in run.noise.blocks if b.noise is not None and b.name not in record]
    if missing:
        raise ConfigError(f"the noise names block(s) {missing} but input {item.input_id!r} has "
                          f"only {sorted(record)}")
    try:
        run.classifier.stream(run.classifier.validate(record), 0, stage=9).labels(2)
    except ValueError:
        raise
    except Exception as err:  # the user's model rejected the batch
        raise ConfigError(f"the model does not accept the noisy inputs of {item.where} (the "
                          f"pre-run check on the first row): {type(err).__name__}: {err}"
                          ) from None


# -- certification -------------------------------------------------------------------------

def detector_of(config: RunConfig) -> Detector | None:
    return Detector.for_rule(config.rule, config.threshold, config.flagged_class)


def certify_items(run: Plan, items: Iterable, group: int = 8, window: int = 32
                  ) -> Iterator[tuple]:
    """Certify items; yield ``(item, result)`` as each finishes.

    Fixed-n runs certify small groups that share forward passes, each input handed back as
    soon as its draws are counted (so a run interrupted loses only the inputs in flight);
    sequential runs stop each input as soon as its answer is settled, ``window`` inputs at a
    time sharing the forward batches of the one sequential driver
    (:class:`~hybridcert.sequential.driver.Driver`), each handed back as it is decided.

    An input the model raises on does not stop the others: once every other input is
    handed back, :class:`ModelFailure` names the failed ones (``KeyboardInterrupt`` is
    never caught)."""
    items = list(items)
    failures: list[tuple[object, BaseException]] = []
    if run.config.mode == "fixed":
        yield from _certify_fixed_items(run, items, detector_of(run.config), group, failures)
    else:
        yield from _certify_sequential_items(run, items, detector_of(run.config), window,
                                             failures)
    if failures:
        raise ModelFailure(failures)


def _certify_fixed_items(run: Plan, items: list, detector: Detector | None, group: int,
                         failures: list) -> Iterator[tuple]:
    """Fixed n, ``group`` inputs sharing forward passes.  When the model fails on a group,
    each of its inputs not yet handed back is certified again alone: an input's draws come
    from its own seed, so its result is the one it gets in the group."""
    for start in range(0, len(items), group):
        chunk = items[start: start + group]
        done: set[int] = set()
        try:
            for i, result in _certify_fixed(run, chunk, detector):
                done.add(i)
                yield chunk[i], result
        except Exception:  # noqa: BLE001 - whatever the model raised; found below
            for i, item in enumerate(chunk):
                if i in done:
                    continue
                try:
                    result = next(_certify_fixed(run, [item], detector))[1]
                except Exception as err:  # noqa: BLE001 - the model fails on this input
                    failures.append((item, err))
                    continue
                yield item, result


def _certify_fixed(run: Plan, chunk: list, detector: Detector | None) -> Iterator[tuple]:
    config, clf = run.config, run.classifier
    records = [it.record() for it in chunk]
    seeds = [input_seed(config.seed, it.input_id) for it in chunk]
    if detector is None:
        finished = clf.certify_each(records, config.n0, config.n, config.alpha, seeds,
                                    config.p_upper, config.max_tokens)
    else:
        finished = clf.certify_detector_each(records, config.n, config.alpha, detector,
                                             seeds, config.max_tokens)
    budgets = config.target_budgets() if config.targets else None
    for i, result in finished:
        if budgets is not None:
            positions = clf.noise.noised_positions(clf.validate(records[i]))
            result.attach_targets([_fixed_answer(b, result.region.certifies(b), config.n)
                                   for b in budgets], positions)
        yield i, result


def _certify_sequential_items(run: Plan, items: list, detector: Detector | None,
                              window: int, failures: list) -> Iterator[tuple]:
    """Sequential runs through the driver: each input's rule reads its own stream
    ``(input_seed(run seed, id), Stage.SEQUENTIAL)``, so its answer is the one
    ``certify_sequential`` gives it alone, whatever shares its batches.  The driver fails
    only the jobs whose inputs the model raises on; those go to ``failures``."""
    from hybridcert.sequential.batched import fresh_copy
    from hybridcert.sequential.driver import Driver
    from hybridcert.sequential.question import SequentialQuestion

    config, clf = run.config, run.classifier
    question = SequentialQuestion(
        clf.noise, clf.num_classes, config.alpha, config.n,
        targets=config.target_budgets() if config.mode == "decision" else None,
        detector=detector, tolerance=config.tolerance, max_tokens=config.max_tokens,
        max_radius=config.max_radius, boundary=config.boundary, price=config.price)
    driver = Driver(clf, batch_size=clf.batch_size, max_pending=window)
    prototype = question.new_rule()
    jobs = ((clf.validate(item.record()), input_seed(config.seed, item.input_id),
             fresh_copy(prototype), k) for k, item in enumerate(items))
    for job in driver.run(jobs, window=window):
        try:
            outcome = job.future.result()       # a job's own error (its input alone)
        except Exception as err:  # noqa: BLE001 - whatever the model raised on this input
            failures.append((items[job.key], err))
            continue
        yield items[job.key], question.result(outcome.rule,
                                              clf.noise.noised_positions(job.stream.record),
                                              outcome.elapsed_s)


def _fixed_answer(budget: dict, certified: bool, n: int) -> dict:
    """A target of a fixed-n run: certified, or open when its sample ran out ("cap")."""
    return {"budget": budget, "certified": bool(certified),
            "status": "certified" if certified else "cap", "decided_at": int(n)}


OnResult = Callable[[object, Certification], None]


class LocalBackend:
    """Certify in this process (torch uses the machine's cores; see ``parallel_batches``)."""

    def __init__(self, run: Plan):
        self.run = run

    def certify(self, items: list, on_result: OnResult) -> None:
        for item, result in certify_items(self.run, items):
            on_result(item, result)


class RayBackend:
    """Shard inputs over Ray actors, one model replica each (one GPU each on CUDA).

    Without ``address`` a local cluster is started for this run and stopped after it: no
    dashboard, Ray's token authentication left as configured (on by default), and the token
    file Ray writes under ``~/.ray`` made readable by this user only.  Ray 2.60's servers
    listen on every interface even when asked for 127.0.0.1 (measured; see the README's
    security notes): on a shared host, keep token authentication on or firewall the ports.
    With ``address`` the driver joins that cluster: what it exposes is its owner's
    configuration.
    """

    def __init__(self, config: RunConfig, device: str, batch_size: int, workers: int = 2,
                 address: str | None = None, parallel_batches: int = 1):
        self.config, self.device, self.batch_size = config, device, batch_size
        self.workers, self.address = workers, address

    def certify(self, items: list, on_result: OnResult) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError("--backend ray needs Ray: pip install 'hybridcert[ray]'") from None
        started_here = not ray.is_initialized()
        if started_here:
            options = {"include_dashboard": False, "log_to_driver": False,
                       "ignore_reinit_error": True}
            if self.address:
                ray.init(address=self.address, **options)
            else:
                previous = os.umask(0o077)        # the token file Ray writes: owner only
                try:
                    ray.init(num_cpus=self.workers, **options)
                finally:
                    os.umask(previous)
                _private_token()
        try:
            gpus = 1 if self.device.startswith("cuda") else 0
            actor_class = ray.remote(num_cpus=1, num_gpus=gpus)(_Worker)
            actors = [actor_class.remote(self.config, self.device, self.batch_size)
                      for _ in range(self.workers)]
            pending, queue = {}, list(items)
            for actor in actors:
                if queue:
                    item = queue.pop(0)
                    pending[actor.certify.remote(item)] = (actor, item)
            failures = []
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                actor, item = pending.pop(done[0])
                result = ray.get(done[0])
                if isinstance(result, str):     # the model failed on this input
                    failures.append((item, result))
                else:
                    on_result(item, result)
                if queue:
                    nxt = queue.pop(0)
                    pending[actor.certify.remote(nxt)] = (actor, nxt)
            if failures:
                raise ModelFailure(failures)
        finally:
            if started_here:
                ray.shutdown()


def _private_token() -> None:
    """Make Ray's token file readable by this user only (Ray writes it world-readable)."""
    token = Path.home() / ".ray" / "auth_token"
    if token.exists():
        token.chmod(0o600)


class _Worker:
    """A Ray actor: one model replica, single-threaded torch."""

    def __init__(self, config: RunConfig, device: str, batch_size: int):
        import torch

        torch.set_num_threads(1)
        self.run = plan(config, device, batch_size)

    def certify(self, item) -> Certification | str:
        """The input's certificate, or ``"Type: message"`` of the error the model raised on
        it (a user's exception may not survive the trip back)."""
        try:
            return next(certify_items(self.run, [item]))[1]
        except ModelFailure as failure:
            return _described(failure.failures[0][1])
