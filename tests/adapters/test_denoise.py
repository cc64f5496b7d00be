"""Denoiser hook: any callable on the noisy image batch, before the base model (and before the
model's own normalization)."""

import pytest
import torch

from hybridcert.adapters import Denoised, ModelAdapter, denoised
from hybridcert.blocks import Continuous, HybridNoise, Tokens
from hybridcert.noise import Gaussian, Substitution

from .conftest import generator


def test_denoiser_sees_the_noisy_batch_and_the_model_its_output():
    seen = {}

    def model(batch):
        seen["model"] = batch
        return batch["image"].flatten(1)[:, :2]

    def denoiser(x):
        seen["denoiser"] = x
        return x.clamp(0, 1) * 0.5

    batch = {"image": torch.randn(4, 3, 8, 8), "text": torch.ones(4, 5, dtype=torch.long)}
    out = Denoised(model, denoiser)(batch)
    assert seen["denoiser"] is batch["image"]
    assert torch.equal(seen["model"]["image"], batch["image"].clamp(0, 1) * 0.5)
    assert seen["model"]["text"] is batch["text"]                 # other blocks untouched
    assert torch.equal(out, (batch["image"].clamp(0, 1) * 0.5).flatten(1)[:, :2])


def test_sigma_is_passed_and_shapes_are_checked():
    calls = []
    Denoised(lambda b: b["image"], lambda x, s: calls.append(s) or x, sigma=0.25)(
        {"image": torch.zeros(1, 3, 4, 4)})
    assert calls == [0.25]
    bad = Denoised(lambda b: b["image"], lambda x: x[:, :1])
    with pytest.raises(ValueError, match=r"denoiser returned \(1, 1, 4, 4\) for a \(1, 3, 4, 4\)"
                                         r" batch"):
        bad({"image": torch.zeros(1, 3, 4, 4)})
    with pytest.raises(ValueError, match="the batch has no block 'pixels'"):
        Denoised(lambda b: b, lambda x: x, block="pixels")({"image": torch.zeros(1)})


def test_denoised_clip_denoises_unit_pixels_before_normalization(clip_adapter_):
    pytest.importorskip("transformers")
    seen = {}

    def denoiser(x):
        seen["in"] = x.clone()
        return torch.full_like(x, 0.5)

    adapter = denoised(clip_adapter_, denoiser)
    assert isinstance(adapter, ModelAdapter) and adapter.text is clip_adapter_.text
    assert adapter.images is clip_adapter_.images
    encoder = adapter.text["text"]
    noise = HybridNoise([Continuous("image", Gaussian(0.5)),
                         Tokens("text", Substitution(0.5, encoder.vocab_size),
                                encoder.vocabulary)])
    record = noise.prepare({"image": torch.rand(3, 32, 32), "text": encoder.encode("hi there")})
    batch = noise.sample(record, 8, generator(7))
    vision_input = {}
    hook = clip_adapter_.model.clip.vision_model.register_forward_pre_hook(
        lambda module, args, kwargs: vision_input.update(kwargs), with_kwargs=True)
    try:
        logits = adapter.model(batch)
    finally:
        hook.remove()
    assert torch.equal(seen["in"], batch["image"])               # the noisy [0, 1] pixels
    hf = clip_adapter_.images["image"].hf
    mean = torch.tensor(hf.image_mean).reshape(1, 3, 1, 1)
    std = torch.tensor(hf.image_std).reshape(1, 3, 1, 1)
    assert torch.allclose(vision_input["pixel_values"],
                          ((torch.full_like(batch["image"], 0.5) - mean) / std), atol=1e-6)
    # a constant denoiser output: the image no longer matters, only the text does
    plain = clip_adapter_.model({**batch, "image": torch.full_like(batch["image"], 0.5)})
    assert torch.allclose(logits, plain, atol=1e-6)
