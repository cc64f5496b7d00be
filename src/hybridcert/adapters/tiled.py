"""Tiled ("anyres") image processors: the noise is added to the raw image, the model's whole
image processor runs after it, inside the classifier.

LLaVA-NeXT and LLaVA-OneVision processors cut an image into a low-resolution view plus
high-resolution crops; one pixel lands in several crops at different scales, so Gaussian noise
added to the crops is not Gaussian noise on any image.  Here the image is instead fixed at a
raw size the adapter states (every input resized to it once, the change reported), the noise
is added to those raw pixels in [0, 1], and each noisy copy then goes through the model's own
image processor (tiling, resizing, normalization) inside the base classifier.  Any
deterministic processor is part of the base classifier, so the certificate holds as stated:
its L2 ball is in **raw pixel space at the stated size**, not in the pixels the model sees.

Each noisy copy is clamped to [0, 1] and rounded to 8 bits before the processor, as the
processor's Pillow path rounds every image it resizes anyway: the processor then sees exactly
the image it would see as a PIL image, and a clean copy is the clean image.  The processor runs
once per batch (its own per-image loop), on the CPU; no gradient flows through it.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from hybridcert.adapters.images import MAX_PIXELS, ImageProcessor


@dataclass(frozen=True)
class RawImageProcessor(ImageProcessor):
    """An image block of raw pixels in [0, 1] at a fixed size, for a model whose own image
    processor runs after the noise (:class:`ProcessorInputs`).

    Build it with :meth:`build`.  Inputs of another size are resized to ``size`` (Pillow
    bilinear) and the change reported; the model's processor then sees every noisy copy at
    that size.
    """

    hf: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def build(cls, image_processor, raw_size, *,
              max_pixels: int = MAX_PIXELS) -> RawImageProcessor:
        """From a ``transformers`` image processor and the raw ``(height, width)``; the
        processor is run once on a probe of that size (it must accept a PIL image)."""
        if not callable(image_processor):
            raise ValueError(f"image_processor must be a transformers image processor, got "
                             f"{type(image_processor).__name__}")
        size = _raw_size(raw_size)
        out = cls(size=size, resize="resize", mode="RGB", max_pixels=max_pixels,
                  hf=image_processor)
        out.inputs()(torch.zeros(1, 3, *size))      # fails here, not mid-run
        return out

    @property
    def space(self) -> str:
        h, w = self.size
        return (f"raw pixels in [0, 1] at {w}x{h}, before {type(self.hf).__name__} (its "
                f"tiling, resizing and normalization run inside the classifier on each noisy "
                f"copy)")

    def inputs(self, accepted: set[str] | None = None) -> ProcessorInputs:
        """The module that turns noisy raw pixels into the model's image arguments."""
        return ProcessorInputs(self.hf, accepted)

    def describe(self) -> dict:
        return {"size": self.size, "resize": self.resize, "mode": self.mode,
                "processor": f"{type(self.hf).__name__} (after the noise)",
                "space": self.space}


class ProcessorInputs(nn.Module):
    """``(B, 3, H, W)`` noisy raw pixels -> the model's image arguments
    (``{"pixel_values": ..., "image_sizes": ...}``), by the model's own image processor.

    Each copy is clamped to [0, 1], rounded to 8 bits and handed to the processor as a PIL
    image; the batch is one processor call.  The outputs are moved to the input's device.

    Parameters
    ----------
    image_processor : transformers image processor
    accepted : set of str, optional
        Names the model's forward takes; processor outputs not among them are dropped (None:
        keep all).
    workers : int, optional
        Threads the batch is split across (contiguous chunks, joined in order; Pillow and
        numpy release the GIL); default: the machine's cores, at most 16.  The output does not
        depend on it.
    """

    def __init__(self, image_processor, accepted: set[str] | None = None,
                 workers: int | None = None):
        super().__init__()
        self.hf = image_processor
        self.accepted = None if accepted is None else set(accepted)
        if workers is None:
            workers = min(16, os.cpu_count() or 1)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        self.workers = workers
        self._pool = None

    @torch.no_grad()
    def forward(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        from PIL import Image

        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) pixels, got {tuple(pixels.shape)}")
        data = (pixels.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
        array = data.permute(0, 2, 3, 1).cpu().numpy()
        images = [Image.fromarray(np.ascontiguousarray(a), "RGB") for a in array]
        size = -(-len(images) // min(self.workers, len(images)))
        chunks = [images[i: i + size] for i in range(0, len(images), size)]
        if len(chunks) == 1:
            parts = [self._run(chunks[0])]
        else:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self.workers,
                                                thread_name_prefix="hybridcert-processor")
            parts = list(self._pool.map(self._run, chunks))
        return {key: torch.cat([part[key] for part in parts]).to(pixels.device)
                for key in parts[0]}

    def _run(self, images: list) -> dict[str, torch.Tensor]:
        out = self.hf(images=images, return_tensors="pt")
        result = {key: torch.as_tensor(value) for key, value in out.items()
                  if self.accepted is None or key in self.accepted}
        if "pixel_values" not in result:
            raise ValueError(f"{type(self.hf).__name__} gave no pixel_values")
        return result

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_pool"] = None
        return state


def forward_arguments(function) -> set[str] | None:
    """Names a function (a module: its ``forward``) takes by keyword."""
    function = getattr(function, "forward", function)
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return None
    return {name for name, p in parameters.items()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def image_token_count(model: nn.Module, inputs: dict[str, torch.Tensor]) -> int:
    """How many image tokens the prompt needs for one image: the number of image features the
    model itself produces for it (``model.get_image_features``), which is what its forward
    checks the prompt against."""
    get = getattr(model, "get_image_features", None)
    if get is None:
        raise ValueError(f"{type(model).__name__} has no get_image_features; a tiled guard "
                         f"needs a LLaVA-NeXT / OneVision-style model")
    names = forward_arguments(get)
    try:
        parameter = next(model.parameters())
        device, dtype = parameter.device, parameter.dtype
    except (StopIteration, AttributeError, TypeError):
        device, dtype = None, None
    kwargs = {}
    for key, value in inputs.items():
        if names is None or key in names:
            value = value.to(device) if device is not None else value
            kwargs[key] = value.to(dtype) if key == "pixel_values" and dtype else value
    with torch.no_grad():
        out = get(**kwargs)
    features = getattr(out, "pooler_output", out)
    if isinstance(features, torch.Tensor):
        features = [features]
    total = sum(int(f.numel()) for f in features)
    hidden = int(model.get_input_embeddings().embedding_dim)
    if total % hidden:
        raise ValueError(f"{type(model).__name__} gave {total} image feature values, not a "
                         f"multiple of its hidden size {hidden}")
    return total // hidden


def _raw_size(raw_size) -> tuple[int, int]:
    try:
        size = tuple(raw_size)
    except TypeError:
        size = ()
    if len(size) != 2 or any(isinstance(s, bool) or not isinstance(s, (int, np.integer))
                             or s < 1 for s in size):
        raise ValueError(f"raw_size must be (height, width) positive integers, got "
                         f"{raw_size!r}")
    return int(size[0]), int(size[1])
