"""Tiled ("anyres") guards: the noise is added to the raw image at a stated size and the model's
whole image processor runs on each noisy copy inside the classifier.  Checked on tiny random
LLaVA-OneVision and LLaVA-NeXT models against the processor run on PIL images and a plain
forward pass of the whole prompt."""

import numpy as np
import pytest
import torch
from PIL import Image

from hybridcert.adapters import vlm_guard
from hybridcert.adapters.tiled import ProcessorInputs, RawImageProcessor
from hybridcert.blocks import Continuous, HybridNoise, Tokens
from hybridcert.noise import Gaussian, Substitution

from .conftest import generator, picture

RAW = (48, 64)
FAMILIES = ["onevision", "next"]


def parts(request, family):
    """(guard, model, image processor, hand prompt ids) of one family."""
    if family == "onevision":
        model, tokenizer, image_processor = request.getfixturevalue("onevision")
        guard = request.getfixturevalue("onevision_guard")
        return guard, model, image_processor, lambda text, image: onevision_ids(
            model, tokenizer, image_processor, text, image)
    model, processor = request.getfixturevalue("llava_next")
    guard = request.getfixturevalue("next_guard")
    return guard, model, processor.image_processor, lambda text, image: processor(
        text=[full_prompt(processor, text)], images=[image], add_special_tokens=False,
        truncation=False, return_tensors="pt")["input_ids"][0]


def full_prompt(template_owner, text):
    from hybridcert.adapters.vlm_guard import DEFAULT_POLICY, USER_TEMPLATE

    turn = USER_TEMPLATE.replace("{policy}", DEFAULT_POLICY).replace("{text}", text)
    content = [{"type": "image"}, {"type": "text", "text": turn}]
    return template_owner.apply_chat_template([{"role": "user", "content": content}],
                                              add_generation_prompt=True, tokenize=False)


def onevision_ids(model, tokenizer, image_processor, text, image):
    """The whole prompt's ids, the image token expanded by transformers' own OneVision
    processor arithmetic (the processor object cannot be built here: it needs torchvision for
    its video processor, so its counting method runs on a bare instance)."""
    from transformers import LlavaOnevisionProcessor

    counter = object.__new__(LlavaOnevisionProcessor)
    counter.image_processor = image_processor
    vision = model.config.vision_config
    counter.num_image_tokens = (vision.image_size // vision.patch_size) ** 2
    counter.vision_aspect_ratio = model.config.vision_aspect_ratio
    count = counter._get_number_of_features(image.height, image.width, 32, 32)
    ids = tokenizer(full_prompt(tokenizer, text), add_special_tokens=False)["input_ids"]
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    at = ids.index(image_id)
    return torch.tensor(ids[:at] + [image_id] * count + ids[at + 1:])


def as_pil(pixels: torch.Tensor) -> Image.Image:
    """A (3, H, W) tensor as the 8-bit image it denotes (clamped, rounded), by numpy."""
    array = np.clip(pixels.numpy().transpose(1, 2, 0).astype(np.float64), 0, 1)
    return Image.fromarray(np.floor(array * 255 + 0.5).astype(np.uint8))


def processed(image_processor, images):
    out = image_processor(images=images, return_tensors="pt")
    return out["pixel_values"].float(), out["image_sizes"]


@pytest.mark.parametrize("family", FAMILIES)
def test_processor_on_the_noised_tensor_equals_the_processor_on_pil_images(request, family):
    guard, _, image_processor, _ = parts(request, family)
    images = guard.images["image"]
    assert isinstance(images, RawImageProcessor) and images.size == RAW
    original = picture(70, 90, seed=2)
    clean, notes = images.process(original)
    assert clean.shape == (3, *RAW) and notes == ["resize 90x70 -> 64x48"]
    inputs = guard.model.image_inputs
    assert isinstance(inputs, ProcessorInputs)
    # the clean image: what the processor makes of the resized PIL image
    resized = original.resize((RAW[1], RAW[0]), Image.BILINEAR)
    got = inputs(clean[None])
    want_pixels, want_sizes = processed(image_processor, [resized])
    assert got["pixel_values"].shape == want_pixels.shape == (1, 5, 3, 32, 32)
    assert torch.allclose(got["pixel_values"].float(), want_pixels, atol=1e-6)
    assert torch.equal(got["image_sizes"], want_sizes) and want_sizes.tolist() == [list(RAW)]
    # noisy copies, one batch: each as the processor sees that copy as a PIL image
    noisy = clean + 0.3 * torch.randn(4, *clean.shape, generator=generator(1))
    got = inputs(noisy)
    want_pixels, _ = processed(image_processor, [as_pil(x) for x in noisy])
    assert torch.allclose(got["pixel_values"].float(), want_pixels, atol=1e-6)
    # batched = one by one = split across threads, and deterministic
    alone = torch.cat([inputs(x[None])["pixel_values"] for x in noisy])
    assert torch.equal(alone, got["pixel_values"])
    assert torch.equal(inputs(noisy)["pixel_values"], got["pixel_values"])
    for workers in (1, 3):
        split = ProcessorInputs(image_processor, workers=workers)(noisy)
        assert torch.equal(split["pixel_values"], got["pixel_values"])
        assert torch.equal(split["image_sizes"], got["image_sizes"])


@pytest.mark.parametrize("family", FAMILIES)
def test_noise_reaches_every_crop(request, family):
    guard, _, _, _ = parts(request, family)
    inputs = guard.model.image_inputs
    clean = guard.images["image"].process(picture(48, 64, seed=3))[0]
    base = inputs(clean[None])["pixel_values"][0]
    noisy = inputs((clean + 0.25 * torch.randn(clean.shape, generator=generator(2)))[None])
    changed = (noisy["pixel_values"][0] - base).abs().flatten(1).amax(1)
    assert changed.shape == (5,) and bool((changed > 0.05).all())
    # a change confined to the raw image's top-left corner shows in the base view and in the
    # crop that holds that corner, not in a crop far from it
    corner = clean.clone()
    corner[:, :8, :8] = 1 - corner[:, :8, :8]
    moved = (inputs(corner[None])["pixel_values"][0] - base).abs().flatten(1).amax(1)
    assert moved[0] > 0 and moved[1] > 0 and moved[-1] == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_scores_equal_a_plain_forward_pass_of_the_whole_prompt(request, family):
    guard, model, image_processor, hand_ids = parts(request, family)
    texts = ["how do i hurt them", "a calm lake at dawn"]
    image = picture(48, 64, seed=4)
    clean = guard.images["image"].process(image)[0]
    encoder = guard.text["text"]
    blocks = [encoder.encode(t) for t in texts]
    batch = {"text": torch.stack([b.ids for b in blocks]),
             "text_attention": torch.stack([b.attention for b in blocks]),
             "image": clean.expand(2, -1, -1, -1)}
    scores = guard.model(batch)
    ids, _, last = guard.model.sequences(batch)
    pixels, sizes = processed(image_processor, [image])
    tokenizer = encoder
    for row, text in enumerate(texts):
        expected = hand_ids(text, image)
        assert torch.equal(ids[row, : int(last[row]) + 1], expected)
        with torch.no_grad():
            logits = model(input_ids=expected[None], pixel_values=pixels,
                           image_sizes=sizes).logits[0, -1]
        logp = torch.log_softmax(logits.double(), -1)
        safe, unsafe = (tokenizer.token_id(w) for w in ("safe", "unsafe"))
        assert torch.allclose(scores[row].double(), logp[[safe, unsafe]], atol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_tiled_guard_certifies_with_noise_on_both_blocks(request, family):
    from hybridcert.smoothing import SmoothedClassifier

    guard, _, _, _ = parts(request, family)
    encoder = guard.text["text"]
    noise = HybridNoise([Continuous("image", Gaussian(0.5)),
                         Tokens("text", Substitution(0.75, encoder.vocab_size),
                                encoder.vocabulary)])
    record = noise.prepare({"image": guard.images["image"].process(picture(48, 64))[0],
                            "text": encoder.encode("hello there")})
    smoothed = SmoothedClassifier(guard.model, noise, 2, batch_size=16)
    with torch.no_grad():
        first = smoothed.certify(record, n0=8, n=32, alpha=0.01, seed=0)
        again = smoothed.certify(record, n0=8, n=32, alpha=0.01, seed=0)
    assert np.array_equal(first.counts, again.counts) and int(first.counts.sum()) == 32


def test_tiled_processors_need_a_raw_size(onevision, llava_next):
    model, tokenizer, image_processor = onevision
    with pytest.raises(ValueError, match=r"processor must run after the noise "
                                         r"\(vlm_guard\(\.\.\., raw_size=\(H, W\)\)\)"):
        vlm_guard(*llava_next)
    with pytest.raises(ValueError, match="raw_size must be \\(height, width\\) positive "
                                         "integers, got \\(48, 0\\)"):
        vlm_guard(model, tokenizer, image_processor=image_processor, raw_size=(48, 0))
    with pytest.raises(ValueError, match="without raw_size, vlm_guard needs the model's "
                                         "processor"):
        vlm_guard(model, tokenizer, image_processor=image_processor)
    with pytest.raises(ValueError, match="raw_size needs an image block"):
        vlm_guard(model, tokenizer, image_block=None, raw_size=RAW)


def test_the_region_space_is_stated(onevision_guard, guard):
    tiled = onevision_guard.describe()["images"]["image"]["space"]
    assert tiled.startswith("raw pixels in [0, 1] at 64x48, before "
                            "LlavaOnevisionImageProcessorPil")
    single = guard.describe()["images"]["image"]["space"]
    assert single == ("pixels in [0, 1] at 32x32, after CLIPImageProcessorPil's resize and "
                      "crop, before its normalization")


def test_a_long_policy_is_never_cut(llava, llava_next):
    """The prefix holds the whole policy even past a tokenizer's stored max_length (MiniLM's
    is 128, which a processor call would otherwise truncate to, silently)."""
    policy = "word " * 200
    for model, processor, raw in (*llava, None), (*llava_next, RAW):
        guard = vlm_guard(model, processor, policy=policy, raw_size=raw)
        words = guard.model.prefix.tolist().count(processor.tokenizer.convert_tokens_to_ids(
            "word"))
        assert words == 200


def test_a_tiled_guard_at_an_operating_point_certifies_a_flag(onevision):
    """Every copy Unsafe (the mass threshold sits below any copy's Unsafe mass): the flag at
    tau = 4.6e-5 is certified, with an image radius in raw pixels and appended slots."""
    from hybridcert.blocks import Append
    from hybridcert.smoothing import Detector, SmoothedClassifier

    model, tokenizer, image_processor = onevision
    guard = vlm_guard(model, tokenizer, image_processor=image_processor, raw_size=RAW,
                      max_text_tokens=24, score="mass", copy_threshold=1e-30)
    encoder = guard.text["text"]
    noise = HybridNoise([Continuous("image", Gaussian(0.5)),
                         Tokens("text", Substitution(0.75, encoder.vocab_size),
                                encoder.vocabulary, threat=Append(2, encoder.token_id("!")),
                                max_length=encoder.max_length)])
    record = {"image": guard.images["image"].process(picture(48, 64))[0],
              "text": encoder.encode("how do i hurt them")}
    smoothed = SmoothedClassifier(guard.model, noise, 2, batch_size=50)
    with torch.no_grad():
        result = smoothed.certify_detector(record, 200, 0.01, Detector(4.6e-5, 1, "flag"))
    assert result.counts.tolist() == [0, 200] and result.decision == "flag"
    assert result.region.max_tokens == 2 and result.region.l2_radius(2) > 0
