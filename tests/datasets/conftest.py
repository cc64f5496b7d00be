"""Fixtures: a tiny word-level tokenizer, a model adapter using it, and row writers."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from hybridcert.adapters import ImageProcessor, ModelAdapter
from hybridcert.blocks import TextEncoder

WORDS = ["i", "will", "hurt", "you", "we", "bake", "a", "cake", "lovely", "day", "at", "the",
         "park", "attack", "them", "tonight"]
PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
MAX_LENGTH = 12


def make_encoder(max_length=MAX_LENGTH, truncate=False):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"[PAD]": PAD, "[UNK]": UNK, "[CLS]": CLS, "[SEP]": SEP, "[MASK]": MASK}
    vocab.update({w: 5 + i for i, w in enumerate(WORDS)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", CLS), ("[SEP]", SEP)])
    return TextEncoder.from_tokenizers(tok, max_length, pad_id=PAD, special_ids=[UNK, CLS, SEP],
                                       mask_id=MASK, truncate=truncate, name="tiny-words")


def toy_model(batch):
    return torch.zeros(batch["image"].shape[0], 2)


@pytest.fixture
def encoder():
    return make_encoder()


@pytest.fixture
def adapter(encoder):
    return ModelAdapter(toy_model, text={"text": encoder},
                        images={"image": ImageProcessor(size=(8, 8))}, num_classes=2, name="toy")


def save_png(path, size=(8, 8), value=120, mode="RGB"):
    """An image of ``size`` = (height, width) filled with ``value`` (a varying pattern)."""
    h, w = size
    pixels = (np.arange(h * w * 3).reshape(h, w, 3) + value) % 256
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path)
    return path


def write_jsonl(path, rows):
    """Rows as JSONL; a row that is a str is written verbatim (for malformed lines)."""
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def folder(tmp_path):
    """A dataset folder with four 8x8 images and a valid data.jsonl of four rows."""
    texts = ["i will hurt you", "we bake a cake", "lovely day at the park",
             "i will attack them tonight"]
    rows = []
    for i in range(4):
        save_png(tmp_path / f"img{i}.png", value=40 * i)
        rows.append({"id": f"row{i}", "image": f"img{i}.png", "text": texts[i],
                     "label": i % 2})
    write_jsonl(tmp_path / "data.jsonl", rows)
    return tmp_path


def rows_of(folder):
    return [json.loads(line) for line in (folder / "data.jsonl").read_text().splitlines()]
