"""The safety benchmark's data, checkpoints, training, attack and CLI on tiny sizes."""

import json

import numpy as np
import pytest
import torch

from hybridcert.attacks import joint_attack
from hybridcert.cli.main import main
from hybridcert.data import safety
from hybridcert.models import fusion, training


@pytest.fixture(scope="module")
def tiny():
    return safety.build(60, seed=5)


def test_dataset_is_deterministic_and_labels_need_both_modalities(tiny):
    again = safety.build(60, seed=5)
    assert np.array_equal(tiny.images, again.images) and np.array_equal(tiny.tokens, again.tokens)
    assert not np.array_equal(tiny.images, safety.build(60, seed=6).images)
    unsafe = (tiny.image_kind == "dangerous") & (tiny.text_kind == "harmful")
    assert np.array_equal(tiny.labels == 1, unsafe)
    assert tiny.images.shape == (60, 3, 32, 32) and 0 <= tiny.images.min() <= tiny.images.max() <= 1
    assert tiny.tokens.shape == (60, 32) and np.all(tiny.tokens[:, 0] == safety.CLS_ID)
    # every id is either special/padding (never noised) or in the noisable vocabulary
    vocab = safety.vocabulary()
    assert vocab.size == 30522 - 999
    specials = np.isin(tiny.tokens, [safety.PAD_ID, safety.CLS_ID, safety.SEP_ID])
    assert np.all(specials | (tiny.tokens >= safety.FIRST_NOISABLE_ID))


def test_checkpoint_round_trip_without_pickle(tmp_path, tiny):
    config = fusion.FilterConfig(("image", "text"), hidden=16, sigma=0.5, keep_prob=0.3)
    model = training.train(config, tiny, epochs=1, log=lambda _: None)
    fusion.save(model, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["sigma"] == 0.5
    loaded = fusion.load(tmp_path)
    batch = {"image": torch.from_numpy(tiny.images[:8]), "text": torch.from_numpy(tiny.tokens[:8])}
    with torch.no_grad():
        assert torch.allclose(model(batch), loaded(batch))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        fusion.load(tmp_path / "absent")


def test_attack_stays_inside_its_budget(tiny):
    model = fusion.SafetyFilter(fusion.FilterConfig(hidden=16)).eval()
    vocab = safety.vocabulary()
    image, tokens = torch.from_numpy(tiny.images[0]), torch.from_numpy(tiny.tokens[0])
    adv_image, adv_tokens = joint_attack(model, image, tokens, int(tiny.labels[0]), 0.3, 2,
                                         vocab, steps=5, candidates=8)
    assert float((adv_image - image).norm()) <= 0.3 + 1e-5
    assert float(adv_image.min()) >= 0 and float(adv_image.max()) <= 1
    changed = adv_tokens != tokens
    assert int(changed.sum()) <= 2
    assert bool((tokens[changed] >= safety.FIRST_NOISABLE_ID).all())


def test_train_command(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "ckpt"), "--epochs", "1", "--n-train", "40",
                 "--data-cache", str(tmp_path / "data")]) == 0
    assert "checkpoint written" in capsys.readouterr().out
    assert fusion.load(tmp_path / "ckpt").config.epochs == 1
    assert main(["train", "--out", str(tmp_path / "x"), "--sigma", "0"]) == 2
    assert "sigma" in capsys.readouterr().err
