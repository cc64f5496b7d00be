"""Rows become the records the model expects: its tokenizer, its image size, lazily loaded."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from hybridcert.adapters import ImageProcessor, ModelAdapter
from hybridcert.blocks import HybridNoise, Tokens
from hybridcert.datasets import DataError, DataSpec, ImageData, load_dataset, load_items
from hybridcert.datasets.spec import parse_columns, parse_label_map
from hybridcert.noise import Substitution

from .conftest import MAX_LENGTH, PAD, make_encoder, rows_of, save_png, toy_model, write_jsonl


def test_rows_become_the_models_records(folder, adapter, encoder):
    items = load_items(DataSpec(str(folder / "data.jsonl")), adapter, {"image", "text"})
    assert [it.input_id for it in items] == ["row0", "row1", "row2", "row3"]
    assert [it.label for it in items] == [0, 1, 0, 1]
    assert [it.idx for it in items] == [0, 1, 2, 3]
    for item, row in zip(items, rows_of(folder), strict=True):
        record = item.record()
        expected = encoder.encode(row["text"])
        assert torch.equal(record["text"].ids, expected.ids)
        assert torch.equal(record["text"].attention, expected.attention)
        pixels = np.asarray(Image.open(folder / row["image"]), dtype=np.float32) / 255
        assert torch.equal(record["image"], torch.from_numpy(pixels.transpose(2, 0, 1).copy()))
        assert item.notes == []
    # the record is what the noise takes
    noise = HybridNoise([Tokens("text", Substitution(0.5, encoder.vocab_size),
                                encoder.vocabulary)])
    prepared = noise.prepare(items[0].record())
    assert int(prepared["text"].noisable.sum()) == 4       # "i will hurt you", no specials


def test_images_are_not_held_in_memory_and_are_reread(folder, adapter):
    items = load_items(DataSpec(str(folder / "data.jsonl")), adapter, {"image", "text"})
    data = items[0].blocks["image"]
    assert isinstance(data, ImageData) and data.data is None and data.path is not None
    first = items[0].record()["image"]
    assert torch.equal(first, items[0].record()["image"])
    save_png(folder / "img0.png", value=3)                 # the file changes after validation
    with pytest.raises(DataError, match=r"data.jsonl:1 \(id 'row0'\): image img0.png changed"):
        items[0].record()
    (folder / "img1.png").unlink()
    with pytest.raises(DataError, match="img1.png not found"):
        items[1].record()


def test_content_hash_tracks_what_the_model_sees(folder, adapter):
    def hashes(**spec):
        items = load_items(DataSpec(str(folder / "data.jsonl"), **spec), adapter)
        return {it.input_id: it.content_hash for it in items}

    base = hashes()
    assert len(set(base.values())) == 4
    assert hashes() == base                                     # deterministic
    rows = rows_of(folder)
    write_jsonl(folder / "data.jsonl", rows[::-1])              # order does not matter
    assert hashes() == base
    rows[1]["text"] = "we bake a lovely cake"
    rows[2]["label"] = 1
    write_jsonl(folder / "data.jsonl", rows)
    changed = hashes()
    assert changed["row0"] == base["row0"] and changed["row3"] == base["row3"]
    assert changed["row1"] != base["row1"] and changed["row2"] != base["row2"]
    save_png(folder / "img3.png", value=7)                      # same path, new bytes
    assert hashes()["row3"] != base["row3"]
    os.rename(folder / "img0.png", folder / "other.png")
    save_png(folder / "img0.png", value=0)                      # same bytes: same hash
    assert hashes()["row0"] == base["row0"]
    remapped = hashes(columns={"image": "image", "text": "text"}, label_column="label")
    assert remapped["row0"] == base["row0"]
    rows[0]["caption"] = rows[0]["text"]
    for r in rows[1:]:
        r["caption"] = r["text"]
    write_jsonl(folder / "data.jsonl", rows)
    other_column = hashes(columns={"image": "image", "text": "caption"})
    assert other_column["row0"] != base["row0"]                 # the mapping is hashed


def test_unlabelled_rows_are_kept(folder, adapter):
    rows = rows_of(folder)
    del rows[0]["label"]
    rows[1]["label"] = None
    write_jsonl(folder / "data.jsonl", rows)
    items = load_items(DataSpec(str(folder / "data.jsonl")), adapter)
    assert [it.label for it in items] == [None, None, 0, 1]


def test_string_labels_through_a_label_map(folder, adapter):
    rows = rows_of(folder)
    for r in rows:
        r["label"] = ["safe", "unsafe"][r["label"]]
    write_jsonl(folder / "data.jsonl", rows)
    spec = DataSpec(str(folder / "data.jsonl"), label_map=parse_label_map("safe=0,unsafe=1"))
    assert [it.label for it in load_items(spec, adapter)] == [0, 1, 0, 1]


def test_integral_float_label_is_read_and_reported(folder, adapter):
    rows = rows_of(folder)
    rows[1]["label"] = 1.0
    write_jsonl(folder / "data.jsonl", rows)
    items = load_items(DataSpec(str(folder / "data.jsonl")), adapter)
    assert items[1].label == 1 and items[1].notes == ["label 1.0 read as 1"]
    with pytest.raises(DataError, match=r"data.jsonl:2 \(id 'row1'\): label 1.0 read as 1 "
                                        r"\(strict"):
        load_items(DataSpec(str(folder / "data.jsonl"), strict=True), adapter)


def test_pretokenized_ids_are_accepted_and_padded(folder, adapter, encoder):
    rows = rows_of(folder)
    rows[0]["text"] = [2, 5, 6, 7, 3]
    write_jsonl(folder / "data.jsonl", rows)
    item = load_items(DataSpec(str(folder / "data.jsonl")), adapter, {"text"})[0]
    block = item.record()["text"]
    assert block.ids.tolist() == [2, 5, 6, 7, 3] + [PAD] * (MAX_LENGTH - 5)
    assert block.attention.tolist() == [1] * 5 + [0] * (MAX_LENGTH - 5)
    # the same text given as a string encodes to the same ids: the same record
    assert torch.equal(block.ids, encoder.encode("i will hurt").ids)


def test_pretokenized_ids_without_text_handling_when_not_noised(folder):
    rows = rows_of(folder)
    for r in rows:
        r["text"] = [2, 5, 3]
    write_jsonl(folder / "data.jsonl", rows)
    bare = ModelAdapter(toy_model)
    items = load_items(DataSpec(str(folder / "data.jsonl")), bare, {"image"})
    assert items[0].record()["text"].ids.tolist() == [2, 5, 3]


def test_resizing_and_colour_changes_are_reported_or_refused(folder, adapter):
    save_png(folder / "img0.png", size=(10, 12))
    save_png(folder / "img1.png", mode="L")
    resizing = ModelAdapter(toy_model, text=adapter.text,
                            images={"image": ImageProcessor((8, 8), resize="resize")})
    items = load_items(DataSpec(str(folder / "data.jsonl")), resizing)
    assert items[0].notes == ["image: resize 12x10 -> 8x8"]
    assert items[1].notes == ["image: colour mode L -> RGB"]
    assert items[0].record()["image"].shape == (3, 8, 8)
    assert load_dataset(DataSpec(str(folder / "data.jsonl")), resizing).describe()["changes"] \
        == {"image: resize NxN -> NxN": 1, "image: colour mode L -> RGB": 1}
    with pytest.raises(DataError, match=r"data.jsonl:1 \(id 'row0'\): image: resize 12x10 -> "
                                        r"8x8 \(strict"):
        load_items(DataSpec(str(folder / "data.jsonl"), strict=True), resizing)
    with pytest.raises(DataError, match="image is 12x10 but the model takes 8x8"):
        load_items(DataSpec(str(folder / "data.jsonl")), adapter)   # the model refuses resizing


def test_truncation_is_reported_or_refused(folder):
    cutting = ModelAdapter(toy_model, text={"text": make_encoder(max_length=4, truncate=True)})
    items = load_items(DataSpec(str(folder / "data.jsonl"), columns={"text": "text"}), cutting)
    assert items[2].notes == ["text: text cut to the model's 4 tokens"]
    assert items[2].record()["text"].ids.numel() == 4
    with pytest.raises(DataError, match="text cut to the model's 4 tokens .strict"):
        load_items(DataSpec(str(folder / "data.jsonl"), columns={"text": "text"}, strict=True),
                   cutting)
    refusing = ModelAdapter(toy_model, text={"text": make_encoder(max_length=4)})
    with pytest.raises(DataError, match=r"data.jsonl:1 \(id 'row0'\): column 'text': text has 6 "
                                        r"tokens, more than the model's maximum length 4"):
        load_items(DataSpec(str(folder / "data.jsonl"), columns={"text": "text"}), refusing)


def test_image_size_override_only_when_the_model_states_none(folder, adapter):
    save_png(folder / "img2.png", size=(16, 16))
    bare = ModelAdapter(toy_model, text=adapter.text)
    items = load_items(DataSpec(str(folder / "data.jsonl")), bare)          # as they are
    assert items[2].record()["image"].shape == (3, 16, 16) and items[2].notes == []
    items = load_items(DataSpec(str(folder / "data.jsonl"), image_size=(8, 8)), bare)
    assert items[2].record()["image"].shape == (3, 8, 8)
    assert items[2].notes == ["image: resize 16x16 -> 8x8"]
    with pytest.raises(DataError, match="image_size 4x4 conflicts with the model's image size "
                                        "8x8 for block 'image'"):
        load_items(DataSpec(str(folder / "data.jsonl"), image_size=(4, 4)), adapter)


def test_columns_map_blocks_to_the_users_columns(folder, adapter):
    rows = rows_of(folder)
    renamed = [{"key": r["id"], "picture": r["image"], "caption": r["text"], "y": r["label"]}
               for r in rows]
    write_jsonl(folder / "renamed.jsonl", renamed)
    spec = DataSpec(str(folder / "renamed.jsonl"), columns=parse_columns("image=picture,"
                                                                         "text=caption"),
                    label_column="y", id_column="key")
    items = load_items(spec, adapter)
    reference = load_items(DataSpec(str(folder / "data.jsonl")), adapter)
    assert [it.input_id for it in items] == [it.input_id for it in reference]
    for a, b in zip(items, reference, strict=True):
        assert torch.equal(a.record()["image"], b.record()["image"])
        assert torch.equal(a.record()["text"].ids, b.record()["text"].ids)
        assert a.label == b.label


def test_rows_without_ids_are_named_by_place(folder, adapter):
    rows = rows_of(folder)
    for r in rows:
        del r["id"]
    write_jsonl(folder / "data.jsonl", rows)
    items = load_items(DataSpec(str(folder / "data.jsonl")), adapter)
    path = str(folder / "data.jsonl")
    assert [it.input_id for it in items] == [f"{path}:{i}" for i in range(1, 5)]


def test_limit_reads_only_the_first_rows(folder, adapter):
    with open(folder / "data.jsonl", "a") as handle:
        handle.write("this line is never read\n")
    items = load_items(DataSpec(str(folder / "data.jsonl"), limit=2), adapter)
    assert [it.input_id for it in items] == ["row0", "row1"]


def test_folder_of_jsonl_files(folder, adapter):
    rows = rows_of(folder)
    (folder / "data.jsonl").unlink()
    write_jsonl(folder / "a.jsonl", rows[:2])
    write_jsonl(folder / "b.jsonl", rows[2:])
    items = load_items(DataSpec(str(folder)), adapter)
    assert [it.input_id for it in items] == ["row0", "row1", "row2", "row3"]
    assert items[2].where == "b.jsonl:1 (id 'row2')"


def test_parquet_gives_the_same_items_as_jsonl(folder, adapter):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = rows_of(folder)
    pq.write_table(pa.Table.from_pylist(rows), folder / "data.parquet")
    from_parquet = load_items(DataSpec(str(folder / "data.parquet")), adapter)
    from_jsonl = load_items(DataSpec(str(folder / "data.jsonl")), adapter)
    assert [(it.input_id, it.label, it.content_hash) for it in from_parquet] == \
        [(it.input_id, it.label, it.content_hash) for it in from_jsonl]
    # images embedded as bytes (the Hugging Face datasets Image feature) load too
    embedded = [dict(r, image={"bytes": (folder / r["image"]).read_bytes(), "path": None})
                for r in rows]
    pq.write_table(pa.Table.from_pylist(embedded), folder / "embedded.parquet")
    items = load_items(DataSpec(str(folder / "embedded.parquet")), adapter)
    for a, b in zip(items, from_jsonl, strict=True):
        assert a.content_hash == b.content_hash
        assert torch.equal(a.record()["image"], b.record()["image"])
    strings = [dict(r, label=str(r["label"])) for r in rows]
    pq.write_table(pa.Table.from_pylist(strings), folder / "data.parquet")
    spec = DataSpec(str(folder / "data.parquet"), label_map={"0": 0, "1": 1})
    assert [it.label for it in load_items(spec, adapter)] == [0, 1, 0, 1]
    strings[2]["label"] = "x"
    pq.write_table(pa.Table.from_pylist(strings), folder / "data.parquet")
    with pytest.raises(DataError, match=r"data.parquet row 3 \(id 'row2'\): label 'x' is not "
                                        r"in the label map \['0', '1'\]"):
        load_items(spec, adapter)


def test_parse_helpers_refuse_malformed_flags():
    assert parse_label_map("safe=0, unsafe=1") == {"safe": 0, "unsafe": 1}
    with pytest.raises(DataError, match="must look like safe=0,unsafe=1"):
        parse_label_map("safe:0")
    with pytest.raises(DataError, match="integer class"):
        parse_label_map("safe=zero")
    with pytest.raises(DataError, match=r"must map to a class in \[0, 2\)"):
        parse_label_map("safe=0,unsafe=2", num_classes=2)
    with pytest.raises(DataError, match="block 'image' is given twice"):
        parse_columns("image=a,image=b")


def test_spec_refuses_bad_parameters():
    with pytest.raises(DataError, match="num_classes must be an integer >= 2"):
        DataSpec("x.jsonl", num_classes=1)
    with pytest.raises(DataError, match="limit must be an integer >= 1"):
        DataSpec("x.jsonl", limit=0)
    with pytest.raises(DataError, match="image_size must be"):
        DataSpec("x.jsonl", image_size=(0, 3))
    with pytest.raises(DataError, match=r"column\(s\) \['a'\] feed more than one block"):
        DataSpec("x.jsonl", columns={"image": "a", "text": "a"})
    with pytest.raises(DataError, match="block 'text' reads column 'label'"):
        DataSpec("x.jsonl", columns={"text": "label"})
    with pytest.raises(DataError, match=r"'unsafe' must map to a class in \[0, 2\)"):
        DataSpec("x.jsonl", label_map={"unsafe": 3})
    assert DataSpec("x.jsonl", image_size=32).image_size == (32, 32)
    assert json.dumps(DataSpec("x.jsonl").describe())
