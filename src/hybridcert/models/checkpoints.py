"""Trained filters on disk: the training recipe shared by ``make serve``'s demo model and the
benchmark, and a cache of checkpoints trained once and reused.

Checkpoints live under ``<cache>/models/<config name>_e<epochs>_n<train records>_v<dataset
version>`` (safetensors + JSON, :func:`hybridcert.models.fusion.save`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hybridcert.datasets import safety
from hybridcert.models import fusion, training


@dataclass(frozen=True)
class Recipe:
    """How the demo filters are trained: split sizes, epochs, MiniLM layers kept, the
    dataset's seed and where data and checkpoints are cached (the benchmark's defaults)."""

    n_train: int = 6000
    n_val: int = 1000
    n_test: int = 1000
    epochs: int = 8
    text_layers: int = 1
    data_seed: int = 0
    cache: Path = Path("artifacts")


#: The recipe of ``make serve``'s model and the benchmark's filters.
RECIPE = Recipe()
#: File beside a checkpoint recording how long its training took.
TRAINING_RECORD = "training.json"


def checkpoint_dir(cache: Path, config: fusion.FilterConfig, epochs: int, n_train: int) -> Path:
    """Where the checkpoint of ``config`` trained ``epochs`` epochs on ``n_train`` records
    lives."""
    return Path(cache) / "models" / f"{config.name}_e{epochs}_n{n_train}_v{safety.VERSION}"



def load_or_train(cache: Path, config: fusion.FilterConfig, train_data: safety.SafetyData,
                  epochs: int, log: Callable[[str], None] = print
                  ) -> tuple[fusion.SafetyFilter, float]:
    """The checkpoint of ``config`` (trained first if absent) and its training time in
    seconds (when reused: the time recorded beside it when it was trained, 0 without one)."""
    directory = checkpoint_dir(cache, config, epochs, len(train_data))
    try:
        model = fusion.load(directory)
        log(f"reusing {directory}")
        try:
            recorded = json.loads((directory / TRAINING_RECORD).read_text())["seconds"]
            return model, float(recorded)
        except (OSError, ValueError, KeyError, TypeError):
            return model, 0.0
    except FileNotFoundError:
        pass
    log(f"training {directory.name} ...")
    start = time.perf_counter()
    model = training.train(config, train_data, epochs=epochs, log=lambda m: log("  " + m))
    seconds = time.perf_counter() - start
    fusion.save(model, directory)
    (directory / TRAINING_RECORD).write_text(json.dumps({"seconds": round(seconds, 1)}))
    log(f"  trained in {seconds:.0f} s")
    return model, seconds



def demo_filter_config(level: tuple[float, float] = (0.25, 0.75), seed: int = 0
                       ) -> fusion.FilterConfig:
    """The ``make serve`` model's :class:`~hybridcert.models.fusion.FilterConfig`: both
    modalities at ``level`` (sigma, keep) — the full benchmark's first level —, ``seed``,
    :data:`RECIPE`'s MiniLM layers."""
    sigma, keep = level
    return fusion.FilterConfig(("image", "text"), text_layers=RECIPE.text_layers, sigma=sigma,
                               keep_prob=keep, seed=seed)


def demo_checkpoint(log: Callable[[str], None] = print) -> Path:
    """The folder of the ``make serve`` model's checkpoint (the full benchmark's seed-0 filter
    at keep 0.75, trained with :data:`RECIPE`; trained first if absent)."""
    config = demo_filter_config()
    directory = checkpoint_dir(RECIPE.cache, config, RECIPE.epochs, RECIPE.n_train)
    if not ((directory / "config.json").is_file() and
            (directory / "model.safetensors").is_file()):
        log(f"training the demo model into {directory} (once; about a minute on 2 cores) ...")
        data = safety.splits(RECIPE.n_train, RECIPE.n_val, RECIPE.n_test, RECIPE.data_seed,
                             RECIPE.cache / "data")
        load_or_train(RECIPE.cache, config, data["train"], RECIPE.epochs, log)
    return directory
