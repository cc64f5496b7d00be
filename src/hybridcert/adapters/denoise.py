"""Denoised smoothing (Salman et al. 2020; Carlini et al. 2023): a denoiser applied to the
noisy image batch before the base model.

The smoothed classifier is then ``g(x) = argmax_c P(model(denoiser(x + noise)) = c)``: the
denoiser is part of the base classifier, so the certificate is unchanged and holds for any
denoiser.  It sees the noisy pixels in the block's own space ([0, 1] pixels for the adapters of
this package, before the model's normalization).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from hybridcert.adapters.base import ModelAdapter


class Denoised(nn.Module):
    """``batch -> model(batch with block replaced by denoiser(batch[block]))``.

    Parameters
    ----------
    model : callable
        The base model on batch dicts (an adapter's model: normalization inside).
    denoiser : callable
        ``(B, C, H, W) -> (B, C, H, W)`` on noisy pixels; called as ``denoiser(x, sigma)``
        when ``sigma`` is given (a diffusion denoiser needs the noise level).
    block : str
        The continuous block to denoise.
    sigma : float, optional
        The Gaussian noise level of the block, passed to the denoiser.
    """

    def __init__(self, model: Callable, denoiser: Callable, block: str = "image",
                 sigma: float | None = None):
        super().__init__()
        if not callable(model) or not callable(denoiser):
            raise ValueError("Denoised needs a callable model and a callable denoiser")
        self.model, self.denoiser = model, denoiser
        self.block, self.sigma = block, sigma

    def forward(self, batch: dict):
        if self.block not in batch:
            raise ValueError(f"the batch has no block {self.block!r} to denoise (blocks: "
                             f"{sorted(batch)})")
        noisy = batch[self.block]
        clean = self.denoiser(noisy) if self.sigma is None else self.denoiser(noisy, self.sigma)
        if not isinstance(clean, torch.Tensor) or clean.shape != noisy.shape:
            shape = tuple(clean.shape) if isinstance(clean, torch.Tensor) else type(clean)
            raise ValueError(f"the denoiser returned {shape} for a {tuple(noisy.shape)} batch; "
                             f"it must return a tensor of the same shape")
        return self.model({**batch, self.block: clean})


def denoised(adapter: ModelAdapter, denoiser: Callable, block: str = "image",
             sigma: float | None = None) -> ModelAdapter:
    """The adapter with its model behind a denoiser on ``block`` (same preprocessing)."""
    adapter = ModelAdapter.wrap(adapter)
    return ModelAdapter(Denoised(adapter.model, denoiser, block, sigma), text=adapter.text,
                        images=adapter.images, num_classes=adapter.num_classes,
                        class_names=adapter.class_names, name=f"denoised:{adapter.name}")
