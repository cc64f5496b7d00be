"""The example entry points run end to end: a user's JSONL through the model's own
preprocessing into a certificate."""

import importlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from hybridcert.adapters import ModelAdapter
from hybridcert.blocks import Append, Continuous, HybridNoise, Tokens
from hybridcert.datasets import DataSpec, load_items
from hybridcert.noise import Gaussian, Substitution
from hybridcert.smoothing import SmoothedClassifier


def entry_point(text):
    module, _, attr = text.partition(":")
    return getattr(importlib.import_module(module), attr)()


@pytest.fixture
def user_data(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i, text in enumerate(["how do i hurt them", "we bake a cake", "a lovely day"]):
        size = (48, 40) if i else (32, 32)
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png")
        rows.append({"id": f"r{i}", "image": f"{i}.png", "text": text, "label": i % 2})
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path / "data.jsonl"


@pytest.mark.parametrize("factory", ["hybridcert.adapters.examples:tiny_clip",
                                     "hybridcert.adapters.examples:tiny_llava_guard"])
def test_entry_point_certifies_a_users_dataset(factory, user_data):
    adapter = entry_point(factory)
    assert isinstance(adapter, ModelAdapter) and adapter.num_classes == 2
    items = load_items(DataSpec(str(user_data)), adapter, {"image", "text"})
    assert items[0].notes == [] and items[1].notes[0].endswith("40x48 -> 32x32")
    encoder = adapter.text["text"]
    threat = Append(2, encoder.token_id("!")) if "guard" in factory else None
    tokens = Tokens("text", Substitution(0.5, encoder.vocab_size), encoder.vocabulary,
                    **({"threat": threat, "max_length": encoder.max_length} if threat else {}))
    noise = HybridNoise([Continuous("image", Gaussian(0.25)), tokens])
    smoothed = SmoothedClassifier(adapter.model, noise, 2, batch_size=32)
    with torch.no_grad():
        result = smoothed.certify(items[0].record(), n0=16, n=64, alpha=0.01, seed=0)
        again = smoothed.certify(items[0].record(), n0=16, n=64, alpha=0.01, seed=0)
    assert result.label in (-1, 0, 1)
    assert np.array_equal(result.counts, again.counts) and int(result.counts.sum()) == 64
