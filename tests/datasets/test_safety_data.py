"""Safety dataset v2: balance, held-out sprites and style, the relational policy, no marker
tokens, unimodal ceilings, determinism, caching and the JSONL export."""

import json
from collections import Counter

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hybridcert.adapters import ImageProcessor
from hybridcert.datasets import safety


@pytest.fixture(scope="module")
def test_split():
    return safety.build_split("test", 80, seed=3)


@pytest.fixture(scope="module")
def train_split():
    return safety.build_split("train", 60, seed=3)


def test_every_split_and_slice_is_exactly_balanced(test_split, train_split):
    assert train_split.labels.sum() * 2 == len(train_split) == 60
    for name in ("seen", "heldout", "noto"):
        in_slice = test_split.meta["slice"] == name
        assert in_slice.sum() >= 20
        assert test_split.labels[in_slice].sum() * 2 == in_slice.sum()
    for n in (4, 7, 50, 1001):
        counts = safety.kind_counts(n)
        assert sum(counts.values()) == n
        assert sum(c for (_, label), c in counts.items() if label == 1) == n // 2
    with pytest.raises(ValueError, match="n must be"):
        safety.kind_counts(2)


def test_held_out_sprites_and_style_never_reach_training(test_split, train_split):
    held = set(safety.HELD_OUT)
    categories = {c for c, _ in safety.OBJECTS.values()}
    for category in categories:      # some sprites of every category held out, some seen
        names = {n for n, (c, _) in safety.OBJECTS.items() if c == category}
        assert names & held and names - held, category
    for split in ("train", "val"):
        pool = set(safety.pool_for("seen").names)
        assert not pool & held
        assert safety.SLICES[split] == [("seen", "openmoji", 1.0)]
    assert not set(train_split.meta["obj"]) & held
    assert set(train_split.meta["style"]) == {"openmoji"}
    heldout = test_split.meta["slice"] == "heldout"
    assert set(test_split.meta["obj"][heldout]) <= held
    assert set(test_split.meta["style"][test_split.meta["slice"] == "noto"]) == {"noto"}
    assert set(test_split.meta["style"][test_split.meta["slice"] != "noto"]) == {"openmoji"}


@pytest.mark.parametrize(("mode", "verb", "obj", "fits"), [
    ("means", "cut", "kitchen_knife", True), ("means", "cut", "birthday_cake", False),
    ("means", "stab", "teddy_bear", False), ("means", "hit", "hammer", True),
    ("means", "burn", "water_pistol", False), ("means", "poison", "pill", True),
    ("means", "cut", "cat_face", False), ("patient", "burn", "cat_face", True),
    ("patient", "cut", "bread", False), ("patient", "hit", "baby", True),
    ("patient", "stab", "dagger", False), ("means", "strangle", "scarf", True),
])
def test_relation_examples(mode, verb, obj, fits):
    assert safety._fits(mode, verb, obj) is fits


def test_labels_follow_the_policy(test_split, train_split):
    for data in (test_split, train_split):
        m = data.meta
        for i in range(len(data)):
            category, affords = safety.OBJECTS[m["obj"][i]]
            if m["kind"][i] == "rel":
                real = m["verb"][i] in affords if m["mode"][i] == "means" \
                    else category in ("person", "animal")
                expected = int(real)
                assert m["target"][i] in ("person", "animal", "this")
            elif m["kind"][i] == "text_unsafe":
                expected = 1
                assert "this" not in data.texts[i].split()
            elif m["kind"][i] == "image_unsafe":
                expected = 1
                assert m["bloodied"][i] and category in ("blade", "blunt")
            else:
                expected = 0
                assert m["frame"][i] == "negate" or m["target"][i] == "thing"
            assert data.labels[i] == expected, (data.texts[i], m["obj"][i])
        assert not data.meta["bloodied"][data.meta["kind"] != "image_unsafe"].any()


def test_no_marker_tokens_and_no_marker_punctuation():
    specs = safety.sample_specs(6000, np.random.default_rng(0))
    tok = safety.tokenizer()
    present, unsafe = Counter(), Counter()
    for spec in specs:
        assert "!" not in spec.text
        for token in set(tok.encode(spec.text).tokens):
            present[token] += 1
            unsafe[token] += spec.label
    frequent = {t: unsafe[t] / present[t] for t in present if present[t] >= 60}   # >= 1 %
    assert len(frequent) > 80
    worst = max(frequent, key=lambda t: abs(frequent[t] - 0.5))
    assert abs(frequent[worst] - 0.5) < 0.2, (worst, frequent[worst])


@pytest.mark.parametrize("slice_name", ["seen", "heldout", "noto"])
def test_no_modality_alone_beats_65_percent(slice_name):
    ceilings = safety.unimodal_ceilings(slice_name, n=20_000, seed=1)
    assert 0.5 < ceilings["text"] <= 0.63
    assert 0.5 < ceilings["image"] <= 0.63


def test_ceilings_see_a_shortcut_when_there_is_one(monkeypatch):
    # sanity of the estimator: with every record relational and no safe record ever showing
    # a means or a living being, the picture decides the label
    monkeypatch.setattr(safety, "NEUTRAL_SHARE", 1.0)
    assert safety.unimodal_ceilings("seen", n=5000, seed=1)["image"] > 0.8


def test_captions_encode_to_the_stored_tokens(test_split):
    encoder = safety.text_encoder()
    vocab = safety.vocabulary()
    assert encoder.vocab_size == vocab.size == 30522 - 999
    for i in range(len(test_split)):
        block = encoder.encode(str(test_split.texts[i]))
        assert torch.equal(block.ids, torch.from_numpy(test_split.tokens[i]))
        assert torch.equal(block.attention, torch.from_numpy(test_split.attention[i]))
    tokens = torch.from_numpy(test_split.tokens)
    special = torch.isin(tokens, torch.tensor([safety.PAD_ID, safety.CLS_ID, safety.SEP_ID]))
    assert bool((special | vocab.contains(tokens)).all())
    assert np.array_equal(test_split.attention, (test_split.tokens != safety.PAD_ID))
    assert test_split.pixels.dtype == np.uint8
    assert test_split.pixels.shape[1:] == (3, safety.IMAGE_SIZE, safety.IMAGE_SIZE)


def test_build_is_deterministic_and_cached(tmp_path):
    a = safety.build(24, seed=9, slice_name="noto", style="noto")
    b = safety.build(24, seed=9, slice_name="noto", style="noto")
    assert np.array_equal(a.pixels, b.pixels) and np.array_equal(a.tokens, b.tokens)
    assert list(a.texts) == list(b.texts)
    assert not np.array_equal(a.pixels, safety.build(24, seed=10, slice_name="noto",
                                                     style="noto").pixels)
    first = safety.load_split("val", 12, seed=4, cache=tmp_path)
    assert len(list(tmp_path.glob(f"safety_v{safety.VERSION}_val_12_4.npz"))) == 1
    again = safety.load_split("val", 12, seed=4, cache=tmp_path)
    for field in ("pixels", "tokens", "attention", "labels", "texts"):
        assert np.array_equal(getattr(first, field), getattr(again, field))
    assert all(np.array_equal(first.meta[k], again.meta[k]) for k in first.meta)
    with pytest.raises(ValueError, match="split must be"):
        safety.load_split("dev", 12)
    with pytest.raises(ValueError, match="n must be"):
        safety.load_split("val", 2)


def test_export_round_trip_and_reuse(tmp_path, monkeypatch):
    monkeypatch.setitem(safety.DEFAULT_SIZES, "test", 40)
    out = tmp_path / "export"
    path = safety.export_split("test", out, limit=12, cache=tmp_path / "cache")
    assert path == out / "data.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    data = safety.load_split("test", 40, cache=tmp_path / "cache")
    assert len(rows) == 12 and {tuple(sorted(r)) for r in rows} == {
        ("id", "image", "label", "text")}
    processor = ImageProcessor(size=(safety.IMAGE_SIZE, safety.IMAGE_SIZE), resize="refuse")
    encoder = safety.text_encoder()
    for i, row in enumerate(rows):
        image, changes = processor.load(out / row["image"])
        assert changes == [] and torch.equal(image, data.image(i))
        assert torch.equal(encoder.encode(row["text"]).ids, torch.from_numpy(data.tokens[i]))
        assert row["label"] == data.labels[i]
    stamp = path.stat().st_mtime_ns
    assert safety.export_split("test", out, limit=12, cache=tmp_path / "cache") == path
    assert path.stat().st_mtime_ns == stamp                 # complete export reused
    (out / rows[3]["image"]).unlink()                       # incomplete: written again
    safety.export_split("test", out, limit=12, cache=tmp_path / "cache")
    assert (out / rows[3]["image"]).is_file()
    safety.export_split("test", out, limit=5, cache=tmp_path / "cache")   # other limit
    assert len(path.read_text().splitlines()) == 5
    assert len(list((out / "images").iterdir())) == 5
    with pytest.raises(ValueError, match="limit must be"):
        safety.export_split("test", out, limit=0)
    with pytest.raises(ValueError, match="split must be"):
        safety.export_split("dev", out)


def test_export_command(tmp_path, monkeypatch):
    import typer

    from hybridcert.cli.dataset_command import app as dataset_app

    app = typer.Typer()                 # registered as in cli/main.py: a command group
    app.add_typer(dataset_app, name="dataset")
    monkeypatch.setitem(safety.DEFAULT_SIZES, "val", 10)
    result = CliRunner().invoke(app, ["dataset", "export", "safety", "--split", "val", "--out",
                                      str(tmp_path / "x"), "--cache", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    assert "10 records of safety:val" in result.output
    assert len((tmp_path / "x" / "data.jsonl").read_text().splitlines()) == 10
    bad = CliRunner().invoke(app, ["dataset", "export", "mnist", "--out", str(tmp_path / "y")])
    assert bad.exit_code != 0 and "dataset must be 'safety'" in str(bad.exception)
