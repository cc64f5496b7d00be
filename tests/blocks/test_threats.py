"""Text threat models: which positions are noised (issue 13.3).  Samplers checked at fixed
seeds: only the right positions ever change, they change at rate 1 - a, and substituted values
are uniform over the other V - 1 noisable ids (chi-square)."""

import numpy as np
import pytest
import torch
from scipy.stats import binomtest, chisquare

from hybridcert import Mask, Substitution
from hybridcert.blocks import (
    Anywhere,
    Append,
    HybridNoise,
    Suffix,
    TextEncoder,
    TokenBlock,
    Tokens,
    Vocabulary,
)

PAD, CLS, SEP, MASK = 0, 1, 2, 3
VOCAB = Vocabulary(torch.arange(10, 20), mask_id=MASK)     # V = 10
KEEP = 0.6
COPIES = 20_000


def padded_block(content, length=14):
    ids = [CLS, *content, SEP]
    attention = [1] * len(ids) + [0] * (length - len(ids))
    ids += [PAD] * (length - len(ids))
    return TokenBlock(torch.tensor(ids), attention=torch.tensor(attention))


def sample(threat, block, noise=None):
    spec = Tokens("text", noise or Substitution(KEEP, VOCAB.size), VOCAB, threat)
    hybrid = HybridNoise([spec])
    record = hybrid.prepare({"text": block})
    generator = torch.Generator().manual_seed(7)
    batch = hybrid.sample(record, COPIES, generator)
    return record["text"], batch["text"], batch["text_attention"]


def check_positions(prepared, noisy, expected_positions):
    changed = (noisy != prepared.ids).numpy()
    noised = np.zeros(prepared.ids.numel(), dtype=bool)
    noised[expected_positions] = True
    assert prepared.noisable.numpy().tolist() == noised.tolist()
    assert not changed[:, ~noised].any()                 # nothing else ever changes
    for j in expected_positions:                          # change rate 1 - a at each position
        test = binomtest(int(changed[:, j].sum()), COPIES, 1 - KEEP)
        assert test.pvalue > 1e-4
        values = noisy[changed[:, j], j].numpy()          # uniform over the other V - 1 ids
        others = [v for v in range(10, 20) if v != int(prepared.ids[j])]
        counts = [int((values == v).sum()) for v in others]
        assert chisquare(counts).pvalue > 1e-4


def test_substitution_anywhere_noises_every_content_token():
    block = padded_block([11, 12, 13, 14, 15])
    prepared, noisy, _ = sample(Anywhere(), block)
    check_positions(prepared, noisy, [1, 2, 3, 4, 5])


def test_suffix_noises_only_the_last_d_content_tokens():
    block = padded_block([11, 12, 13, 14, 15, 16, 17])
    prepared, noisy, _ = sample(Suffix(3), block)
    check_positions(prepared, noisy, [5, 6, 7])
    # A text shorter than the suffix is noised everywhere.
    prepared, noisy, _ = sample(Suffix(30), padded_block([11, 12]))
    check_positions(prepared, noisy, [1, 2])


def test_append_inserts_noised_slots_after_the_text():
    block = padded_block([11, 12, 13])
    prepared, noisy, attention = sample(Append(4, placeholder_id=19), block)
    assert prepared.ids.tolist() == [CLS, 11, 12, 13, 19, 19, 19, 19, SEP, PAD, PAD, PAD, PAD,
                                     PAD]
    assert prepared.attention.tolist() == [1] * 9 + [0] * 5
    assert attention[0].tolist() == prepared.attention.tolist()
    check_positions(prepared, noisy, [4, 5, 6, 7])


def test_append_grows_an_unpadded_text_and_respects_the_model_length():
    block = TokenBlock(torch.tensor([CLS, 11, SEP]))
    spec = Tokens("text", Substitution(KEEP, 10), VOCAB, Append(2, 19))
    assert HybridNoise([spec]).prepare({"text": block})["text"].ids.tolist() == \
        [CLS, 11, 19, 19, SEP]
    tight = Tokens("text", Substitution(KEEP, 10), VOCAB, Append(13, 19), max_length=14)
    with pytest.raises(ValueError, match="exceeds the model's maximum length 14"):
        HybridNoise([tight]).prepare({"text": padded_block([11, 12])})
    with pytest.raises(ValueError, match="placeholder id 5 is not a noisable id"):
        HybridNoise([Tokens("text", Mask(0.5), VOCAB, Append(2, 5))]).prepare({"text": block})


def test_masking_under_a_threat_writes_the_mask_id_only_there():
    block = padded_block([11, 12, 13, 14])
    prepared, noisy, _ = sample(Suffix(2), block, Mask(KEEP))
    changed = noisy != prepared.ids
    assert not changed[:, :3].any() and not changed[:, 5:].any()
    assert set(noisy[changed].tolist()) == {MASK}


def test_text_encoder_pads_refuses_and_reports():
    words = {"hello": 11, "world": 12}
    encoder = TextEncoder(lambda t: [CLS] + [words.get(w, 13) for w in t.split()] + [SEP],
                          VOCAB, PAD, max_length=5)
    block = encoder.encode("hello world")
    assert block.ids.tolist() == [CLS, 11, 12, SEP, PAD]
    assert block.attention.tolist() == [1, 1, 1, 1, 0]
    with pytest.raises(ValueError, match="more than the model's maximum length 5"):
        encoder.encode("hello world hello world")
    cut = TextEncoder(encoder.encode_ids, VOCAB, PAD, 5, truncate=True)
    assert cut.encode_reporting("hello world hello world")[1] is True
    with pytest.raises(ValueError, match="lone surrogate"):
        encoder.encode("bad \ud800")
    with pytest.raises(ValueError, match="must be a string"):
        encoder.encode(3)
    with pytest.raises(ValueError, match="pad_id 11 is among the noisable ids"):
        TextEncoder(encoder.encode_ids, VOCAB, 11, 5)
    assert encoder.token_id("hello") == 11
