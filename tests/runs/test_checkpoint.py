"""Issue 11: checkpoints with a missing or extra config key, or damaged files, are refused in
one line through the CLI (the missing key used to be filled with a default)."""

import json

import pytest

from hybridcert.cli.main import main
from hybridcert.models import fusion


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    model = fusion.SafetyFilter(fusion.FilterConfig(("image",), hidden=8), pretrained=False)
    fusion.save(model, folder)
    return folder


def damage(folder, tmp_path, kind):
    target = tmp_path / kind
    target.mkdir()
    config = json.loads((folder / "config.json").read_text())
    weights = (folder / "model.safetensors").read_bytes()
    if kind == "missing_key":
        del config["hidden"]
    elif kind == "extra_key":
        config["dropout"] = 0.1
    elif kind == "bad_value":
        config["modalities"] = ["audio"]
    elif kind == "not_json":
        (target / "config.json").write_text("{not json")
    elif kind == "corrupt_weights":
        weights = weights[: len(weights) // 3]
    elif kind == "garbage_weights":
        weights = b"\x00\x01garbage" * 50
    if kind != "not_json":
        (target / "config.json").write_text(json.dumps(config))
    (target / "model.safetensors").write_bytes(weights)
    return target


@pytest.mark.parametrize(("kind", "message"), [
    ("missing_key", "missing fields ['hidden']"),
    ("extra_key", "unknown fields ['dropout']"),
    ("bad_value", "modalities must be image and/or text"),
    ("not_json", "is not valid JSON"),
    ("corrupt_weights", "damaged or not a safetensors file"),
    ("garbage_weights", "damaged or not a safetensors file"),
])
def test_bad_checkpoints_are_refused_in_one_line(checkpoint, tmp_path, capsys, kind, message):
    folder = damage(checkpoint, tmp_path, kind)
    with pytest.raises(ValueError, match="checkpoint"):
        fusion.load(folder)
    store = tmp_path / "s.sqlite"
    code = main(["certify", "--checkpoint", str(folder), "--sigma", "0.25", "--dataset",
                 "missing.jsonl", "--store", str(store), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("hybridcert: error:") and len(err.splitlines()) == 1
    assert not store.exists()


def test_a_good_checkpoint_loads(checkpoint):
    assert fusion.load(checkpoint).config.hidden == 8
