"""Every row a run would fail on, or would certify on less than it says, is refused before the
store exists, naming the row: appended slots that overflow the model's length, a noised text
without a noisable token (unless --allow-empty-text, noted per row); the TOML file may name
the new options and the store."""

import json

import numpy as np
from PIL import Image

from hybridcert.cli.main import main
from hybridcert.runs.store import RunStore

NOISE = ["--model", "tests.runs.toy_model:factory", "--sigma", "0.25", "--keep-prob", "0.3",
         "--n0", "16", "--n", "100", "--alpha", "0.01", "--max-tokens", "2", "--quiet"]


def dataset(tmp_path, texts):
    rows = []
    for i, text in enumerate(texts):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / f"im{i}.png")
        rows.append({"id": f"r{i}", "image": f"im{i}.png", "text": text, "label": i % 2})
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def run(path, store, *extra):
    return main(["certify", "--dataset", str(path), "--store", str(store), *NOISE, *extra])


def one_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("hybridcert: error:") and len(err.splitlines()) == 1, err
    return err


def test_a_row_too_long_for_the_appended_slots_is_refused_before_the_store(tmp_path, capsys):
    """The toy tokenizer adds [CLS] .. [SEP] and allows 12 tokens: the fourth row (8 tokens)
    with 5 slots needs 13.  It used to pass the check (made on the first row) and fail
    mid-run without naming the row, after the store was created."""
    path = dataset(tmp_path, ["we bake a cake"] * 3 + ["i will hurt you with this"])
    store = tmp_path / "s.sqlite"
    assert run(path, store, "--threat", "append", "--append-slots", "5") == 2
    err = one_line(capsys)
    assert "rows.jsonl:4 (id 'r3')" in err and "5 appended slots" in err
    assert "maximum length 12" in err and not store.exists()
    assert run(path, store, "--threat", "append", "--append-slots", "4") == 0
    assert len(RunStore(store, readonly=True).rows()) == 4


def test_a_text_without_a_noisable_token_is_refused_unless_allowed(tmp_path, capsys):
    """An empty text and one of unknown words only: nothing the text noise can touch, so the
    certificate would silently cover the image alone."""
    for texts, bad in ((["we bake a cake", ""], "rows.jsonl:2 (id 'r1')"),
                       (["zebra xylophone", "we bake a cake"], "rows.jsonl:1 (id 'r0')")):
        path = dataset(tmp_path, texts)
        store = tmp_path / "e.sqlite"
        assert run(path, store) == 2
        err = one_line(capsys)
        assert bad in err and "has no noisable token" in err and "--allow-empty-text" in err
        assert not store.exists()
    path = dataset(tmp_path, ["we bake a cake", "", "zebra"])
    assert run(path, store, "--allow-empty-text") == 0
    rows = {r["id"]: r for r in RunStore(store, readonly=True).rows()}
    assert "notes" not in rows["r0"]
    for key in ("r1", "r2"):
        assert rows[key]["notes"] == ["text: no noisable token; certified on the other "
                                      "blocks alone"]
        assert rows[key]["max_tokens"] in (-1, 0)       # nothing certified about tokens


def test_toml_names_the_store_and_the_new_options(tmp_path):
    path = dataset(tmp_path, ["we bake a cake", ""])
    store = tmp_path / "from_toml.sqlite"
    config = tmp_path / "run.toml"
    config.write_text(f'dataset = "{path}"\nmodel = "tests.runs.toy_model:factory"\n'
                      f'sigma = 0.25\nn0 = 16\nn = 100\nalpha = 0.01\nmax_tokens = 2\n'
                      f'no_text_noise = true\nallow-empty-text = true\nstore = "{store}"\n')
    assert main(["certify", "--config", str(config), "--quiet"]) == 0
    with RunStore(store, readonly=True) as s:
        assert s.config["no_text_noise"] and s.config["allow_empty_text"]
        assert "store" not in s.config and len(s.rows()) == 2
    # the flag wins over the file's store
    other = tmp_path / "flag.sqlite"
    assert main(["certify", "--config", str(config), "--store", str(other), "--quiet"]) == 0
    assert other.exists()


def test_a_toml_store_that_is_not_a_path_is_refused(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text('model = "tests.runs.toy_model:factory"\nsigma = 0.25\nkeep_prob = 0.3\n'
                      'store = 5\n')
    assert main(["certify", "--config", str(config), "--quiet"]) == 2
    assert "store must be a non-empty string, got 5" in one_line(capsys)
