"""Issue 24 item 6: delta checkpoints (only what training changed, each tensor's and the whole
checkpoint's SHA-256, the pretrained source's identity), refused when tampered with; the
training record and the committed manifest of the recipe's hashes; packaged checkpoints
preferred to training."""

import hashlib
import json
import shutil
import struct

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from hybridcert.cli.main import main
from hybridcert.datasets import safety
from hybridcert.models import checkpoints, fusion, training

QUERY = "text_encoder.encoder.layer.0.attention.self.query.weight"


@pytest.fixture(scope="module")
def tiny():
    return safety.build(40, seed=5)


@pytest.fixture(scope="module")
def trained(tiny):
    config = fusion.FilterConfig(text_layers=1, hidden=16, sigma=0.5, keep_prob=0.3)
    return training.train(config, tiny, epochs=1, batch_size=16, log=lambda _: None)


@pytest.fixture
def saved(trained, tmp_path):
    return fusion.save(trained, tmp_path / "ckpt")


def header(path):
    """The safetensors header (JSON) and where the data starts, read without safetensors."""
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8: 8 + size]), 8 + size


def record(meta):
    """The hash record that :func:`fusion.save` writes into the safetensors metadata."""
    return json.loads(meta["__metadata__"][fusion.METADATA_KEY])


def logits(model, tiny):
    with torch.no_grad():
        return model(tiny.batch(np.arange(12)))


def test_delta_round_trip_gives_identical_logits(saved, trained, tiny):
    loaded = fusion.load(saved)
    assert torch.equal(logits(loaded, tiny), logits(trained, tiny))
    for name, tensor in trained.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    meta, _ = header(saved / "model.safetensors")
    stored = set(meta) - {"__metadata__"}
    assert fusion.FROZEN_PREFIX + "weight" not in stored and QUERY in stored
    pretrained = record(meta)["pretrained"]
    assert pretrained["package"] == fusion.PRETRAINED_PACKAGE
    assert set(pretrained["sha256"]) == {fusion.FROZEN_PREFIX + "weight"}


def test_only_tensors_that_differ_from_the_pretrained_source_are_stored(tiny, tmp_path):
    torch.manual_seed(0)
    model = fusion.SafetyFilter(fusion.FilterConfig(text_layers=2, hidden=16)).eval()
    with torch.no_grad():                       # "training" changed one pretrained tensor
        model.text_encoder.encoder.layer[1].output.dense.bias.add_(0.01)
    fusion.save(model, tmp_path)
    meta, _ = header(tmp_path / "model.safetensors")
    encoder = {n for n in meta if n.startswith("text_encoder.")}
    assert encoder == {"text_encoder.encoder.layer.1.output.dense.bias"}
    pretrained = record(meta)["pretrained"]["sha256"]
    assert QUERY in pretrained and len(pretrained) == len(
        [n for n in model.state_dict() if n.startswith("text_encoder.")]) - 1
    # 2 MiniLM layers (3.5 M weights) are read from the package, not stored
    assert (tmp_path / "model.safetensors").stat().st_size < 1_000_000
    assert torch.equal(logits(fusion.load(tmp_path), tiny), logits(model, tiny))
    # the same model in the layout before the hashes (every weight but the word embeddings
    # stored, no metadata): the same checkpoint SHA-256
    old = tmp_path / "old"
    old.mkdir()
    save_file(model.trainable_state(), old / "model.safetensors")
    shutil.copy(tmp_path / "config.json", old / "config.json")
    assert fusion.checkpoint_sha256(old) == fusion.checkpoint_sha256(tmp_path)


def test_hashes_are_those_of_the_stored_bytes(saved):
    """Recomputed from the raw file with hashlib alone (no torch, no safetensors)."""
    path = saved / "model.safetensors"
    meta, start = header(path)
    raw = path.read_bytes()
    recorded = record(meta)["sha256"]
    described = {}
    for name, info in meta.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        digest = hashlib.sha256(raw[start + begin: start + end]).hexdigest()
        assert recorded[name] == digest, name
        dtype = {"F32": "float32", "I64": "int64"}[info["dtype"]]
        described[name] = {"dtype": dtype, "shape": info["shape"], "sha256": digest}
    with safe_open(str(safety.model_dir() / "model.safetensors"), "np") as f:
        table = f.get_tensor("embeddings.word_embeddings.weight").astype("<f4")
    pretrained = {fusion.FROZEN_PREFIX + "weight": hashlib.sha256(table.tobytes()).hexdigest()}
    config = json.loads((saved / "config.json").read_text())
    canonical = json.dumps({"config": config, "tensors": described, "pretrained": pretrained},
                           sort_keys=True, separators=(",", ":"))
    expected = hashlib.sha256(canonical.encode()).hexdigest()
    assert fusion.checkpoint_sha256(saved) == expected
    assert record(meta)["checkpoint_sha256"] == expected


def test_saving_a_model_twice_writes_the_same_bytes(trained, saved, tmp_path):
    """So ``sha256sum model.safetensors`` compares checkpoints too (safetensors writes
    several metadata keys in hash-map order)."""
    for i in range(3):
        again = fusion.save(trained, tmp_path / f"again{i}")
        assert (again / "model.safetensors").read_bytes() == \
            (saved / "model.safetensors").read_bytes()


def test_a_tampered_tensor_is_refused_by_its_hash(saved, tmp_path, capsys):
    path = saved / "model.safetensors"
    meta, start = header(path)
    begin, _ = meta[QUERY]["data_offsets"]
    raw = bytearray(path.read_bytes())
    raw[start + begin + 1] ^= 0x01                 # one bit of one weight
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=f"{path}: tensor {QUERY} has SHA-256") as err:
        fusion.load(saved)
    assert len(str(err.value).splitlines()) == 1
    store = tmp_path / "s.sqlite"
    code = main(["certify", "--checkpoint", str(saved), "--sigma", "0.5", "--keep-prob", "0.3",
                 "--dataset", "missing.jsonl", "--store", str(store), "--quiet"])
    out = capsys.readouterr().err.strip()
    assert code == 2 and out.startswith("hybridcert: error: checkpoint") and QUERY in out
    assert len(out.splitlines()) == 1 and not store.exists()


def test_an_edited_config_or_a_renamed_tensor_is_refused(saved, tmp_path):
    config = json.loads((saved / "config.json").read_text())
    config["sigma"] = 0.25
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="config.json does not match the weights"):
        fusion.load(saved)
    state = load_file(saved / "model.safetensors")
    with safe_open(str(saved / "model.safetensors"), "pt") as f:
        metadata = f.metadata()
    state["head.3.extra"] = state.pop("head.3.bias")
    save_file(state, saved / "model.safetensors", metadata=metadata)
    with pytest.raises(ValueError, match="not those it was saved with"):
        fusion.load(saved)


def test_other_pretrained_weights_are_refused(saved, tmp_path, monkeypatch):
    other = tmp_path / "minilm"
    other.mkdir()
    shutil.copy(safety.model_dir() / "config.json", other / "config.json")
    tensors = load_file(safety.model_dir() / "model.safetensors")
    tensors["embeddings.word_embeddings.weight"][5000, 0] += 1e-3
    save_file(tensors, other / "model.safetensors")
    monkeypatch.setattr(fusion, "model_dir", lambda: other)
    with pytest.raises(ValueError, match="saved against other pretrained weights: "
                       "text_encoder.embeddings.word_embeddings.weight"):
        fusion.load(saved)


def test_old_checkpoints_without_hashes_still_load(trained, saved, tiny, tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    save_file(trained.trainable_state(), old / "model.safetensors")     # the format before
    shutil.copy(saved / "config.json", old / "config.json")
    assert torch.equal(logits(fusion.load(old), tiny), logits(trained, tiny))
    # the same model: the same checkpoint hash, old layout or delta
    assert fusion.checkpoint_sha256(old) == fusion.checkpoint_sha256(saved)
    state = load_file(old / "model.safetensors")
    save_file(state, old / "model.safetensors", metadata={"format": "pt"})   # another tool's
    assert torch.equal(logits(fusion.load(old), tiny), logits(trained, tiny))
    save_file(state, old / "model.safetensors",
              metadata={fusion.METADATA_KEY: json.dumps({"format": "hybridcert-delta/9"})})
    with pytest.raises(ValueError, match="has format 'hybridcert-delta/9'"):
        fusion.load(old)


def recipe_names():
    return {checkpoints.checkpoint_dir(checkpoints.RECIPE.cache,
                                       checkpoints.demo_filter_config((0.25, keep), 0),
                                       checkpoints.RECIPE.epochs,
                                       checkpoints.RECIPE.n_train).name for keep in (0.25, 0.75)}


def test_the_manifest_holds_the_recipes_filters():
    manifest = json.loads(checkpoints.MANIFEST.read_text())["checkpoints"]
    assert recipe_names() <= set(manifest)
    for name, entry in manifest.items():
        for key in ("sha256", "data_sha256"):
            assert len(entry[key]) == 64 and int(entry[key], 16) >= 0, name
        assert checkpoints.manifest_entry(name) == entry
    assert checkpoints.manifest_entry("absent") is None


def test_the_committed_checkpoints_match_the_manifest():
    packaged = sorted(p for p in checkpoints.PACKAGED.glob("*") if p.is_dir()) \
        if checkpoints.PACKAGED.is_dir() else []
    if not packaged:
        pytest.skip("no checkpoint is shipped in the package (8.8 MB each: rebuilt by the "
                    "recipe, hashes in manifest.json)")
    assert {p.name for p in packaged} <= recipe_names()
    for folder in packaged:
        expected = checkpoints.manifest_entry(folder.name)["sha256"]
        assert fusion.checkpoint_sha256(folder) == expected
        fusion.load(folder)                                 # every tensor's hash checked
        record = json.loads((folder / checkpoints.TRAINING_RECORD).read_text())
        assert record["sha256"] == expected


def test_training_records_the_hash_and_checks_the_manifest(tiny, tmp_path, monkeypatch):
    config = fusion.FilterConfig(("image",), hidden=8, seed=3)
    name = checkpoints.checkpoint_dir(tmp_path, config, 1, len(tiny)).name
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"checkpoints": {name: {
        "sha256": "0" * 64, "data_sha256": checkpoints.data_sha256(tiny)}}}))
    monkeypatch.setattr(checkpoints, "MANIFEST", manifest)
    lines = []
    model, seconds = checkpoints.load_or_train(tmp_path / "a", config, tiny, 1, lines.append)
    directory = checkpoints.checkpoint_dir(tmp_path / "a", config, 1, len(tiny))
    record = json.loads((directory / checkpoints.TRAINING_RECORD).read_text())
    digest = fusion.checkpoint_sha256(directory)
    assert record["sha256"] == digest and record["seconds"] == round(seconds, 1)
    assert record["threads"] == torch.get_num_threads() and record["torch"] == torch.__version__
    warnings = [line for line in lines if "manifest" in line]
    assert len(warnings) == 1 and "will not match the committed report" in warnings[0]
    assert digest[:16] in warnings[0] and "same training data" in warnings[0]
    assert record["data_sha256"] == checkpoints.data_sha256(tiny)
    assert checkpoints.check_manifest(name, digest, "f" * 64, lines.append) is False
    assert "the training data differ too" in lines[-1]
    assert checkpoints.check_manifest("other", digest, None, lines.append) is None
    # retrained with the same seed on this machine: the same hash, which now matches
    manifest.write_text(json.dumps({"checkpoints": {name: {"sha256": digest}}}))
    lines.clear()
    checkpoints.load_or_train(tmp_path / "b", config, tiny, 1, lines.append)
    matches = f"  {name}: SHA-256 {digest[:16]}... matches the committed manifest"
    assert [line for line in lines if "manifest" in line] == [matches]
    lines.clear()                               # reused: checked again, not retrained
    checkpoints.load_or_train(tmp_path / "a", config, tiny, 1, lines.append)
    assert lines == [f"reusing {directory}", matches]


def test_a_packaged_checkpoint_is_preferred_to_training(tiny, tmp_path, monkeypatch):
    config = fusion.FilterConfig(("image",), hidden=8, seed=4)
    packaged = tmp_path / "trained"
    name = checkpoints.checkpoint_dir(tmp_path, config, 1, len(tiny)).name
    model = training.train(config, tiny, epochs=1, batch_size=16, log=lambda _: None)
    fusion.save(model, packaged / name)
    monkeypatch.setattr(checkpoints, "PACKAGED", packaged)
    # a checkpoint of the same name in the cache (another machine's, say) comes second
    other = training.train(fusion.FilterConfig(("image",), hidden=8, seed=5), tiny, epochs=1,
                           batch_size=16, log=lambda _: None)
    other.config = config
    fusion.save(other, checkpoints.checkpoint_dir(tmp_path / "cache", config, 1, len(tiny)))

    def refuse(*args, **kwargs):
        raise AssertionError("trained although the package ships the checkpoint")

    monkeypatch.setattr(training, "train", refuse)
    lines = []
    loaded, _ = checkpoints.load_or_train(tmp_path / "cache", config, tiny, 1, lines.append)
    assert lines == [f"reusing {packaged / name}"]
    assert torch.equal(logits(loaded, tiny), logits(model, tiny))
    # the serve demo's model too
    demo = checkpoints.demo_filter_config()
    demo_name = checkpoints.checkpoint_dir(checkpoints.RECIPE.cache, demo,
                                           checkpoints.RECIPE.epochs,
                                           checkpoints.RECIPE.n_train).name
    monkeypatch.chdir(tmp_path)
    cached = checkpoints.checkpoint_dir(checkpoints.RECIPE.cache, demo,
                                        checkpoints.RECIPE.epochs, checkpoints.RECIPE.n_train)
    fusion.save(other, cached)
    assert checkpoints.demo_checkpoint(log=lines.append) == cached
    shutil.copytree(packaged / name, packaged / demo_name)
    assert checkpoints.demo_checkpoint(log=lines.append) == packaged / demo_name
