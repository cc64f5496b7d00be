"""Tiny base classifiers for run tests (importable as entry points), each bringing its own
text handling: a word-level tokenizer with its own ids, as a user's model would."""

import os
import time

import torch

from hybridcert.adapters import ModelAdapter
from hybridcert.blocks import TextEncoder, Vocabulary

PAD, CLS, SEP, UNK, MASK = 0, 1, 2, 3, 4
WORDS = ("i", "will", "hurt", "you", "with", "this", "we", "bake", "a", "cake", "together",
         "lovely", "day", "at", "the", "park", "want", "to", "attack", "them", "tonight", "!")


def word_encoder(words=WORDS, max_length=12):
    """A word-level tokenizer: [CLS] w1 w2 ... [SEP], unknown words -> [UNK]; ids from 5."""
    index = {w: 5 + i for i, w in enumerate(dict.fromkeys(words))}

    def encode(text):
        return [CLS] + [index.get(w, UNK) for w in text.lower().split()] + [SEP]

    vocab = Vocabulary(torch.arange(5, 5 + len(index)), mask_id=MASK)
    return TextEncoder(encode, vocab, PAD, max_length, name="toy-words"), index


def factory():
    delay = float(os.environ.get("TOY_MODEL_DELAY", "0"))
    encoder, index = word_encoder()
    harmful = torch.tensor([index["hurt"], index["attack"]])

    def model(batch):
        if delay:
            time.sleep(delay)
        hits = torch.isin(batch["text"], harmful) & (batch["text_attention"] > 0)
        score = batch["image"].flatten(1).mean(1) + 0.1 * hits.sum(1)
        return (score > 0.6).long()

    return ModelAdapter(model, text={"text": encoder}, num_classes=2, name="toy")


def bare_factory():
    """A model without text handling: a noised text block must be refused."""
    return lambda batch: torch.zeros(len(batch["image"]), dtype=torch.long)


def broken_factory():
    encoder, _ = word_encoder()

    def model(batch):
        raise RuntimeError("shape mismatch in layer 3")

    return ModelAdapter(model, text={"text": encoder})


def nan_factory():
    encoder, _ = word_encoder()

    def model(batch):
        return torch.full((len(batch["image"]), 2), float("nan"))

    return ModelAdapter(model, text={"text": encoder})


def threshold_factory(threshold: float, harmful: list | None = None, *, name: str = "toy"):
    """The toy model with factory arguments (``--model-arg threshold=0.6``): an input is
    class 1 iff its image mean plus 0.1 per harmful word exceeds ``threshold``."""
    encoder, index = word_encoder()
    words = torch.tensor([index[w] for w in (harmful or ["hurt", "attack"])])

    def model(batch):
        hits = torch.isin(batch["text"], words) & (batch["text_attention"] > 0)
        score = batch["image"].flatten(1).mean(1) + 0.1 * hits.sum(1)
        return (score > float(threshold)).long()

    return ModelAdapter(model, text={"text": encoder}, num_classes=2, name=name)


def interrupting_factory():
    """:func:`factory` whose model is interrupted (Ctrl-C) on call ``TOY_MODEL_STOP_AT``."""
    adapter = factory()
    stop_at, calls = int(os.environ["TOY_MODEL_STOP_AT"]), []

    def model(batch):
        calls.append(len(batch["image"]))
        if len(calls) == stop_at:
            raise KeyboardInterrupt
        return adapter.model(batch)

    return ModelAdapter(model, text=adapter.text, num_classes=2, name="toy")


#: The word :func:`failing_factory`'s model raises on; its tokenizer gives it an id outside the
#: vocabulary, so noise never removes it from its row nor puts it into another.
MARKER, MARKER_ID = "boom", 99


def failing_factory():
    """:func:`factory` whose model raises on every batch holding a row with ``MARKER``
    (unless ``TOY_MODEL_FIXED=1``: the same model, fixed)."""
    adapter = factory()
    fixed = os.environ.get("TOY_MODEL_FIXED") == "1"
    encoder, _ = word_encoder()

    def encode(text):
        ids = list(encoder.encode_ids(text))
        marked = [MARKER_ID if w == MARKER else t
                  for w, t in zip(text.lower().split(), ids[1:-1], strict=True)]
        return [ids[0], *marked, ids[-1]]

    def model(batch):
        if not fixed and bool(((batch["text"] == MARKER_ID) & (batch["text_attention"] > 0)).any()):
            raise RuntimeError(f"unknown word {MARKER!r}")
        return adapter.model(batch)

    text = TextEncoder(encode, encoder.vocabulary, PAD, encoder.max_length, name="toy-words")
    return ModelAdapter(model, text={"text": text}, num_classes=2, name="toy")
