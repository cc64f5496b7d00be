"""What the model side supplies: the model, and how raw inputs become its blocks.

A ``--model module:factory`` entry point, a checkpoint loader or an adapter for a model
family (CLIP-style classifiers, VLM guards) returns a :class:`ModelAdapter`.  Everything that
depends on the model — its tokenizer and noisable ids, its image size — comes from here;
hybridcert never substitutes another model's preprocessing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hybridcert.adapters.images import ImageProcessor
from hybridcert.blocks import TextEncoder


@dataclass
class ModelAdapter:
    """A base model with its preprocessing.

    Parameters
    ----------
    model : torch.nn.Module or callable
        Batch dict -> logits ``(B, C)`` or labels ``(B,)`` (see
        :class:`~hybridcert.smoothing.BaseClassifier`).  Normalisation of images belongs
        here, after the noise.
    text : {block name: TextEncoder}
        How each token block's text becomes ids (tokenizer, noisable ids, padding, length).
    images : {block name: ImageProcessor}
        How each image block is loaded (size, resizing policy, colour mode).
    num_classes : int, optional
        Classes the model predicts (a run's ``num_classes`` must agree).
    class_names : sequence of str, optional
        Names of the classes, index = class (e.g. ``["safe", "unsafe"]``).
    name : str
        Shown in run reports and plots.
    """

    model: Callable[..., Any] | None = None
    text: Mapping[str, TextEncoder] = field(default_factory=dict)
    images: Mapping[str, ImageProcessor] = field(default_factory=dict)
    num_classes: int | None = None
    class_names: Sequence[str] | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if self.model is None or not callable(self.model):
            raise ValueError("ModelAdapter.model must be a torch module or a callable on batches")
        for block, encoder in self.text.items():
            if not isinstance(encoder, TextEncoder):
                raise ValueError(f"text[{block!r}] must be a TextEncoder, got "
                                 f"{type(encoder).__name__}")
        for block, processor in self.images.items():
            if not isinstance(processor, ImageProcessor):
                raise ValueError(f"images[{block!r}] must be an ImageProcessor, got "
                                 f"{type(processor).__name__}")
        if self.class_names is not None and self.num_classes is not None and \
                len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} names but num_classes "
                             f"is {self.num_classes}")
        if not self.name:
            self.name = getattr(self.model, "__name__", None) or type(self.model).__name__

    @classmethod
    def wrap(cls, obj: Any) -> ModelAdapter:
        """An adapter as is, or a bare model (no text handling, images taken as they are)."""
        if isinstance(obj, ModelAdapter):
            return obj
        return cls(obj)

    def describe(self) -> dict:
        return {"name": self.name, "num_classes": self.num_classes,
                "class_names": None if self.class_names is None else list(self.class_names),
                "text": {k: v.describe() for k, v in self.text.items()},
                "images": {k: v.describe() for k, v in self.images.items()}}

