"""A user's model with its own 110-word tokenizer that records every id it is given."""

import json
import os

import torch

from hybridcert.adapters import ModelAdapter
from hybridcert.blocks import TextEncoder, Vocabulary

PAD, CLS, SEP, UNK, MASK = 0, 1, 2, 3, 4
WORDS = [f"w{i}" for i in range(105)]          # ids 5..109: V = 105 noisable ids
SIZE = 110


def encoder():
    index = {w: 5 + i for i, w in enumerate(WORDS)}

    def encode(text):
        return [CLS] + [index.get(w, UNK) for w in text.split()] + [SEP]

    return TextEncoder(encode, Vocabulary(torch.arange(5, SIZE), mask_id=MASK), PAD, 16,
                       name="spy-110")


def factory():
    log = os.environ["SPY_LOG"]
    embed = torch.nn.Embedding(SIZE, 4)        # fails on any id outside its vocabulary
    torch.manual_seed(0)

    def model(batch):
        ids = batch["text"]
        with open(log, "a") as handle:
            handle.write(json.dumps({"min": int(ids.min()), "max": int(ids.max()),
                                     "shape": list(ids.shape),
                                     "padding_attended": bool(((ids == PAD) &
                                                               (batch["text_attention"] > 0))
                                                              .any())}) + "\n")
        present = (batch["text_attention"] > 0).unsqueeze(-1)
        text = (embed(ids) * present).sum(1)[:, 0]
        score = batch["image"].flatten(1).mean(1) + 0.05 * text
        return (score > 0.5).long()

    return ModelAdapter(model, text={"text": encoder()}, num_classes=2, name="spy")
