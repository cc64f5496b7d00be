"""A CLIP entry point written as most user code is: it names ``CLIPImageProcessor``, which
transformers resolves to the Pillow class when torchvision is missing (with a warning)."""

from transformers import CLIPImageProcessor  # noqa: F401  (the name users import)

from hybridcert.adapters.examples import tiny_clip


def factory():
    return tiny_clip(seed=0)
