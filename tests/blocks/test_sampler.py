"""HybridNoise.sampler (a sequential stream's chunks) draws exactly what HybridNoise.sample
draws from the same generator state: the same batch (keys in order, dtypes, values) and the
same generator state afterwards, for every kind of block, threat and noise."""

import pytest
import torch

from hybridcert import Gaussian, Mask, Substitution
from hybridcert.blocks import (
    Anywhere,
    Append,
    Continuous,
    HybridNoise,
    Suffix,
    TokenBlock,
    Tokens,
    Vocabulary,
)

PAD, CLS, SEP, MASK = 0, 1, 2, 3
VOCAB = Vocabulary(torch.arange(10, 60), mask_id=MASK)
BARE = Vocabulary(torch.arange(10, 60))                 # no mask id
TEXT = TokenBlock(torch.tensor([CLS, 12, 30, 59, 44, SEP, PAD, PAD]),
                  attention=torch.tensor([1, 1, 1, 1, 1, 1, 0, 0]))
IMAGE = torch.rand(3, 5, 4, generator=torch.Generator().manual_seed(0))


def _cases():
    yield "image+substitution", [Continuous("image", Gaussian(0.3)),
                                 Tokens("text", Substitution(0.7, 50), BARE)], \
        {"image": IMAGE, "text": TEXT}
    yield "mask", [Continuous("image", Gaussian(0.3)), Tokens("text", Mask(0.6), VOCAB)], \
        {"text": TEXT, "image": IMAGE}
    yield "suffix", [Tokens("text", Substitution(0.5, 50), BARE, Suffix(2))], {"text": TEXT}
    yield "append", [Tokens("text", Substitution(0.5, 50), VOCAB, Append(3, 11))], \
        {"text": TEXT}
    yield "float64, un-noised and unknown blocks", [
        Continuous("image", Gaussian(0.5)), Continuous("plain"),
        Tokens("caption", None, BARE), Tokens("text", Substitution(0.9, 50), BARE)], {
        "image": IMAGE.double(), "plain": torch.ones(2, 2), "extra": torch.zeros(3),
        "caption": TokenBlock(torch.tensor([12, 13, 14])), "ids": TokenBlock(torch.tensor([5])),
        "text": TokenBlock(torch.tensor([20, 21, 22, 23]))}
    yield "anywhere without attention", [Tokens("text", Substitution(0.4, 50), BARE,
                                                Anywhere())], \
        {"text": TokenBlock(torch.tensor([12, 13, 7, 14]))}


CASES = {name: (blocks, record) for name, blocks, record in _cases()}


def _same(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("copies", [1, 64, 257])
def test_sampler_draws_what_sample_draws(name, copies):
    blocks, raw = CASES[name]
    noise = HybridNoise(blocks)
    record = noise.prepare(raw)
    sampler = noise.sampler(record)
    for seed in (0, 1, 12345):
        mine, theirs = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        for _ in range(2):                  # drawn again: nothing carried between calls
            _same(sampler(copies, mine), noise.sample(record, copies, theirs))
        assert torch.equal(torch.rand(5, generator=mine), torch.rand(5, generator=theirs))


def test_substitution_at_positions_outside_the_vocabulary_takes_the_general_path():
    """A hand-made record noising an id the vocabulary lacks (prepare refuses it): sample
    writes the mask id where such a position is kept, and the sampler must give the same."""
    noise = HybridNoise([Tokens("text", Substitution(0.5, 50), VOCAB)])
    record = {"text": TokenBlock(torch.tensor([12, 7, 13]), torch.tensor([True, True, True]),
                                 None)}
    sampler = noise.sampler(record)
    mine, theirs = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    drawn = sampler(400, mine)
    _same(drawn, noise.sample(record, 400, theirs))
    assert (drawn["text"][:, 1] == MASK).any()
