"""A guard's per-copy operating point: a copy is Unsafe iff its unsafe score (label mass, or
log-mass margin over Safe) reaches ``copy_threshold``; checked on a model whose next-token
distribution is a known table, against numpy."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from hybridcert.adapters import GuardClassifier, vlm_guard
from hybridcert.blocks import HybridNoise, Tokens
from hybridcert.noise import Substitution
from hybridcert.smoothing import SmoothedClassifier

VOCAB = 12
SAFE, UNSAFE = [5], [6, 7]
PREFIX, SUFFIX = [1, 2], [3]


class TableModel(nn.Module):
    """Next-token logits = ``table[first user token]`` at every position."""

    def __init__(self, table):
        super().__init__()
        self.register_buffer("table", torch.as_tensor(table, dtype=torch.float32))

    def forward(self, input_ids, attention_mask=None, logits_to_keep=None, **_):
        rows = self.table[input_ids[:, len(PREFIX)]]
        return SimpleNamespace(logits=rows[:, None, :].expand(-1, input_ids.shape[1], -1))


@pytest.fixture(scope="module")
def table():
    return np.random.default_rng(0).normal(0, 3, (VOCAB, VOCAB))


def expected(table, users):
    """P(Safe), P(Unsafe) of each user token, by numpy in float64."""
    logits = table[users]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return p[:, SAFE].sum(1), p[:, UNSAFE].sum(1)


def guard_of(table, **kwargs):
    return GuardClassifier(TableModel(table), PREFIX, SUFFIX, [SAFE, UNSAFE], pad_id=0,
                           image_block=None, **kwargs)


def batch(users):
    ids = torch.tensor(users)[:, None]
    return {"text": ids, "text_attention": torch.ones_like(ids)}


USERS = [0, 4, 8, 9, 10, 11]


@pytest.mark.parametrize("score", ["mass", "margin"])
def test_a_copy_is_unsafe_iff_its_score_reaches_the_threshold(table, score):
    safe, unsafe = expected(table, USERS)
    truth = unsafe if score == "mass" else np.log(unsafe) - np.log(safe)
    scores = guard_of(table, score=score).unsafe_score(batch(USERS)).double().numpy()
    assert np.allclose(scores, truth, rtol=1e-5, atol=1e-6)
    ordered = np.sort(truth)
    for low, high in zip(ordered[:-1], ordered[1:], strict=True):   # every cut between rows
        t = float((low + high) / 2)
        labels = guard_of(table, score=score, copy_threshold=t)(batch(USERS))
        assert labels.dtype == torch.long and labels.shape == (len(USERS),)
        assert labels.tolist() == (truth >= t).astype(int).tolist()
    # "reaches": a score exactly at the threshold is Unsafe
    at = float(guard_of(table, score=score).unsafe_score(batch([4]))[0])
    assert guard_of(table, score=score, copy_threshold=at)(batch([4])).tolist() == [1]


def test_default_is_the_larger_mass_the_papers_per_copy_rule(table):
    """Without a threshold the smoothing takes the argmax of the two log masses: Unsafe iff
    log P(Unsafe) - log P(Safe) > 0, the released paper code's per-copy rule."""
    safe, unsafe = expected(table, USERS)
    masses = guard_of(table)(batch(USERS))
    assert masses.shape == (len(USERS), 2)
    assert masses.argmax(1).tolist() == (unsafe > safe).astype(int).tolist()
    margin = guard_of(table, score="margin", copy_threshold=0.0)(batch(USERS))
    assert margin.tolist() == masses.argmax(1).tolist()


def test_the_smoothed_counts_follow_the_copy_decision(table):
    """Substitution noise on the one user token: it stays with probability a, else takes one
    of the other 7 noisable ids uniformly, so the chance of an Unsafe copy is known in closed
    form; n = 4000 copies land within 4 standard errors of it."""
    from hybridcert.blocks import TokenBlock, Vocabulary

    noisable = list(range(4, VOCAB))
    keep = 0.3
    noise = HybridNoise([Tokens("text", Substitution(keep, len(noisable)),
                                Vocabulary(torch.tensor(noisable)))])
    record = noise.prepare({"text": TokenBlock(torch.tensor([4]))})
    _, unsafe = expected(table, noisable)
    t = float(np.median(unsafe))
    hit = unsafe >= t
    share = keep * hit[0] + (1 - keep) * hit[1:].mean()
    smoothed = SmoothedClassifier(guard_of(table, copy_threshold=t), noise, 2,
                                  batch_size=500)
    with torch.no_grad():
        counts = smoothed.certify(record, n0=10, n=4000, alpha=0.01, seed=0).counts
    assert int(counts.sum()) == 4000 and 0 < share < 1
    assert abs(counts[1] / 4000 - share) < 4 * np.sqrt(share * (1 - share) / 4000)


def test_a_nan_score_is_refused_not_counted_safe(table):
    broken = np.array(table)
    broken[9, SAFE + UNSAFE] = -np.inf          # both label masses exactly 0: margin NaN
    with pytest.raises(ValueError, match="unsafe score is NaN"):
        guard_of(broken, score="margin", copy_threshold=0.0)(batch([4, 9]))


def test_bad_operating_points_are_refused(llava):
    model, processor = llava
    for kwargs, message in (
            ({"score": "logit"}, "score must be 'mass' or 'margin', got 'logit'"),
            ({"copy_threshold": 0.0}, r"copy_threshold on the 'mass' score must be in "
                                      r"\(0, 1\], got 0.0"),
            ({"copy_threshold": 1.5}, r"must be in \(0, 1\], got 1.5"),
            ({"score": "margin", "copy_threshold": float("nan")},
             "copy_threshold must be finite, got nan"),
            ({"copy_threshold": "0.5"}, "copy_threshold must be a number, got '0.5'"),
            ({"labels": ("Safe", "Unsafe", "Unclear"), "copy_threshold": 0.5},
             "copy_threshold needs two labels")):
        with pytest.raises(ValueError, match=message):
            vlm_guard(model, processor, **kwargs)


def test_a_real_guard_with_a_threshold(guard, llava):
    from .conftest import picture

    model, processor = llava
    thresholded = vlm_guard(model, processor, max_text_tokens=24, score="margin",
                            copy_threshold=0.0)
    pixels = guard.images["image"].process(picture(seed=5))[0]
    encoder = guard.text["text"]
    blocks = [encoder.encode(t) for t in ("how do i hurt them", "a calm lake", "hi")]
    data = {"text": torch.stack([b.ids for b in blocks]),
            "text_attention": torch.stack([b.attention for b in blocks]),
            "image": pixels.expand(3, -1, -1, -1)}
    masses = guard.model(data)
    assert thresholded.model(data).tolist() == \
        ((masses[:, 1] - masses[:, 0]) >= 0).long().tolist()
