"""Adapters that turn any model into a batch -> labels function."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch


class ModelOutputError(ValueError):
    """The base classifier returned something that cannot be counted as a class."""


class BaseClassifier:
    """Wraps a ``torch.nn.Module`` or any callable on a batch.

    The wrapped object receives one dict per batch: ``{name: tensor}`` for continuous
    blocks (shape ``(B, *block_shape)``) and, for a token block ``name``, ``name`` (ids,
    ``(B, L)``) plus ``name + "_attention"`` (``(B, L)``, 0 over padding).  It may return
    logits ``(B, C)`` or labels ``(B,)``, as torch tensors or numpy arrays.  Logits that are
    NaN or infinite are refused (an argmax over them would count a class the model never
    chose).

    Parameters
    ----------
    model : torch.nn.Module or callable
    device : str or torch.device
        Where noise is drawn and the model runs ("cpu", "cuda", "cuda:1").  A Module is
        moved there and put in eval mode.
    """

    def __init__(self, model: torch.nn.Module | Callable[[dict], Any], device="cpu"):
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") \
                from None
        if self.device.type == "cuda":
            if not torch.cuda.is_available():
                raise ValueError(f"device {device!r} requested but CUDA is not available")
            if self.device.index is not None and self.device.index >= torch.cuda.device_count():
                raise ValueError(f"device {device!r}: only {torch.cuda.device_count()} CUDA "
                                 f"device(s) present")
        elif self.device.type != "cpu":
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        if isinstance(model, torch.nn.Module):
            model = model.to(self.device).eval()
        self.model = model
        self.name = getattr(model, "__name__", None) or type(model).__name__
        self.batches = 0

    @torch.no_grad()
    def labels(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self.batches += 1
        out = self.model(batch)
        if isinstance(out, np.ndarray):
            out = torch.from_numpy(out)
        out = torch.as_tensor(out)
        if out.ndim == 2:
            if out.is_floating_point() or out.is_complex():
                finite = torch.isfinite(out)
                if not bool(finite.all()):
                    row = int(torch.nonzero(~finite.all(dim=1))[0, 0])
                    raise ModelOutputError(
                        f"the base classifier {self.name} returned NaN or infinite logits "
                        f"(batch {self.batches}, row {row} of {out.shape[0]}); such outputs "
                        f"are never counted")
            return out.argmax(dim=1)
        if out.ndim == 1 and not out.is_floating_point() and out.dtype != torch.bool:
            return out.long()
        raise ModelOutputError(
            f"the base classifier {self.name} must return logits (B, C) or integer labels "
            f"(B,), got shape {tuple(out.shape)} and dtype {out.dtype}")
