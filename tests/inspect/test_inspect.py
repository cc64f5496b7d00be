"""``hybridcert inspect``: per row, what the model receives and what is noised, with a warning
wherever the certificate covers less than a reader may assume.

Expected ids and positions are written out by hand from the word-level tokenizer of
``word_model`` ([CLS]=2, [SEP]=3, words from 5), not computed by the code under test."""

import json

import pytest

from hybridcert.adapters import ModelAdapter
from hybridcert.blocks import TextEncoder, Vocabulary
from hybridcert.cli.main import main
from hybridcert.inspect import inspect_rows
from tests.inspect import word_model

WORDS = "tests.inspect.word_model:factory"
V = word_model.VOCAB
NOISE = {"sigma": 0.25, "keep_prob": 0.5}


def run(data, rows=None, adapter=None, **options):
    config = {"dataset": str(data), "model": WORDS, **NOISE, **options}
    return inspect_rows(config, rows, adapter=adapter)


def text_of(view, name="text"):
    return next(b for b in view.blocks if b.name == name)


def test_tokens_noised_positions_specials_padding_and_v(rows_file):
    data = rows_file({"a": "We bake a cake"})
    view = run(data).rows[0]
    text = text_of(view)
    assert [t.id for t in text.tokens] == [2, V["we"], V["bake"], V["a"], V["cake"], 3, 0, 0]
    assert [t.role for t in text.tokens] == ["special"] + ["noised"] * 4 + ["special"] + \
        ["padding"] * 2
    assert [t.token for t in text.tokens[:6]] == ["[CLS]", "we", "bake", "a", "cake", "[SEP]"]
    assert text.shown() == "{[CLS]} *we* *bake* *a* *cake* {[SEP]} <pad x2>"
    assert (text.noised, text.content, text.attended, text.length) == (4, 4, 6, 8)
    assert text.vocab_size == 10 and text.max_length == 8          # 15 ids, 5 of them special
    assert view.warnings == []
    assert view.batch == {"image": {"shape": ["B", 3, 32, 32], "dtype": "float32"},
                          "text": {"shape": ["B", 8], "dtype": "int64"},
                          "text_attention": {"shape": ["B", 8], "dtype": "int64"}}
    image = text_of(view, "image")
    assert image.source == {"width": 40, "height": 48, "mode": "RGB"}
    assert image.shape == [3, 32, 32] and image.noise == "gaussian:0.25"
    assert image.l2_space == "pixels in [0, 1] at 32x32, the model's input"
    assert view.notes == ["image: resize 40x48 -> 32x32"]


def test_zero_noisable_tokens_warns(rows_file):
    data = rows_file({"empty": "", "specials-only": "[UNK]", "fine": "we bake"})
    views = {v.id: v for v in run(data).rows}
    for row in ("empty", "specials-only"):
        assert text_of(views[row]).noised == 0
        assert any("no noisable position" in w for w in views[row].warnings), row
    assert not any("no noisable" in w for w in views["fine"].warnings)


def test_truncation_at_the_models_maximum_length_warns(rows_file):
    data = rows_file({"long": "we bake a cake how do i hurt them", "short": "we bake"})
    views = {v.id: v for v in run(data).rows}
    long = text_of(views["long"])
    assert long.truncated and long.attended == 8                 # [CLS] + 7 words, no [SEP]
    assert [t.id for t in long.tokens] == [2, V["we"], V["bake"], V["a"], V["cake"], V["how"],
                                           V["do"], V["i"]]
    assert any("cut to the model's 8 tokens" in w for w in views["long"].warnings)
    assert "text: text cut to the model's 8 tokens" in views["long"].notes
    assert not text_of(views["short"]).truncated and views["short"].warnings == []


def test_specials_in_the_users_text_warn_whether_or_not_they_are_parsed(rows_file):
    data = rows_file({"sep": "how do [SEP] i hurt", "plain": "how do i hurt"})
    views = {v.id: v for v in run(data).rows}
    text = text_of(views["sep"])
    assert text.special_strings == ["[SEP]"]
    # Whether the tokenizer reads '[SEP]' in user text as the special id is its own choice
    # (hybridcert may turn that parsing off); the warning is given either way.
    encoded = word_model.factory().text["text"].encode_ids("how do [SEP] i hurt")
    if 3 in encoded[1:-1]:
        assert text.special_ids == [3]
        assert [t.role for t in text.tokens[:4]] == ["special", "noised", "noised", "special"]
        assert any("special token(s) '[SEP]'" in w and "special id(s) [3]" in w
                   for w in views["sep"].warnings)
    else:
        assert text.special_ids == []
        assert any("special token(s) '[SEP]' (encoded as ordinary text)" in w
                   for w in views["sep"].warnings)
    assert views["plain"].warnings == []

    # A tokenizer that reads user text as data (specials not parsed): still warned, by string.
    words = {w: i for i, w in enumerate(word_model.WORDS)}

    def as_data(text):
        return [2] + [words.get(w, 1) for w in text.lower().split()] + [3]

    encoder = TextEncoder(as_data, Vocabulary(list(range(5, 15))), 0, 8,
                          special_tokens=("[CLS]", "[SEP]"))
    adapter = ModelAdapter(word_model.factory().model, text={"text": encoder},
                           images=word_model.factory().images, num_classes=2)
    views = {v.id: v for v in run(data, adapter=adapter).rows}
    text = text_of(views["sep"])
    assert text.special_strings == ["[SEP]"] and text.special_ids == []
    assert text.unnoisable_ids == [1]            # '[sep]' is an unknown word here: [UNK]
    assert any("'[SEP]' (encoded as ordinary text)" in w for w in views["sep"].warnings)
    assert any("1 position(s) of the text hold ids outside the noisable vocabulary [1]" in w
               for w in views["sep"].warnings)
    assert views["plain"].warnings == []


def test_a_block_left_unnoised_warns(rows_file):
    data = rows_file({"a": "we bake"})
    view = run(data, sigma=None, keep_prob=None, blocks={"image": "gaussian:0.5"},
               no_text_noise=True).rows[0]
    assert text_of(view).noise == "none" and text_of(view).noised == 0
    assert [t.role for t in text_of(view).tokens[:4]] == ["special", "text", "text", "special"]
    assert any(w.startswith("text: not noised") for w in view.warnings)
    view = run(data, sigma=None, keep_prob=None, blocks={"text": "mask:0.5"}).rows[0]
    assert text_of(view, "image").noise == "none" and text_of(view).vocab_size is None
    assert any(w.startswith("image: not noised") for w in view.warnings)


def test_suffix_and_append_threats_show_what_they_noise(rows_file):
    data = rows_file({"a": "we bake a cake how", "b": "we"})
    views = {v.id: v for v in run(data, threat="suffix", suffix_length=2).rows}
    assert [t.role for t in text_of(views["a"]).tokens[:7]] == [
        "special", "text", "text", "text", "noised", "noised", "special"]
    assert any("only the last 2 of 5 content tokens" in w for w in views["a"].warnings)
    assert not any("suffix" in w for w in views["b"].warnings)  # shorter: noised everywhere

    views = {v.id: v for v in run(data, threat="append", append_slots=2).rows}
    text = text_of(views["b"])
    # the slots go after the last word and before [SEP]
    assert [t.id for t in text.tokens] == [2, V["we"], V["!"], V["!"], 3, 0, 0, 0]
    assert [t.role for t in text.tokens[:5]] == ["special", "text", "slot", "slot", "special"]
    assert text.slots == {"count": 2, "at": 2, "placeholder": "!", "placeholder_id": V["!"],
                          "before": "[SEP]"}
    assert any("only the 2 appended slot(s)" in w for w in views["b"].warnings)
    # 7 attended + 2 slots exceed the 8 tokens: certify would fail on this row
    assert views["a"].error and "maximum length 8" in views["a"].error


def test_rows_by_id_and_unknown_ids(rows_file):
    data = rows_file({"a": "we", "b": "bake", "c": "cake"})
    assert [v.id for v in run(data, ["c", "a"]).rows] == ["c", "a"]
    with pytest.raises(ValueError, match="--row 'zz' is not an id of the dataset"):
        run(data, ["zz"])


def test_cli_text_json_and_summary(rows_file, capsys):
    data = rows_file({"a": "we bake a cake", "e": ""})
    base = ["inspect", "--model", WORDS, "--dataset", str(data), "--sigma", "0.25",
            "--keep-prob", "0.5"]
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "{[CLS]} *we* *bake* *a* *cake* {[SEP]} <pad x2>" in out
    assert "V = 10" in out and "warning: text: no noisable position" in out
    assert "model batch: image (B, 3, 32, 32) float32, text (B, 8) int64" in out
    assert "2 row(s), 1 warning(s)" in out

    assert main(base + ["--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in result["rows"]] == ["a", "e"]
    assert result["rows"][0]["blocks"][1]["tokens"][1] == {"position": 1, "id": V["we"],
                                                          "token": "we", "role": "noised"}

    assert main(base + ["--summary"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("a  label 0") and "4 noised" in lines[0]
    assert main(base + ["--summary", "--json", "--row", "e"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["blocks"]["text"]["noised"] == 0


@pytest.mark.parametrize("argv, message", [
    (["--row", "nope"], "--row 'nope' is not an id of the dataset"),
    (["--threat", "sideways"], "threat must be one of"),
    (["--threat", "append"], "threat append needs --append-slots"),
])
def test_cli_errors_are_one_line(rows_file, capsys, argv, message):
    data = rows_file({"a": "we"})
    assert main(["inspect", "--model", WORDS, "--dataset", str(data), "--sigma", "0.25",
                 "--keep-prob", "0.5", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hybridcert: error:") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("threat", [[], ["--threat", "append", "--append-slots", "2"],
                                    ["--threat", "suffix", "--suffix-length", "1"]])
def test_certify_feeds_the_model_exactly_the_ids_inspect_shows(rows_file, tmp_path,
                                                               monkeypatch, capsys, threat):
    """With keep probability 1 the noise changes nothing, so every copy certify hands the
    model is the row as prepared: it must be the row inspect shows (ids and attention)."""
    data = rows_file({"a": "we bake a cake", "b": "do [SEP]", "c": ""})
    log = tmp_path / "spy.jsonl"
    monkeypatch.setenv("SPY_LOG", str(log))
    options = ["--model", "tests.inspect.word_model:spy_factory", "--dataset", str(data),
               "--sigma", "0.25", "--keep-prob", "1", "--allow-empty-text", *threat]
    assert main(["certify", *options, "--n0", "4", "--n", "16", "--alpha", "0.01", "--store",
                 str(tmp_path / "s.sqlite"), "--quiet"]) == 0
    seen = {line for line in log.read_text().splitlines()}
    assert main(["inspect", *options, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["rows"]
    expected = set()
    for row in shown:
        tokens = row["blocks"][1]["tokens"]
        expected.add(json.dumps({"ids": [t["id"] for t in tokens],
                                 "attention": [int(t["role"] != "padding") for t in tokens]}))
    assert seen == expected and len(expected) == 3


def test_colour_mode_numbers_in_the_row_and_pretokenized_ids(tmp_path):
    from PIL import Image

    Image.new("L", (32, 32), 90).save(tmp_path / "grey.png")
    rows = [{"id": "grey", "image": "grey.png", "text": "we bake", "label": 0},
            {"id": "numbers", "image": [[[0.5] * 32] * 32] * 3, "text": "we", "label": 1},
            {"id": "ids", "image": "grey.png", "text": [2, V["we"], 3, V["cake"], 3],
             "label": 0}]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    views = {v.id: v for v in run(data).rows}
    assert views["grey"].notes == ["image: colour mode L -> RGB"]
    assert text_of(views["grey"], "image").source == {"width": 32, "height": 32, "mode": "L"}
    numbers = text_of(views["numbers"], "image")
    assert numbers.source is None and numbers.shape == [3, 32, 32]
    assert numbers.l2_space.startswith("the block's numbers as given")
    ids = text_of(views["ids"])
    assert [t.id for t in ids.tokens[:5]] == [2, V["we"], 3, V["cake"], 3]
    assert ids.text is None and ids.unnoisable_ids == [3]       # the [SEP] inside the ids
    assert any("hold ids outside the noisable vocabulary [3]" in w for w in views["ids"].warnings)


def test_the_same_toml_config_as_certify(rows_file, tmp_path, capsys):
    """A run's TOML file (certification options included) works as it is; flags override."""
    data = rows_file({"a": "we bake a cake"})
    config = tmp_path / "run.toml"
    config.write_text(f'dataset = "{data}"\nmodel = "{WORDS}"\nsigma = 0.25\nkeep_prob = 0.5\n'
                      f'threat = "suffix"\nsuffix_length = 3\nmode = "decision"\n'
                      f'targets = [[0.25, 1]]\nn = 2000\n')
    assert main(["inspect", "--config", str(config), "--suffix-length", "1", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert row["blocks"][1]["threat"] == {"threat": "suffix", "suffix_length": 1}
    assert row["blocks"][1]["noised"] == 1
