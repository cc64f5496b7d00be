"""The benchmark's models: checkpoints trained once and reused, an inference copy for fast
forward passes, and label functions that reuse what does not depend on the noise.

Checkpoints live under ``<cache>/models/<config name>_e<epochs>_n<train records>_v<dataset
version>`` (safetensors + JSON, :func:`hybridcert.models.fusion.save`).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from hybridcert.data import safety
from hybridcert.models import fusion, training


def checkpoint_dir(cache: Path, config: fusion.FilterConfig, epochs: int, n_train: int) -> Path:
    """Where the checkpoint of ``config`` trained ``epochs`` epochs on ``n_train`` records
    lives."""
    return Path(cache) / "models" / f"{config.name}_e{epochs}_n{n_train}_v{safety.VERSION}"


#: File beside a checkpoint recording how long its training took.
TRAINING_RECORD = "training.json"


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


class FastFilter(torch.nn.Module):
    """A copy of a :class:`~hybridcert.models.fusion.SafetyFilter` for inference whose CNN runs
    in channels-last memory format (about 25 % more copies per second on 2 CPU cores at batch
    128).  Same weights and arithmetic; results can differ from the original in the last bits
    of the logits (another summation order), never otherwise."""

    def __init__(self, model: fusion.SafetyFilter):
        super().__init__()
        self.model = copy.deepcopy(model).eval()
        if hasattr(self.model, "cnn"):
            self.model.cnn = self.model.cnn.to(memory_format=torch.channels_last)
        self.config = self.model.config

    def _image(self, batch):
        return batch["image"].contiguous(memory_format=torch.channels_last)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "image" in batch and "image" in self.config.modalities:
            batch = {**batch, "image": self._image(batch)}
        return self.model(batch)

    def image_features(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.image_features(image.contiguous(memory_format=torch.channels_last))

    def text_features(self, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        return self.model.text_features(ids, attention)

    def classify(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.classify(features)

    @property
    def text_encoder(self):
        return self.model.text_encoder


class CachedModality:
    """Labels of a two-modality filter when one modality is not noised (image-only or
    text-only smoothing): that modality's features are computed once per input and reused for
    every copy.  Use as ``labels_fn`` of :func:`hybridcert.bench.engine.run_jobs`.

    Parameters
    ----------
    model : FastFilter or SafetyFilter
    fixed : {"image", "text"}
        The modality that is not noised.
    records : list of dict
        The jobs' records, in job order (the owners index them).
    """

    def __init__(self, model, fixed: str, records: list[dict]):
        if fixed not in ("image", "text"):
            raise ValueError(f"fixed must be 'image' or 'text', got {fixed!r}")
        self.model, self.fixed, self.records = model, fixed, records
        self._cache: dict[int, torch.Tensor] = {}

    def _features(self, owner: int) -> torch.Tensor:
        if owner not in self._cache:
            record = self.records[owner]
            with torch.no_grad():
                if self.fixed == "image":
                    self._cache[owner] = self.model.image_features(record["image"][None])[0]
                else:
                    block = record["text"]
                    attention = torch.ones_like(block.ids) if block.attention is None \
                        else block.attention
                    self._cache[owner] = self.model.text_features(block.ids[None],
                                                                  attention[None])[0]
        return self._cache[owner]

    @torch.no_grad()
    def __call__(self, batch: dict[str, torch.Tensor], owners: np.ndarray) -> torch.Tensor:
        cached = torch.stack([self._features(int(o)) for o in owners])
        if self.fixed == "image":
            features = {"image": cached,
                        "text": self.model.text_features(batch["text"], batch["text_attention"])}
        else:
            features = {"image": self.model.image_features(batch["image"]), "text": cached}
        return self.model.classify(features).argmax(1)

    def release(self, owner: int) -> None:
        self._cache.pop(owner, None)


__all__ = ["CachedModality", "FastFilter", "checkpoint_dir", "load_or_train"]
