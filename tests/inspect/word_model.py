"""A user's own model with a word-level ``tokenizers`` tokenizer (entry point for the tests of
``hybridcert inspect``): [CLS] words [SEP], 8 ids at most (longer texts cut), 32x32 images."""

from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.normalizers import Lowercase
from tokenizers.pre_tokenizers import Whitespace
from tokenizers.processors import TemplateProcessing

from hybridcert.adapters import ImageProcessor, ModelAdapter
from hybridcert.blocks import TextEncoder

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = SPECIALS + ["we", "bake", "a", "cake", "how", "do", "i", "hurt", "them", "!"]
VOCAB = {w: i for i, w in enumerate(WORDS)}
MAX_LENGTH = 8


def tokenizer():
    tok = Tokenizer(WordLevel(VOCAB, unk_token="[UNK]"))
    tok.normalizer = Lowercase()
    tok.pre_tokenizer = Whitespace()
    tok.post_processor = TemplateProcessing(single="[CLS] $A [SEP]",
                                            special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.add_special_tokens(SPECIALS)
    return tok


def factory():
    text = TextEncoder.from_tokenizers(tokenizer(), max_length=MAX_LENGTH, pad_id=0, mask_id=4,
                                       truncate=True, name="words")

    def model(batch):
        assert set(batch) == {"image", "text", "text_attention"}
        hurt = ((batch["text"] == VOCAB["hurt"]) & (batch["text_attention"] > 0)).any(1)
        return hurt.long()

    return ModelAdapter(model, text={"text": text},
                        images={"image": ImageProcessor(size=(32, 32), resize="resize")},
                        num_classes=2, name="words")


def spy_factory():
    """``factory``'s adapter whose model appends each distinct (ids, attention) row it
    receives to the file named by ``SPY_LOG``."""
    import json
    import os

    adapter = factory()
    inner = adapter.model

    def model(batch):
        rows = {(tuple(i), tuple(a)) for i, a in zip(batch["text"].tolist(),
                                                     batch["text_attention"].tolist(),
                                                     strict=True)}
        with open(os.environ["SPY_LOG"], "a") as log:
            for ids, attention in sorted(rows):
                log.write(json.dumps({"ids": ids, "attention": attention}) + "\n")
        return inner(batch)

    return ModelAdapter(model, text=adapter.text, images=adapter.images, num_classes=2)
