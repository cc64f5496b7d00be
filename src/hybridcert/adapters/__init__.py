"""Model adapters: a model together with its own preprocessing (tokenizers, image sizes).

Families (need the ``hf`` extra): :func:`clip_adapter` (a CLIP image+text classifier),
:func:`vlm_guard` (a generative vision-language guard read in one forward pass; tiled
"anyres" processors run after the noise, :mod:`hybridcert.adapters.tiled`); any model
behind a denoiser: :func:`denoised`.  Example entry points: :mod:`hybridcert.adapters.examples`.
"""

from hybridcert.adapters.base import ModelAdapter
from hybridcert.adapters.clip import CLIPClassifier, clip_adapter
from hybridcert.adapters.denoise import Denoised, denoised
from hybridcert.adapters.hf import HFImageProcessor, Normalize
from hybridcert.adapters.images import (
    ImageError,
    ImageProcessor,
    decode_image,
    open_image,
    read_image_file,
)
from hybridcert.adapters.tiled import ProcessorInputs, RawImageProcessor
from hybridcert.adapters.vlm_guard import GuardClassifier, label_tokens, vlm_guard

__all__ = ["CLIPClassifier", "Denoised", "GuardClassifier", "HFImageProcessor", "ImageError",
           "ImageProcessor", "ModelAdapter", "Normalize", "ProcessorInputs", "RawImageProcessor",
           "clip_adapter", "decode_image", "denoised", "label_tokens", "open_image",
           "read_image_file", "vlm_guard"]
