"""Bad input gets one line naming the row and what is allowed (issue 11): never a traceback,
never a silent guess.  Each case here was a crash, a hang or a silent change in the loader
this package replaces (hybridcert.runs.runner.load_items before the datasets package)."""

import json
import os
import signal
import struct
import zlib

import pytest

from hybridcert.adapters import ModelAdapter
from hybridcert.adapters.images import ImageError, decode_image
from hybridcert.datasets import DataError, DataSpec, load_items

from .conftest import rows_of, save_png, toy_model, write_jsonl


def load(folder, adapter, name="data.jsonl", noised=("image", "text"), **spec):
    return load_items(DataSpec(str(folder / name), **spec), adapter, set(noised))


def refused(folder, adapter, match, **kwargs):
    with pytest.raises(DataError, match=match) as info:
        load(folder, adapter, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def with_row(folder, index, **changes):
    rows = rows_of(folder)
    rows[index].update(changes)
    write_jsonl(folder / "data.jsonl", rows)


def png_header(path, width, height):
    """A PNG that declares width x height pixels (1-bit grey) with one tiny IDAT chunk."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + \
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
                     chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_decompression_bomb_is_refused_before_decoding(folder, adapter):
    png_header(folder / "img2.png", 20000, 20000)
    refused(folder, adapter, r"^.*data.jsonl:3 \(id 'row2'\): column 'image': image img2.png "
                             r"(has 20000x20000 pixels|is too large to decode safely)")


def test_fifo_as_image_does_not_hang(folder, adapter):
    os.unlink(folder / "img1.png")
    os.mkfifo(folder / "img1.png")

    def hung(*_):
        raise TimeoutError("the loader blocked on a FIFO")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(10)
    try:
        refused(folder, adapter, r"data.jsonl:2 \(id 'row1'\): column 'image': image .*img1.png "
                                 r"is not a regular file")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("width, height", [(0, 0), (0, 5), (7, 0)])
def test_a_zero_size_image_is_named_as_such(folder, adapter, width, height):
    """Pillow cannot identify a PNG of 0 rows or columns; that used to read "image image is
    not an image Pillow can read" (the service names its image "image")."""
    png_header(folder / "img2.png", width, height)
    message = refused(folder, adapter, rf"^.*data.jsonl:3 \(id 'row2'\): column 'image': "
                                       rf"image img2.png has zero size \({width}x{height} "
                                       rf"pixels\): it holds no picture to certify$")
    assert "Pillow" not in message
    with pytest.raises(ImageError, match=rf"^image has zero size \({width}x{height} pixels\)"):
        decode_image((folder / "img2.png").read_bytes())


def test_unreadable_and_missing_images(folder, adapter):
    (folder / "img3.png").write_text("not a png")
    refused(folder, adapter, r"data.jsonl:4 \(id 'row3'\): column 'image': image img3.png is "
                             r"not an image Pillow can read")
    (folder / "img3.png").unlink()
    refused(folder, adapter, r"data.jsonl:4 \(id 'row3'\): column 'image': image .*img3.png "
                             r"not found")
    save_png(folder / "big.png", size=(64, 64))
    data = (folder / "big.png").read_bytes()
    (folder / "img3.png").write_bytes(data[: len(data) // 2])        # truncated file
    refused(folder, adapter, r"data.jsonl:4 \(id 'row3'\): column 'image': image img3.png "
                             r"cannot be decoded")


@pytest.mark.parametrize("value, shown", [(None, "null"), (7, r"a number \(7\)"),
                                          (2.5, r"a number \(2.5\)"), (True, "a boolean"),
                                          (["i", "will"], "a list holding a string"),
                                          ([], "an empty list"), ({"t": 1}, "an object"),
                                          ([1, None], "a list holding null")])
def test_text_that_is_not_a_string_or_ids(folder, adapter, value, shown):
    with_row(folder, 1, text=value)
    refused(folder, adapter, rf"data.jsonl:2 \(id 'row1'\): column 'text' must be a text "
                             rf"\(string\) or pre-tokenized ids \(a non-empty list of integers\), "
                             rf"got {shown}$")


@pytest.mark.parametrize("value, shown", [(None, "null"), (3, r"a number \(3\)"),
                                          (["img0.png"], "a list"), (False, "a boolean")])
def test_image_that_is_not_a_path(folder, adapter, value, shown):
    with_row(folder, 2, image=value)
    refused(folder, adapter, rf"data.jsonl:3 \(id 'row2'\): column 'image' must be an image "
                             rf"path \(a string\) or an array of numbers, got {shown}$")


def test_continuous_blocks_may_be_arrays_of_numbers(folder, adapter):
    """An embedding or audio features written in the row: taken as they are; ragged or
    non-finite arrays are refused."""
    pixels = [[[0.25] * 8] * 8] * 3                      # (3, 8, 8): the model's size
    with_row(folder, 2, image=pixels)
    items = load_items(DataSpec(str(folder / "data.jsonl")), adapter)
    assert items[2].record()["image"].shape == (3, 8, 8)
    assert float(items[2].record()["image"].sum()) == 0.25 * 3 * 64
    with_row(folder, 2, image=[[0.1, 0.2], [0.3, 0.4]])
    refused(folder, adapter, r"shape \(2, 2\) given where the model takes images of shape")
    with_row(folder, 2, image=[[0.1, 0.2], [0.3]])
    refused(folder, adapter, "ragged")
    with_row(folder, 2, image=[1e400])
    refused(folder, adapter, "NaN or infinite")


@pytest.mark.parametrize("line, shown", [("5", r"a number \(5\)"), ('"text"', "a string"),
                                         ("[1, 2]", "a list"), ("null", "null")])
def test_row_that_is_not_an_object(folder, adapter, line, shown):
    rows = rows_of(folder)
    write_jsonl(folder / "data.jsonl", rows[:2] + [line] + rows[2:])
    refused(folder, adapter, rf"data.jsonl:3: a row must be a JSON object of columns, got "
                             rf"{shown}$")


def test_lone_surrogates_are_refused(folder, adapter):
    rows = [json.dumps(r) for r in rows_of(folder)]
    rows[1] = rows[1].replace("we bake", "we \\ud800 bake")
    write_jsonl(folder / "data.jsonl", rows)
    refused(folder, adapter, r"data.jsonl:2 \(id 'row1'\): column 'text' holds a lone surrogate "
                             r"'\\ud800' at character 3")
    rows = [json.dumps(r) for r in rows_of(folder)]
    rows[0] = rows[0].replace('"row0"', '"row\\udfff"')
    write_jsonl(folder / "data.jsonl", rows)
    refused(folder, adapter, r"data.jsonl:1: id holds a lone surrogate")


def test_non_utf8_jsonl_names_the_file_and_line(folder, adapter):
    rows = [json.dumps(r) for r in rows_of(folder)]
    rows[2] = rows[2].replace("lovely", "caf\u00e9")             # written as Latin-1 below
    (folder / "data.jsonl").write_bytes("\n".join(rows).encode("latin-1"))
    message = refused(folder, adapter, r"data.jsonl:3: not valid UTF-8 \(byte 0xe9 at column "
                                       r"\d+\); save the file as UTF-8")
    assert str(folder / "data.jsonl") in message


def test_malformed_json_and_duplicated_keys(folder, adapter):
    rows = [json.dumps(r) for r in rows_of(folder)]
    write_jsonl(folder / "data.jsonl", rows[:1] + ['{"id": "x", "text": '] + rows[1:])
    refused(folder, adapter, r"data.jsonl:2: not valid JSON \(Expecting value at column 21\)")
    write_jsonl(folder / "data.jsonl",
                rows[:1] + ['{"id": "x", "label": 0, "label": 1, "text": "a"}'])
    refused(folder, adapter, r"data.jsonl:2: key 'label' appears twice in the row")


@pytest.mark.parametrize("label, match", [
    ("unsafe", r"label 'unsafe' is a string; map every label to a class index with "
               r"--label-map"),
    ("1", r"label '1' is a string"),
    (0.7, r"label 0.7 is not a class index \(never rounded\)"),
    (float("nan"), r"label nan is not a class index"),
    (True, r"label True is a boolean"),
    (2, r"label 2 is outside the classes 0..1"),
    (-1, r"label -1 is outside the classes 0..1"),
    ([1], r"label must be an integer class index or a string, got a list"),
])
def test_labels_that_are_not_class_indices(folder, adapter, label, match):
    with_row(folder, 3, label=label)
    refused(folder, adapter, r"data.jsonl:4 \(id 'row3'\): " + match)


def test_string_label_outside_the_label_map(folder, adapter):
    with_row(folder, 0, label="harmful")
    refused(folder, adapter, r"label 'harmful' is not in the label map \['safe', 'unsafe'\]",
            label_map={"safe": 0, "unsafe": 1})


def test_image_paths_are_confined_to_the_dataset_folder(folder, adapter, tmp_path_factory):
    outside = tmp_path_factory.mktemp("elsewhere")
    save_png(outside / "secret.png")
    with_row(folder, 1, image=str(outside / "secret.png"))
    refused(folder, adapter, r"data.jsonl:2 \(id 'row1'\): column 'image': image path "
                             r"'.*secret.png' points outside the dataset folder")
    assert load(folder, adapter, allow_outside_paths=True)[1].record()["image"].shape == \
        (3, 8, 8)
    relative = os.path.relpath(outside / "secret.png", folder)
    with_row(folder, 1, image=relative)
    refused(folder, adapter, r"image path '\.\./.*secret.png' points outside")
    os.symlink(outside / "secret.png", folder / "link.png")
    with_row(folder, 1, image="link.png")
    refused(folder, adapter, r"image path 'link.png' points outside")
    os.symlink(folder / "img0.png", folder / "inside.png")          # a link within is fine
    with_row(folder, 1, image="inside.png")
    assert load(folder, adapter)[1].input_id == "row1"
    with_row(folder, 1, image=str(folder / "img1.png"))             # absolute but inside
    assert load(folder, adapter)[1].input_id == "row1"


def test_duplicated_ids_name_both_rows(folder, adapter):
    with_row(folder, 3, id="row1")
    refused(folder, adapter, r"data.jsonl:4: id 'row1' duplicates the row at .*data.jsonl:2; "
                             r"ids must be unique")
    with_row(folder, 3, id=7)
    with_row(folder, 0, id="7")
    refused(folder, adapter, r"data.jsonl:4: id '7' duplicates the row at .*data.jsonl:1")


@pytest.mark.parametrize("value, shown", [(None, "null"), (1.5, r"a number \(1.5\)"),
                                          (["a"], "a list")])
def test_ids_must_be_strings_or_integers(folder, adapter, value, shown):
    with_row(folder, 2, id=value)
    refused(folder, adapter, rf"data.jsonl:3: id must be a string or an integer, got {shown}$")


def test_ids_on_some_rows_only(folder, adapter):
    rows = rows_of(folder)
    del rows[2]["id"]
    write_jsonl(folder / "data.jsonl", rows)
    refused(folder, adapter, r"data.jsonl:3: the row has no 'id' column while other rows have "
                             r"one")


def test_missing_column(folder, adapter):
    rows = rows_of(folder)
    del rows[1]["text"]
    write_jsonl(folder / "data.jsonl", rows)
    refused(folder, adapter, r"data.jsonl:2 \(id 'row1'\): the row has no column 'text' "
                             r"\(block 'text'\)")


def test_pretokenized_ids_are_checked_against_the_models_vocabulary(folder, adapter):
    with_row(folder, 0, text=[2, 5, 99, 3])
    refused(folder, adapter, r"data.jsonl:1 \(id 'row0'\): column 'text': token id 99 is "
                             r"outside the vocabulary of tiny-words \(ids 0..20\)")
    with_row(folder, 0, text=[2, -5, 3])
    refused(folder, adapter, r"column 'text': token id -5 is negative")
    with_row(folder, 0, text=list(range(5, 18)))
    refused(folder, adapter, r"13 token ids, more than the model's maximum length 12")


def test_noised_text_without_the_models_text_handling_is_refused(folder, adapter):
    no_text = ModelAdapter(toy_model, images=adapter.images, name="imagemodel")
    refused(folder, no_text, r"^text block 'text' is noised but the model 'imagemodel' gives no "
                             r"text handling for it .*never falls back to another model's "
                             r"tokenizer$")
    # not noised: a string still cannot become ids without the model's tokenizer
    refused(folder, no_text, r"data.jsonl:1 \(id 'row0'\): column 'text' holds text but the "
                             r"model gives no text handling for block 'text'", noised=("image",))


def test_noised_block_without_a_column(folder, adapter):
    refused(folder, adapter, r"the noise names block\(s\) \['audio'\] but no dataset column "
                             r"feeds them", noised=("image", "audio"))
    # An explicit mapping changes only the blocks it names: the others keep their own column.
    items = load_items(DataSpec(str(folder / "data.jsonl"), columns={"text": "text"}), adapter,
                       {"text"})
    assert set(items[0].record()) == {"image", "text"}
    refused(folder, adapter, r"column\(s\) \['captoin'\] appear in no row",
            columns={"text": "captoin"}, noised=("text",))


def test_label_and_id_columns_that_no_row_has_are_refused(folder, adapter):
    """A misspelled --label-column made every row unlabelled (and --id-column every id a
    file:line) without a word."""
    refused(folder, adapter, r"label column 'lbl' appears in no row", label_column="lbl")
    refused(folder, adapter, r"id column 'ident' appears in no row", id_column="ident")


def test_unknown_block_kind(folder, adapter):
    image_model = ModelAdapter(toy_model, images=adapter.images, name="toy")
    refused(folder, image_model, r"block 'caption' is neither an image nor a text block of the "
                                 r"model 'toy'", columns={"image": "image", "caption": "text"},
            noised=("image",))


def test_num_classes_must_match_the_model(folder, adapter):
    refused(folder, adapter, r"num_classes is 3 but the model 'toy' predicts 2 classes",
            num_classes=3)


def test_dataset_paths(folder, adapter, tmp_path):
    refused(folder, adapter, r"dataset '.*missing.jsonl' not found", name="missing.jsonl")
    (folder / "data.csv").write_text("id,text\n")
    refused(folder, adapter, r"expected safety:SPLIT\[:N\], a .jsonl or .parquet file",
            name="data.csv")
    os.mkfifo(folder / "fifo.jsonl")
    refused(folder, adapter, r"dataset file .*fifo.jsonl is not a regular file",
            name="fifo.jsonl")
    (folder / "empty.jsonl").write_text("\n\n")
    refused(folder, adapter, r"dataset '.*empty.jsonl' holds no rows", name="empty.jsonl")
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no .jsonl or .parquet file"):
        load_items(DataSpec(str(empty)), adapter)
    (folder / "bad.parquet").write_bytes(b"PAR1 not really")
    pytest.importorskip("pyarrow")
    refused(folder, adapter, r"bad.parquet: not a readable Parquet file", name="bad.parquet")
