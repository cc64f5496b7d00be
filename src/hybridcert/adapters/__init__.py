"""Model adapters: a model together with its own preprocessing (tokenizers, image sizes)."""

from hybridcert.adapters.base import ModelAdapter
from hybridcert.adapters.images import ImageError, ImageProcessor, open_image

__all__ = ["ImageError", "ImageProcessor", "ModelAdapter", "open_image"]
