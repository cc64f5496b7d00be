"""Pieces shared by the ``transformers`` adapters: a model's own image processor split at the
noise (geometry before, normalization after) and its tokenizer's special ids.

The noise is added in [0, 1] pixel space at the model's input size: the processor's resize,
crop and rescale run *before* it (:class:`HFImageProcessor`), its mean/std normalization *after*
it, inside the model wrapper (:class:`Normalize`).  The certified L2 radius is then a radius in
the pixels the model sees, in [0, 1] units.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hybridcert.adapters.images import MAX_PIXELS, ImageError, ImageProcessor

#: transformers' message when code names ``CLIPImageProcessor`` (or any ``<Model>ImageProcessor``)
#: without torchvision installed: it then hands out the Pillow class, which is what the
#: adapters use anyway, so the message is noise on every such run.
_TORCHVISION_FALLBACK = re.compile(r"^`\w+ImageProcessor` requires torchvision \(not "
                                   r"installed\); falling back to `\w+ImageProcessorPil`")


class _QuietTorchvisionFallback(logging.Filter):
    """Drops exactly the fallback message above; every other record passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _TORCHVISION_FALLBACK.match(record.getMessage())


def quiet_torchvision_fallback() -> None:
    """Silence transformers' torchvision-fallback warning (and nothing else) from its source
    logger; idempotent.  Importing :mod:`hybridcert.adapters` calls it, and the command line
    imports the adapters before a ``--model`` entry point."""
    source = logging.getLogger("transformers.utils.import_utils")
    if not any(isinstance(f, _QuietTorchvisionFallback) for f in source.filters):
        source.addFilter(_QuietTorchvisionFallback())


quiet_torchvision_fallback()


@dataclass(frozen=True)
class HFImageProcessor(ImageProcessor):
    """A ``transformers`` image processor run without its normalization.

    Build it with :meth:`build` (or ``ImageProcessor.from_hf``).  ``size`` is the processor's
    output ``(height, width)``; every input of another size is resized by the processor itself
    (its resampling, its crop) and the change reported.  ``mean`` and ``std`` are the
    normalization the model must apply after the noise (None when the processor does not
    normalize).
    """

    hf: Any = field(default=None, compare=False, repr=False)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @classmethod
    def build(cls, image_processor, *, max_pixels: int = MAX_PIXELS) -> HFImageProcessor:
        """From a ``transformers`` image processor with a fixed output size and rescaling to
        [0, 1]; processors that tile an image into several crops (LLaVA-NeXT/OneVision
        "anyres") are refused here: noise on overlapping crops is not noise on the image (see
        :class:`hybridcert.adapters.tiled.RawImageProcessor`)."""
        if not callable(image_processor):
            raise ValueError(f"image_processor must be a transformers image processor, got "
                             f"{type(image_processor).__name__}")
        name = type(image_processor).__name__
        if getattr(image_processor, "do_rescale", True) is False or not math.isclose(
                float(getattr(image_processor, "rescale_factor", 1 / 255)), 1 / 255,
                rel_tol=1e-6):
            raise ValueError(f"{name} must rescale pixels by 1/255 to [0, 1] (do_rescale=True, "
                             f"rescale_factor=1/255): the noise is added in [0, 1] pixel space")
        shapes = {tuple(_run(image_processor, _probe(h, w)).shape)
                  for h, w in ((37, 53), (61, 29))}
        if any(len(s) == 4 for s in shapes):
            raise ValueError(f"{name} gives pixel values of shape {sorted(shapes)[0]}, not one "
                             f"(3, H, W) image: a multi-crop ('anyres') processor must run "
                             f"after the noise (vlm_guard(..., raw_size=(H, W)))")
        if len(shapes) != 1:
            raise ValueError(f"{name} gives images of varying size {sorted(shapes)}; the "
                             f"adapters need a fixed input size")
        shape = shapes.pop()
        if len(shape) != 3 or shape[0] != 3:
            raise ValueError(f"{name} gives pixel values of shape {shape}, not one (3, H, W) "
                             f"image")
        mean = std = None
        if getattr(image_processor, "do_normalize", False):
            mean = tuple(float(m) for m in _per_channel(image_processor.image_mean, "mean"))
            std = tuple(float(s) for s in _per_channel(image_processor.image_std, "std"))
        resize = "shortest_edge_crop" if getattr(image_processor, "do_center_crop", False) \
            else "resize"
        return cls(size=(int(shape[1]), int(shape[2])), resize=resize, mode="RGB",
                   max_pixels=max_pixels, hf=image_processor, mean=mean, std=std)

    def process(self, image) -> tuple[torch.Tensor, list[str]]:
        changes = []
        if image.mode != self.mode:
            changes.append(f"colour mode {image.mode} -> {self.mode}")
            image = image.convert(self.mode)
        tensor = _run(self.hf, image)
        if tuple(tensor.shape) != (3, *self.size):
            raise ImageError(f"{type(self.hf).__name__} gave shape {tuple(tensor.shape)}, "
                             f"expected {(3, *self.size)}")
        if (image.height, image.width) != self.size:
            h, w = self.size
            changes.append(f"{type(self.hf).__name__} {self.resize} {image.width}x"
                           f"{image.height} -> {w}x{h}")
        return tensor, changes

    def normalize(self) -> Normalize:
        """The module the model applies to the (noisy) pixels: ``(x - mean) / std``."""
        return Normalize(self.mean, self.std)

    @property
    def space(self) -> str:
        h, w = self.size
        return (f"pixels in [0, 1] at {w}x{h}, after {type(self.hf).__name__}'s resize and "
                f"crop, before its normalization")

    def describe(self) -> dict:
        return {"size": self.size, "resize": f"{type(self.hf).__name__}: {self.resize}",
                "mode": self.mode, "mean": self.mean, "std": self.std, "space": self.space}


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel of a ``(B, C, H, W)`` batch; identity when None."""

    def __init__(self, mean: Sequence[float] | None, std: Sequence[float] | None):
        super().__init__()
        self.active = mean is not None
        shape = (1, -1, 1, 1)
        self.register_buffer("mean", torch.tensor(mean or [0.0]).reshape(shape))
        self.register_buffer("std", torch.tensor(std or [1.0]).reshape(shape))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return pixels
        return (pixels - self.mean.to(pixels.dtype)) / self.std.to(pixels.dtype)


def special_ids(tokenizer) -> set[int]:
    """Every special id of a ``transformers`` tokenizer: its named specials and every added
    token marked special (image placeholders, chat markers)."""
    ids = {int(i) for i in tokenizer.all_special_ids}
    decoder = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    ids |= {int(i) for i, token in decoder.items() if getattr(token, "special", False)}
    return ids


def _probe(height: int, width: int):
    from PIL import Image

    return Image.new("RGB", (width, height), (128, 64, 32))


def _run(image_processor, image) -> torch.Tensor:
    out = image_processor(images=image, do_normalize=False, return_tensors="pt")
    pixels = out["pixel_values"]
    pixels = torch.as_tensor(pixels)
    if pixels.ndim >= 4 and pixels.shape[0] == 1:
        pixels = pixels[0]
    return pixels.float().contiguous()


def _per_channel(values, what: str) -> list[float]:
    values = [values] * 3 if isinstance(values, (int, float)) else list(values)
    if len(values) != 3:
        raise ValueError(f"image {what} must have 3 channels, got {values}")
    return values
