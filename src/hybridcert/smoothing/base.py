"""Adapters that turn any model into a batch -> labels function."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch


class BaseClassifier:
    """Wraps a ``torch.nn.Module`` or any callable on a batch.

    The wrapped object receives one dict per batch: ``{name: tensor}`` for continuous
    blocks (shape ``(B, *block_shape)``) and, for a token block ``name``, ``name`` (ids,
    ``(B, L)``) plus ``name + "_attention"`` (ones, ``(B, L)``).  It may return logits
    ``(B, C)`` or labels ``(B,)``, as torch tensors or numpy arrays.

    Parameters
    ----------
    model : torch.nn.Module or callable
    device : str or torch.device
        Where noise is drawn and the model runs ("cpu", "cuda", "cuda:1").  A Module is
        moved there and put in eval mode.
    """

    def __init__(self, model: torch.nn.Module | Callable[[dict], Any], device="cpu"):
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        if isinstance(model, torch.nn.Module):
            model = model.to(self.device).eval()
        self.model = model

    @torch.no_grad()
    def labels(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.model(batch)
        if isinstance(out, np.ndarray):
            out = torch.from_numpy(out)
        out = torch.as_tensor(out)
        if out.ndim == 2:
            return out.argmax(dim=1)
        if out.ndim == 1 and not out.is_floating_point():
            return out.long()
        raise ValueError(
            f"the base classifier must return logits (B, C) or integer labels (B,), "
            f"got shape {tuple(out.shape)} and dtype {out.dtype}")
