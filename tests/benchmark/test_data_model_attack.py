"""The safety filter: pretrained MiniLM layers, attention mask, checkpoints, adapter, noise
training through HybridNoise.noise_batch, attack budget and the train command."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from hybridcert.adapters import ImageProcessor, ModelAdapter
from hybridcert.attacks import joint_attack
from hybridcert.blocks import HybridNoise
from hybridcert.cli.main import main
from hybridcert.datasets import safety
from hybridcert.models import fusion, training
from hybridcert.noise import Gaussian, Substitution


@pytest.fixture(scope="module")
def tiny():
    return safety.build(40, seed=5)


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return fusion.SafetyFilter(fusion.FilterConfig(text_layers=1, hidden=16)).eval()


def test_text_layers_are_minilm_pretrained_weights():
    model = fusion.SafetyFilter(fusion.FilterConfig(text_layers=2, hidden=16))
    assert len(model.text_encoder.encoder.layer) == 2
    state = model.state_dict()
    with safe_open(str(safety.model_dir() / "model.safetensors"), "pt") as f:
        for name in ("encoder.layer.1.attention.self.query.weight",
                     "encoder.layer.0.output.dense.bias", "embeddings.position_embeddings.weight",
                     "embeddings.word_embeddings.weight"):
            assert torch.equal(state["text_encoder." + name], f.get_tensor(name).float()), name
    frozen = model.text_encoder.embeddings.word_embeddings.weight
    assert not frozen.requires_grad
    assert model.text_encoder.encoder.layer[0].attention.self.query.weight.requires_grad
    with pytest.raises(ValueError, match="text_layers must be"):
        fusion.FilterConfig(text_layers=7)
    with pytest.raises(ValueError, match="modalities must be"):
        fusion.FilterConfig(modalities=("audio",))


def test_padding_is_read_from_the_attention_mask(small_model, tiny):
    batch = tiny.batch(np.arange(6))
    with torch.no_grad():
        logits = small_model(batch)
        # ids under attention 0 never matter, whatever they are
        changed = batch["text"].clone()
        changed[batch["text_attention"] == 0] = 2000
        assert torch.allclose(small_model({**batch, "text": changed}), logits, atol=1e-5)
        # extra all-padding columns are dropped: same logits
        wider = {**batch, "text": torch.cat([batch["text"], torch.zeros(6, 8, dtype=torch.long)],
                                            1),
                 "text_attention": torch.cat([batch["text_attention"],
                                              torch.zeros(6, 8, dtype=torch.long)], 1)}
        assert torch.allclose(small_model(wider), logits, atol=1e-5)
        # attending to the padding changes the answer: the mask is really used
        everything = {**batch, "text_attention": torch.ones_like(batch["text_attention"])}
        assert not torch.allclose(small_model(everything), logits, atol=1e-4)
    with pytest.raises(ValueError, match="text_attention"):
        small_model({"image": batch["image"], "text": batch["text"]})


def test_checkpoint_round_trip_without_pickle(tmp_path, tiny):
    config = fusion.FilterConfig(text_layers=1, hidden=16, sigma=0.5, keep_prob=0.3)
    model = training.train(config, tiny, epochs=1, batch_size=16, log=lambda _: None)
    fusion.save(model, tmp_path)
    stored = json.loads((tmp_path / "config.json").read_text())
    assert stored["sigma"] == 0.5 and stored["text_layers"] == 1 and stored["epochs"] == 1
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert fusion.FROZEN_PREFIX + "weight" not in keys          # read from the package
    assert "text_encoder.encoder.layer.0.attention.self.query.weight" in keys   # fine-tuned
    loaded = fusion.load(tmp_path)
    batch = tiny.batch(np.arange(8))
    with torch.no_grad():
        assert torch.allclose(model(batch), loaded(batch), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        fusion.load(tmp_path / "absent")
    stored["colour"] = 1
    (tmp_path / "config.json").write_text(json.dumps(stored))
    with pytest.raises(ValueError, match="unknown fields"):
        fusion.load(tmp_path)


def test_load_adapter(tmp_path, small_model, tiny):
    fusion.save(small_model, tmp_path)
    adapter = fusion.load_adapter(tmp_path)
    assert isinstance(adapter, ModelAdapter)
    assert adapter.num_classes == 2 and list(adapter.class_names) == ["safe", "unsafe"]
    encoder = adapter.text["text"]
    assert encoder.vocab_size == 30522 - 999 and encoder.max_length == 32
    assert encoder.pad_id == safety.PAD_ID and not encoder.truncate
    block = encoder.encode(str(tiny.texts[0]))
    assert torch.equal(block.ids, torch.from_numpy(tiny.tokens[0]))
    assert adapter.images["image"] == ImageProcessor(size=(48, 48), resize="refuse")
    with torch.no_grad():
        assert torch.allclose(adapter.model(tiny.batch(np.arange(3))),
                              small_model(tiny.batch(np.arange(3))), atol=1e-6)


def test_training_noises_every_batch_through_hybrid_noise(monkeypatch, tiny):
    calls = []
    original = HybridNoise.noise_batch

    def spy(self, batch, generator, *args, **kwargs):
        calls.append(self.describe())
        return original(self, batch, generator, *args, **kwargs)

    monkeypatch.setattr(HybridNoise, "noise_batch", spy)
    config = fusion.FilterConfig(text_layers=1, hidden=16, sigma=0.5, keep_prob=0.25)
    training.train(config, tiny, epochs=2, batch_size=16, log=lambda _: None)
    assert len(calls) == 2 * 3                        # 40 records in batches of 16, 2 epochs
    image, text = calls[0]
    assert image["noise"] == {"gaussian": 0.5}
    assert text["noise"] == {"substitution": 0.25, "vocab_size": 30522 - 999}
    noises = training.noises_for(config)
    assert isinstance(noises["image"], Gaussian) and noises["image"].sigma == 0.5
    assert isinstance(noises["text"], Substitution) and noises["text"].vocab_size == 29523


def test_training_is_bit_identical_for_a_seed_on_one_machine(tiny):
    config = dict(text_layers=1, hidden=16, sigma=0.5, keep_prob=0.5)
    runs = [training.train(fusion.FilterConfig(**config, seed=s), tiny, epochs=1,
                           batch_size=16, log=lambda _: None).trainable_state()
            for s in (3, 3, 4)]
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_predict_and_metrics(small_model, tiny):
    pred = training.predict(small_model, tiny)
    with torch.no_grad():
        direct = small_model(tiny.batch(np.arange(len(tiny)))).argmax(1).numpy()
    assert np.array_equal(pred, direct)
    votes = training.predict(small_model, tiny, copies=5, seed=1)
    assert np.array_equal(votes, training.predict(small_model, tiny, copies=5, seed=1))
    metrics = training.class_metrics(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]))
    assert metrics == {"safe": 1.0, "unsafe": 2 / 3, "balanced": (1 + 2 / 3) / 2}


def test_attack_stays_inside_its_budget(small_model, tiny):
    vocab = safety.vocabulary()
    image, tokens = tiny.image(0), torch.from_numpy(tiny.tokens[0])
    attention = torch.from_numpy(tiny.attention[0])
    noise = training.hybrid_noise(small_model.config)
    for kwargs in ({}, {"noise": noise, "samples": 4}):
        adv_image, adv_tokens = joint_attack(small_model, image, tokens, int(tiny.labels[0]),
                                             0.3, 2, vocab, attention=attention, steps=5,
                                             candidates=8, **kwargs)
        assert float((adv_image - image).norm()) <= 0.3 + 1e-5
        assert float(adv_image.min()) >= 0 and float(adv_image.max()) <= 1
        changed = adv_tokens != tokens
        assert int(changed.sum()) <= 2
        assert bool((tokens[changed] >= safety.FIRST_NOISABLE_ID).all())
        assert bool((attention[changed] == 1).all())      # padding is never attacked
    with pytest.raises(ValueError, match="attention"):
        joint_attack(small_model, image, tokens, 0, 0.1, 1, vocab, attention=attention[:3])
    with pytest.raises(ValueError, match="samples"):
        joint_attack(small_model, image, tokens, 0, 0.1, 1, vocab, noise=noise)


def test_train_command(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "ckpt"), "--epochs", "1", "--n-train", "40",
                 "--data-cache", str(tmp_path / "data")]) == 0
    assert "checkpoint written" in capsys.readouterr().out
    assert fusion.load(tmp_path / "ckpt").config.epochs == 1
    assert main(["train", "--out", str(tmp_path / "x"), "--sigma", "0"]) == 2
    assert "sigma" in capsys.readouterr().err
