"""A CLIP-style image+text classifier: a head on the joint embedding of a CLIP model.

Choice (documented in docs/GUIDE.md): the classifier is ``head(concat(normalize(image_embed),
normalize(text_embed)))`` with a head the user trained (e.g. an ``nn.Linear(2 * D, C)``).
Zero-shot prompts classify an *image* against fixed class texts, which leaves no place for the
user's text; a joint image+text classifier (a safety filter for captioned images) needs a head.

Preprocessing is the model's own: the CLIP image processor resizes and crops before the noise,
the noise is added in [0, 1] pixel space, and the processor's mean/std normalization runs
after it, inside :class:`CLIPClassifier`.  Text goes through the model's tokenizer; its special
ids (BOS/EOS, padding) are not in the noisable set, so noise never writes or removes them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hybridcert.adapters.base import ModelAdapter
from hybridcert.adapters.hf import HFImageProcessor, Normalize
from hybridcert.blocks import TextEncoder


class CLIPClassifier(nn.Module):
    """``batch -> head(concat(image embedding, text embedding))``, logits ``(B, C)``.

    Parameters
    ----------
    clip : transformers.CLIPModel (or any model with ``get_image_features`` and
        ``get_text_features``)
    head : nn.Module
        ``(B, 2 * projection_dim) -> (B, C)`` logits.
    normalize : Normalize
        The image processor's normalization, applied to the (noisy) [0, 1] pixels.
    image_block, text_block : str
        Batch keys of the pixels ``(B, 3, H, W)`` and token ids ``(B, L)`` (with
        ``text_block + "_attention"``).
    unit_features : bool
        L2-normalize each embedding before the head (as CLIP's similarity does).
    """

    def __init__(self, clip: nn.Module, head: nn.Module, normalize: Normalize, *,
                 image_block: str = "image", text_block: str = "text",
                 unit_features: bool = True):
        super().__init__()
        self.clip, self.head, self.normalize = clip, head, normalize
        self.image_block, self.text_block = image_block, text_block
        self.unit_features = unit_features

    def features(self, batch: dict) -> torch.Tensor:
        pixels = self.normalize(batch[self.image_block])
        ids = batch[self.text_block]
        attention = batch.get(self.text_block + "_attention")
        image = _pooled(self.clip.get_image_features(pixel_values=pixels))
        text = _pooled(self.clip.get_text_features(input_ids=ids, attention_mask=attention))
        if self.unit_features:
            image = nn.functional.normalize(image, dim=-1)
            text = nn.functional.normalize(text, dim=-1)
        return torch.cat([image, text], dim=-1)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.head(self.features(batch))


def clip_adapter(model: nn.Module, processor=None, *, head: nn.Module,
                 image_processor=None, tokenizer=None, max_length: int | None = None,
                 num_classes: int | None = None, class_names: Sequence[str] | None = None,
                 image_block: str = "image", text_block: str = "text",
                 truncate: bool = False, unit_features: bool = True,
                 name: str = "") -> ModelAdapter:
    """A :class:`ModelAdapter` for a CLIP image+text classifier.

    Parameters
    ----------
    model : transformers.CLIPModel
    processor : transformers.CLIPProcessor, optional
        Supplies ``image_processor`` and ``tokenizer`` (or give those two).
    head : nn.Module
        ``(B, 2 * projection_dim) -> (B, C)``; trained by the user.
    max_length : int, optional
        Longest text in tokens (default: the tokenizer's ``model_max_length``); must fit the
        text encoder's position embeddings.
    num_classes : int, optional
        Default: ``head.out_features`` when the head has it.
    truncate : bool
        Cut longer texts (reported per row) instead of refusing them.

    Returns
    -------
    ModelAdapter
        ``model``: a :class:`CLIPClassifier` (normalization inside); ``images[image_block]``:
        the processor's geometry (:class:`HFImageProcessor`); ``text[text_block]``: the
        tokenizer with its special ids excluded from the noisable set.
    """
    image_processor = image_processor or getattr(processor, "image_processor", None)
    tokenizer = tokenizer or getattr(processor, "tokenizer", None)
    if image_processor is None or tokenizer is None:
        raise ValueError("clip_adapter needs the model's image processor and tokenizer (a "
                         "processor, or image_processor= and tokenizer=)")
    if not isinstance(head, nn.Module):
        raise ValueError(f"head must be a torch module mapping (B, 2 * D) features to logits, "
                         f"got {type(head).__name__}")
    images = HFImageProcessor.build(image_processor)
    encoder = text_encoder(tokenizer, max_length, truncate=truncate)
    positions = _text_positions(model)
    if positions is not None and encoder.max_length > positions:
        raise ValueError(f"max_length {encoder.max_length} exceeds the text encoder's "
                         f"{positions} position embeddings")
    classes = num_classes or getattr(head, "out_features", None)
    classifier = CLIPClassifier(model, head, images.normalize(), image_block=image_block,
                                text_block=text_block, unit_features=unit_features)
    return ModelAdapter(classifier, text={text_block: encoder}, images={image_block: images},
                        num_classes=classes, class_names=class_names,
                        name=name or f"clip:{type(model).__name__}")


def text_encoder(tokenizer, max_length: int | None = None, *,
                 truncate: bool = False) -> TextEncoder:
    """:meth:`TextEncoder.from_hf`, with every added special token (not only the named ones)
    kept out of the noisable set."""
    from hybridcert.adapters.hf import special_ids

    special = special_ids(tokenizer)
    noisable = [i for i in range(len(tokenizer)) if i not in special]
    return TextEncoder.from_hf(tokenizer, max_length, truncate=truncate, noisable_ids=noisable)


def _pooled(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    pooled = getattr(output, "pooler_output", None)
    if pooled is None:
        raise ValueError("the CLIP model's features have no pooler_output")
    return pooled


def _text_positions(model) -> int | None:
    config = getattr(model, "config", None)
    text = getattr(config, "text_config", None)
    return getattr(text, "max_position_embeddings", None)
