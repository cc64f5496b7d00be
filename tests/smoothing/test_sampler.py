"""The noise samplers' marginals match the specification (chi-square at fixed seeds)."""

import numpy as np
import pytest
import torch
from scipy.stats import chisquare, kstest

from hybridcert import Gaussian, Mask, Substitution
from hybridcert.noise import MASK_INDEX
from hybridcert.smoothing import SmoothedClassifier, TokenBlock, Vocabulary

P_FLOOR = 1e-4  # a correct sampler fails this at a given seed with probability 1e-4


@pytest.mark.parametrize(("keep", "vocab"), [(0.3, 7), (0.05, 50), (0.9, 2)])
def test_substitution_keeps_with_a_and_spreads_uniformly(keep, vocab):
    generator = torch.Generator().manual_seed(11)
    x = torch.full((200_000,), 1)
    z = Substitution(keep, vocab).sample(x, generator)
    counts = np.bincount(z.numpy(), minlength=vocab)
    beta = (1 - keep) / (vocab - 1)
    expected = np.full(vocab, beta * x.numel())
    expected[1] = keep * x.numel()
    assert chisquare(counts, expected).pvalue > P_FLOOR


def test_mask_masks_with_one_minus_a():
    generator = torch.Generator().manual_seed(12)
    x = torch.randint(0, 9, (100_000,), generator=generator)
    z = Mask(0.2).sample(x, generator)
    masked = int((z == MASK_INDEX).sum())
    kept = z != MASK_INDEX
    assert torch.equal(z[kept], x[kept])
    assert chisquare([masked, x.numel() - masked], [0.8 * x.numel(), 0.2 * x.numel()]).pvalue \
        > P_FLOOR


def test_gaussian_has_the_given_sigma():
    generator = torch.Generator().manual_seed(13)
    x = torch.zeros(50_000, dtype=torch.float64)
    z = Gaussian(0.3).sample(x, generator)
    assert kstest(z.numpy() / 0.3, "norm").pvalue > P_FLOOR


@pytest.mark.parametrize("sigma", [0.25, 0.5, 0.12345])
def test_gaussian_is_x_plus_sigma_times_the_generators_normals(sigma):
    """Scaling while drawing gives exactly x + sigma * randn from the same generator, so
    seeded results (and the committed benchmark reports) do not move."""
    x = torch.rand(3, 8, 8).expand(64, 3, 8, 8)
    reference = torch.randn(x.shape, generator=torch.Generator().manual_seed(3)) * sigma + x
    drawn = Gaussian(sigma).sample(x, torch.Generator().manual_seed(3))
    assert torch.equal(drawn, reference)


def test_special_positions_and_non_noisable_ids_are_untouched():
    vocab = Vocabulary(torch.arange(100, 120), mask_id=5)
    ids = torch.tensor([1, 100, 101, 0, 119, 2])           # 1, 0, 2: special tokens
    for noise in (Substitution(0.1, 20), Mask(0.05)):
        clf = SmoothedClassifier(lambda b: torch.zeros(len(b["text"]), dtype=torch.long),
                                 {"text": noise}, 2, {"text": vocab})
        record = clf.validate({"text": TokenBlock(ids)})
        batch = clf.noisy_copies(record, 4000, seed=3)["text"]
        assert torch.equal(batch[:, [0, 3, 5]], ids[[0, 3, 5]].expand(4000, 3))
        noised = batch[:, [1, 2, 4]]
        if isinstance(noise, Mask):
            assert set(noised.unique().tolist()) <= {5, 100, 101, 119}
            assert abs(float((noised == 5).float().mean()) - 0.95) < 0.01
        else:
            assert noised.min() >= 100 and noised.max() < 120
            counts = np.bincount((noised[:, 0] - 100).numpy(), minlength=20)
            expected = np.full(20, 0.9 / 19 * 4000)
            expected[0] = 0.1 * 4000
            assert chisquare(counts, expected).pvalue > P_FLOOR


def test_a_stream_is_its_seeded_chunks_whatever_the_split():
    from hybridcert.smoothing.core import STREAM_CHUNK, Stage, _chunk_seed

    vocab = Vocabulary(torch.arange(100, 120), mask_id=5)
    clf = SmoothedClassifier(lambda b: torch.zeros(len(b["text"]), dtype=torch.long),
                             {"image": Gaussian(0.5), "text": Substitution(0.3, 20)}, 2,
                             {"text": vocab})
    record = clf.validate({"image": torch.rand(3, 4, 4),
                           "text": TokenBlock(torch.tensor([1, 100, 105, 119, 2]))})
    total = 3 * STREAM_CHUNK + 5
    # reference: the seeded chunks drawn directly, not through a stream
    chunks = [clf.noisy_copies(record, STREAM_CHUNK, _chunk_seed(9, Stage.SEQUENTIAL, c))
              for c in range(4)]
    reference = {k: torch.cat([c[k] for c in chunks])[:total] for k in chunks[0]}
    for split in ([total], [1, 63, 1, 64, 65, 3], [130, 2, total - 132], [37] * 5 + [12]):
        assert sum(split) == total
        stream = clf.stream(record, 9, Stage.SEQUENTIAL)
        pieces = [stream.copies(n) for n in split[:-1]]
        pieces += stream.copy_parts(split[-1])           # the last call as views
        for key, value in reference.items():
            assert torch.equal(torch.cat([p[key] for p in pieces]), value), (split, key)
        assert stream.drawn == total
