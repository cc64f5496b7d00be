"""A tiny image+text moderation model for the service tests (importable as an entry point):
8x8 RGB images, a word-level tokenizer of its own, class 1 = unsafe.

The unsafe score is the image's mean brightness plus 0.3 when a harmful word is present
(and attended): a bright image is unsafe whatever the text, a dark one safe, a mid-grey one
unsafe exactly when a harmful word survives the token noise.
"""

import os
import time

import torch

from hybridcert.adapters import ImageProcessor, ModelAdapter
from hybridcert.blocks import TextEncoder, Vocabulary

PAD, CLS, SEP, UNK, MASK = 0, 1, 2, 3, 4
WORDS = ("i", "will", "hurt", "you", "with", "this", "we", "bake", "a", "cake", "together",
         "lovely", "day", "at", "the", "park", "attack", "them", "tonight", "!")
HARMFUL = ("hurt", "attack")


def word_encoder(max_length=12):
    index = {w: 5 + i for i, w in enumerate(WORDS)}

    def encode(text):
        return [CLS] + [index.get(w, UNK) for w in text.lower().split()] + [SEP]

    vocab = Vocabulary(torch.arange(5, 5 + len(index)), mask_id=MASK)
    return TextEncoder(encode, vocab, PAD, max_length, name="toy-words"), index


class ToyModerator(torch.nn.Module):
    """Logits (safe, unsafe); ``delay`` seconds of sleep per batch (timeouts, queueing)."""

    def __init__(self, harmful_ids, delay=0.0):
        super().__init__()
        self.register_buffer("harmful", torch.tensor(harmful_ids))
        self.scale = torch.nn.Parameter(torch.tensor(20.0), requires_grad=False)
        self.delay = delay

    def forward(self, batch):
        if self.delay:
            time.sleep(self.delay)
        hits = torch.isin(batch["text"], self.harmful) & (batch["text_attention"] > 0)
        score = batch["image"].flatten(1).mean(1) + 0.3 * hits.any(1).float()
        unsafe = self.scale * (score - 0.7)
        return torch.stack([-unsafe, unsafe], dim=1)


def factory(delay=None):
    delay = float(os.environ.get("TOY_SERVE_DELAY", "0")) if delay is None else delay
    encoder, index = word_encoder()
    model = ToyModerator([index[w] for w in HARMFUL], delay)
    return ModelAdapter(model, text={"text": encoder},
                        images={"image": ImageProcessor((8, 8), resize="resize")},
                        num_classes=2, class_names=["safe", "unsafe"], name="toy-moderator")


def broken_factory():
    adapter = factory(0.0)

    def model(batch):
        raise RuntimeError("shape mismatch in layer 3")

    return ModelAdapter(model, text=adapter.text, images=adapter.images, num_classes=2)


#: A text that encodes to a special id the fragile model cannot take (as ``<image>`` does for
#: a LLaVA guard given no image features): the noise never touches it (not in the vocabulary).
MARKER = "<image>"
MARKER_ID = 30


class FragileModerator(ToyModerator):
    """The toy model, but it raises on a batch holding any row with the marker id; it counts
    the calls it failed that also held rows without it."""

    def __init__(self, harmful_ids, delay=0.0):
        super().__init__(harmful_ids, delay)
        self.mixed_failures = 0

    def forward(self, batch):
        marked = ((batch["text"] == MARKER_ID) & (batch["text_attention"] > 0)).any(1)
        if marked.any():
            if not marked.all():
                self.mixed_failures += 1
            raise ValueError("Image features and image tokens do not match: tokens 1, "
                             "features 0")
        return super().forward(batch)


def fragile_factory(delay=0.0):
    index = {w: 5 + i for i, w in enumerate(WORDS)}

    def encode(text):
        return [CLS] + [MARKER_ID if w == MARKER else index.get(w, UNK)
                        for w in text.lower().split()] + [SEP]

    vocab = Vocabulary(torch.arange(5, 5 + len(index)), mask_id=MASK)
    encoder = TextEncoder(encode, vocab, PAD, 12, name="toy-words")
    model = FragileModerator([index[w] for w in HARMFUL], delay)
    return ModelAdapter(model, text={"text": encoder},
                        images={"image": ImageProcessor((8, 8), resize="resize")},
                        num_classes=2, class_names=["safe", "unsafe"], name="fragile-moderator")
