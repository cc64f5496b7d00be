"""CLIP-style classifier: the processor's geometry before the noise, the noise in [0, 1] pixel
space, normalization after it; text through the model's tokenizer, specials never noised."""

import os

import pytest
import torch

from hybridcert.adapters import HFImageProcessor, ImageProcessor, clip_adapter
from hybridcert.blocks import Continuous, HybridNoise, Tokens
from hybridcert.noise import Gaussian, Substitution

from .conftest import generator, picture

TEXT = "i will hurt you with this knife tonight"


def noise_for(adapter, sigma=0.5, keep=0.1):
    encoder = adapter.text["text"]
    return HybridNoise([Continuous("image", Gaussian(sigma)),
                        Tokens("text", Substitution(keep, encoder.vocab_size),
                               encoder.vocabulary)])


def test_image_block_is_the_processors_geometry_in_unit_pixels(clip_adapter_, tmp_path):
    processor = clip_adapter_.images["image"]
    assert isinstance(processor, HFImageProcessor) and processor.size == (32, 32)
    image = picture(40, 50)
    image.save(tmp_path / "x.png")
    tensor, changes = processor.load(tmp_path / "x.png")
    # the processor itself, without its normalization, gives the block
    reference = processor.hf(images=image, do_normalize=False, return_tensors="pt")
    assert torch.equal(tensor, reference["pixel_values"][0])
    assert float(tensor.min()) >= 0 and float(tensor.max()) <= 1
    assert changes == ["CLIPImageProcessorPil shortest_edge_crop 50x40 -> 32x32"]
    assert ImageProcessor.from_hf(processor.hf) == processor


def test_noise_reaches_the_model_in_pixel_space_before_normalization(clip_adapter_):
    processor = clip_adapter_.images["image"]
    record = {"image": processor.process(picture())[0],
              "text": clip_adapter_.text["text"].encode(TEXT)}
    noise = noise_for(clip_adapter_, sigma=0.5)
    batch = noise.sample(noise.prepare(record), 16, generator(1))
    # the noise is added to the [0, 1] pixels: x + sigma * N(0, 1), unclipped
    delta = batch["image"] - record["image"]
    assert 0.45 < float(delta.std()) < 0.55 and float(batch["image"].min()) < 0
    seen = {}
    vision = clip_adapter_.model.clip.vision_model
    hook = vision.register_forward_pre_hook(
        lambda module, args, kwargs: seen.update(kwargs), with_kwargs=True)
    try:
        clip_adapter_.model(batch)
    finally:
        hook.remove()
    # the vision tower receives the noisy pixels normalized with CLIP's own mean and std
    mean = torch.tensor(processor.hf.image_mean).reshape(1, 3, 1, 1)
    std = torch.tensor(processor.hf.image_std).reshape(1, 3, 1, 1)
    assert torch.allclose(seen["pixel_values"], (batch["image"] - mean) / std, atol=1e-6)


def test_clean_logits_match_the_hf_pipeline(clip_adapter_):
    """An independent computation: the HF processor with its own normalization, the HF
    tokenizer with padding, CLIP's feature functions and the head."""
    image = picture(seed=3)
    processor = clip_adapter_.images["image"]
    record = {"image": processor.process(image)[0],
              "text": clip_adapter_.text["text"].encode(TEXT)}
    clean = HybridNoise([Continuous("image"), Tokens("text")])      # no noise
    batch = clean.sample(clean.prepare(record), 1, generator())
    logits = clip_adapter_.model(batch)
    model = clip_adapter_.model
    tokenizer_out = _tokenizer(clip_adapter_)(TEXT, padding="max_length", max_length=32,
                                              return_tensors="pt")
    pixels = processor.hf(images=image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        img = model.clip.get_image_features(pixel_values=pixels).pooler_output
        txt = model.clip.get_text_features(input_ids=tokenizer_out["input_ids"],
                                           attention_mask=tokenizer_out["attention_mask"]
                                           ).pooler_output
        expected = model.head(torch.cat([img / img.norm(dim=-1, keepdim=True),
                                         txt / txt.norm(dim=-1, keepdim=True)], dim=-1))
    assert torch.allclose(logits, expected, atol=1e-5)


def _tokenizer(adapter):
    from hybridcert.adapters.examples import minilm_tokenizer

    return minilm_tokenizer()


def test_special_tokens_are_never_noised(clip_adapter_):
    tokenizer = _tokenizer(clip_adapter_)
    encoder = clip_adapter_.text["text"]
    special = set(tokenizer.all_special_ids)
    assert special == {0, 100, 101, 102, 103}
    assert not any(bool(encoder.vocabulary.contains(torch.tensor([i]))[0]) for i in special)
    assert encoder.vocab_size == len(tokenizer) - len(special)
    block = encoder.encode(TEXT)
    noise = noise_for(clip_adapter_, keep=0.05)
    prepared = noise.prepare({"image": torch.rand(3, 32, 32), "text": block})
    batch = noise.sample(prepared, 2000, generator(2))
    ids = batch["text"]
    fixed = ~prepared["text"].noisable
    assert int(fixed.sum()) == 32 - len(TEXT.split())      # [CLS], [SEP] and padding
    assert torch.equal(ids[:, fixed], block.ids[fixed].expand(2000, -1))
    noised = ids[:, prepared["text"].noisable]
    assert float((noised != block.ids[prepared["text"].noisable]).float().mean()) > 0.9
    assert not torch.isin(noised, torch.tensor(sorted(special))).any()


def test_refuses_what_it_cannot_reproduce(clip_adapter_):
    model = clip_adapter_.model
    hf = clip_adapter_.images["image"].hf
    tokenizer = _tokenizer(clip_adapter_)
    with pytest.raises(ValueError, match="max_length 100 exceeds the text encoder's 64 "
                                         "position embeddings"):
        clip_adapter(model.clip, image_processor=hf, tokenizer=tokenizer, head=model.head,
                     max_length=100)
    with pytest.raises(ValueError, match="must rescale pixels by 1/255"):
        HFImageProcessor.build(type(hf)(do_rescale=False))

    def tiles(images, **_):
        return {"pixel_values": torch.zeros(1, 5, 3, 32, 32)}

    tiles.do_rescale = True
    with pytest.raises(ValueError, match="not one \\(3, H, W\\) image"):
        HFImageProcessor.build(tiles)
    with pytest.raises(ValueError, match="head must be a torch module"):
        clip_adapter(model.clip, image_processor=hf, tokenizer=tokenizer, head=lambda x: x)


def test_a_clip_run_prints_no_torchvision_warning(tmp_path):
    """transformers warns 'CLIPImageProcessor requires torchvision (not installed); falling
    back to CLIPImageProcessorPil' whenever that name is used without torchvision; hybridcert
    drops exactly that message, in a fresh interpreter running the command line."""
    import importlib.util
    import json
    import logging
    import subprocess
    import sys
    from pathlib import Path

    if importlib.util.find_spec("torchvision") is not None:
        pytest.skip("torchvision is installed: transformers does not fall back")
    root = Path(__file__).resolve().parents[2]
    picture(32, 32).save(tmp_path / "a.png")
    (tmp_path / "d.jsonl").write_text(json.dumps({"id": "a", "image": "a.png",
                                                  "text": "look at this", "label": 0}))
    env = {**os.environ, "PYTHONPATH": f"{root / 'src'}{os.pathsep}{root}",
           "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "hybridcert.cli.main", "certify", "--model",
         "tests.adapters.clip_entry:factory", "--dataset", str(tmp_path / "d.jsonl"),
         "--sigma", "0.25", "--keep-prob", "0.5", "--n0", "4", "--n", "20", "--quiet",
         "--store", str(tmp_path / "s.sqlite")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "torchvision" not in done.stderr and "torchvision" not in done.stdout
    # only that message is dropped: the logger's other warnings still pass
    from hybridcert.adapters.hf import _QuietTorchvisionFallback

    quiet = _QuietTorchvisionFallback()

    def record(message):
        return logging.LogRecord("transformers.utils.import_utils", logging.WARNING, "", 0,
                                 message, None, None)

    assert not quiet.filter(record("`CLIPImageProcessor` requires torchvision (not "
                                   "installed); falling back to `CLIPImageProcessorPil` for "
                                   "backward compatibility."))
    assert quiet.filter(record("`CLIPImageProcessor` requires torchvision"))
    assert quiet.filter(record("torchvision is too old; some other warning"))
