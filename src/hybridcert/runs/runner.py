"""Certification over a dataset: configuration, inputs, model, backends (local and Ray).

Every input's noise seed is derived from the run seed and the input's id, so a result does
not depend on the backend, the worker, the batch or the order in which inputs finish.
"""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from hybridcert._validation import check_positive
from hybridcert.noise import Gaussian, Mask, Substitution
from hybridcert.runs.store import RunStore
from hybridcert.smoothing import Certification, SmoothedClassifier, TokenBlock
from hybridcert.smoothing.sequential import certify_sequential


@dataclass
class RunConfig:
    """Everything that determines a run's results (stored beside them)."""

    dataset: str = "safety:test"        # safety:test[:N], a .jsonl file, a folder, a .parquet
    checkpoint: str | None = None       # folder written by `hybridcert train`
    model: str | None = None            # or a Python entry point "module:factory"
    sigma: float | None = 0.25
    keep_prob: float | None = 0.2
    noise: str = "substitution"
    n0: int = 100
    n: int = 10_000
    alpha: float = 0.001
    p_upper: str = "complement"
    max_tokens: int = 16
    seed: int = 0
    image_size: int = 32
    num_classes: int = 2
    mode: str = "fixed"                 # fixed, decision (sequential) or radius (sequential)
    targets: list = None                # decision mode: [[eps, r], ...]
    n_min: int = 100                    # sequential modes: first look; n is the cap
    tolerance: float = 0.01             # radius mode: L2 tolerance of the frontier
    max_radius: float | None = None     # radius mode: largest L2 radius of interest

    def __post_init__(self) -> None:
        if self.mode not in ("fixed", "decision", "radius"):
            raise ValueError(f"mode must be fixed, decision or radius, got {self.mode!r}")
        if self.mode == "decision" and not self.targets:
            raise ValueError("mode 'decision' needs targets, e.g. [[0.25, 1], [0.5, 2]]")
        check_positive("tolerance", self.tolerance)
        if self.max_radius is not None:
            check_positive("max_radius", self.max_radius)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Item:
    idx: int
    input_id: str
    label: int | None
    record: dict


def input_seed(run_seed: int, input_id: str) -> int:
    digest = hashlib.blake2b(f"{run_seed}:{input_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF


# -- inputs ------------------------------------------------------------------------------

def load_items(config: RunConfig) -> list[Item]:
    """The run's inputs, in a fixed order."""
    spec = config.dataset
    if spec.startswith("safety:"):
        return _safety_items(spec)
    path = Path(spec)
    if not path.exists():
        raise FileNotFoundError(f"dataset {spec!r} not found")
    if path.is_dir():
        files = sorted(path.glob("*.jsonl"))
        if not files:
            raise FileNotFoundError(f"dataset folder {path} holds no .jsonl file")
        rows = [row for f in files for row in _read_jsonl(f)]
        base = path
    elif path.suffix == ".jsonl":
        rows, base = _read_jsonl(path), path.parent
    elif path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError("reading .parquet needs pyarrow: pip install "
                             "'hybridcert[parquet]'") from None
        rows, base = pq.read_table(path).to_pylist(), path.parent
    else:
        raise ValueError(f"dataset {spec!r}: expected safety:test, a .jsonl or .parquet file, "
                         f"or a folder of .jsonl files")
    return [_row_item(i, row, base, config.image_size) for i, row in enumerate(rows)]


def _safety_items(spec: str) -> list[Item]:
    from hybridcert.data import safety

    parts = spec.split(":")
    split = parts[1] if len(parts) > 1 and parts[1] else "test"
    limit = int(parts[2]) if len(parts) > 2 else None
    if split not in ("train", "val", "test"):
        raise ValueError(f"dataset {spec!r}: split must be train, val or test")
    data = safety.splits(4000, 500, 500, 0, Path("artifacts/data"))[split]
    count = len(data) if limit is None else min(limit, len(data))
    return [Item(i, f"{split}-{i}", int(data.labels[i]), data.record(i)) for i in range(count)]


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from None
    return rows


def _row_item(i: int, row: dict, base: Path, size: int) -> Item:
    from PIL import Image, UnidentifiedImageError

    from hybridcert.data import safety

    record = {}
    if "image" in row:
        image_path = base / row["image"]
        try:
            with Image.open(image_path) as im:
                pixels = np.asarray(im.convert("RGB").resize((size, size)), dtype=np.float32)
        except FileNotFoundError:
            raise FileNotFoundError(f"image {image_path} not found") from None
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"image {image_path} cannot be read ({err})") from None
        record["image"] = torch.from_numpy(pixels.transpose(2, 0, 1) / 255.0)
    if "text" in row:
        record["text"] = TokenBlock(torch.tensor(safety.tokenizer().encode(row["text"]).ids))
    if not record:
        raise ValueError(f"dataset row {i} has neither 'image' nor 'text'")
    label = row.get("label")
    return Item(i, str(row.get("id", i)), None if label is None else int(label), record)


# -- model -------------------------------------------------------------------------------

def load_model(config: RunConfig) -> Callable:
    if (config.checkpoint is None) == (config.model is None):
        raise ValueError("give exactly one of --checkpoint or --model")
    if config.checkpoint is not None:
        from hybridcert.models import fusion

        return fusion.load(config.checkpoint)
    module_name, _, attr = config.model.partition(":")
    if not attr:
        raise ValueError(f"--model must look like 'module:factory', got {config.model!r}")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"entry point {config.model!r} does not load: {err}") from None
    return factory()


def build_classifier(config: RunConfig, device: str = "cpu", batch_size: int = 512,
                     parallel_batches: int = 1) -> SmoothedClassifier:
    from hybridcert.data import safety

    noises, vocabularies = {}, {}
    if config.sigma is not None:
        noises["image"] = Gaussian(config.sigma)
    if config.keep_prob is not None:
        vocab = safety.vocabulary()
        noises["text"] = Mask(config.keep_prob) if config.noise == "mask" else \
            Substitution(config.keep_prob, vocab.size)
        vocabularies["text"] = vocab
    return SmoothedClassifier(load_model(config), noises, config.num_classes, vocabularies,
                              batch_size=batch_size, device=device,
                              parallel_batches=parallel_batches)


def check_fit(classifier: SmoothedClassifier, item: Item) -> None:
    """One noisy forward pass, so that a noise/model/input mismatch fails fast and clearly."""
    missing = [name for name in classifier.noises if name not in item.record]
    if missing:
        raise ValueError(f"the noise names block(s) {missing} but input {item.input_id!r} has "
                         f"only {sorted(item.record)}")
    try:
        classifier.sample_counts(classifier.validate(item.record), 2, 0, stage=9)
    except ValueError:
        raise
    except Exception as err:  # the user's model rejected the batch
        raise ValueError(f"the model does not accept the noisy inputs: "
                         f"{type(err).__name__}: {err}") from None


# -- backends ----------------------------------------------------------------------------

def certify_items(classifier: SmoothedClassifier, config: RunConfig, items: list[Item],
                  group: int = 8) -> Iterator[tuple[Item, Certification, int]]:
    """Certify items; yield (item, result, base-model queries) as each finishes.

    Fixed-n runs certify small groups that share forward passes; sequential runs stop
    each input as soon as its answer is settled."""
    if config.mode != "fixed":
        for item in items:
            seq = certify_sequential(
                classifier, item.record, config.n0, config.alpha,
                input_seed(config.seed, item.input_id),
                targets=[tuple(t) for t in config.targets] if config.mode == "decision"
                else None, tolerance=config.tolerance, n_min=config.n_min, n_max=config.n,
                max_tokens=config.max_tokens, max_radius=config.max_radius)
            result = Certification(seq.label, np.zeros(0, dtype=np.int64),
                                   seq.p_lower, None, seq.max_tokens, seq.l2_radius, seq.time_s)
            yield item, result, seq.queries
        return
    for start in range(0, len(items), group):
        chunk = items[start: start + group]
        results = classifier.certify_many(
            [it.record for it in chunk], config.n0, config.n, config.alpha,
            [input_seed(config.seed, it.input_id) for it in chunk], config.p_upper,
            config.max_tokens)
        for item, result in zip(chunk, results, strict=True):
            yield item, result, config.n0 + config.n


def run_local(config: RunConfig, items: list[Item], store: RunStore,
              classifier: SmoothedClassifier, on_done: Callable[[int], None]) -> None:
    for item, result, queries in certify_items(classifier, config, items):
        store.write(item.idx, item.input_id, item.label, result, queries)
        on_done(queries)


def run_ray(config: RunConfig, items: list[Item], store: RunStore, device: str,
            batch_size: int, on_done: Callable[[int], None], workers: int = 2,
            address: str | None = None) -> None:
    """Shard inputs over Ray actors, one model replica each (one GPU each on CUDA)."""
    try:
        import ray
    except ImportError:
        raise ValueError("--backend ray needs Ray: pip install 'hybridcert[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, num_cpus=None if address else workers,
                 include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        gpus = 1 if device.startswith("cuda") else 0
        actor_class = ray.remote(num_cpus=1, num_gpus=gpus)(_Worker)
        actors = [actor_class.remote(config, device, batch_size) for _ in range(workers)]
        if items:
            ray.get(actors[0].check.remote(items[0]))
        pending = {}
        queue = list(items)
        for actor in actors:
            if queue:
                item = queue.pop(0)
                pending[actor.certify.remote(item)] = (actor, item)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            actor, item = pending.pop(done[0])
            result, queries = ray.get(done[0])
            store.write(item.idx, item.input_id, item.label, result, queries)
            on_done(queries)
            if queue:
                nxt = queue.pop(0)
                pending[actor.certify.remote(nxt)] = (actor, nxt)
    finally:
        if started_here:
            ray.shutdown()


class _Worker:
    """A Ray actor holding one model replica."""

    def __init__(self, config: RunConfig, device: str, batch_size: int):
        torch.set_num_threads(1)
        self.config = config
        self.classifier = build_classifier(config, device, batch_size)

    def check(self, item: Item) -> None:
        check_fit(self.classifier, item)

    def certify(self, item: Item):
        _, result, queries = next(certify_items(self.classifier, self.config, [item]))
        return result, queries
