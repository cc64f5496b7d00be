"""The benchmark's models at inference: a copy for fast forward passes, and label functions
that reuse what does not depend on the noise (checkpoints: :mod:`hybridcert.models.checkpoints`).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from hybridcert.models import fusion


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
            device = model_device(self.model)      # the records stay on the CPU
            with torch.no_grad():
                if self.fixed == "image":
                    self._cache[owner] = self.model.image_features(
                        record["image"][None].to(device))[0]
                else:
                    block = record["text"]
                    attention = torch.ones_like(block.ids) if block.attention is None \
                        else block.attention
                    self._cache[owner] = self.model.text_features(
                        block.ids[None].to(device), attention[None].to(device))[0]
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


def model_device(model) -> torch.device:
    """The device of a module's parameters (the CPU without any)."""
    parameter = next(iter(model.parameters()), None) if isinstance(model, torch.nn.Module) \
        else None
    return torch.device("cpu") if parameter is None else parameter.device


class OnDevice(torch.nn.Module):
    """A filter on an accelerator seen from CPU tensors: each batch is moved to the filter's
    device and the logits come back on the CPU (the attacks, :mod:`hybridcert.attacks`, keep
    their tensors and generators on the CPU).  ``text_encoder`` is the filter's (HotFlip
    candidates).  Use :func:`on_cpu_side`, which returns a filter on the CPU itself."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.device = model_device(model)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model({k: v.to(self.device) for k, v in batch.items()}).float().cpu()

    @property
    def text_encoder(self):
        return self.model.text_encoder


def on_cpu_side(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` taking and returning CPU tensors: itself on the CPU, else :class:`OnDevice`."""
    return model if model_device(model).type == "cpu" else OnDevice(model)


__all__ = ["CachedModality", "FastFilter", "OnDevice", "model_device", "on_cpu_side"]
