"""The shared-stream engine gives exactly the answers of one-input-at-a-time certification,
and the cached-modality labels equal the full model's."""

import numpy as np
import pytest
import torch

from hybridcert.bench.engine import Job, count_copies, run_jobs
from hybridcert.bench.models import CachedModality, FastFilter
from hybridcert.blocks import Continuous, HybridNoise, TokenBlock, Tokens, Vocabulary
from hybridcert.models import fusion
from hybridcert.noise import Gaussian, Substitution
from hybridcert.sequential.question import SequentialQuestion, certify_sequential
from hybridcert.smoothing import Detector, SmoothedClassifier, Stage

VOCAB = Vocabulary(torch.arange(10, 60))


class Toy(torch.nn.Module):
    """Unsafe score: image mean plus 0.4 per token 17 seen (attended positions only)."""

    def forward(self, batch):
        seen = ((batch["text"] == 17) & (batch["text_attention"] > 0)).sum(1).float()
        score = batch["image"].mean((1, 2, 3)) - 0.5 + 0.4 * seen
        return torch.stack([-score, score], 1)


def _records(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = 4 + i % 5           # different lengths in one batch
        ids = torch.zeros(12, dtype=torch.long)
        ids[:length] = torch.randint(10, 60, (length,), generator=g)
        ids[0] = 17 if i % 3 == 0 else 20
        attention = (torch.arange(12) < length).long()
        out.append({"image": torch.full((3, 4, 4), 0.35 + 0.05 * (i % 7)),
                    "text": TokenBlock(ids, attention=attention)})
    return out


NOISE = HybridNoise([Continuous("image", Gaussian(0.3)),
                     Tokens("text", Substitution(0.5, VOCAB.size), VOCAB)])
CELLS = [(0.0, 0), (0.1, 0), (0.0, 1), (0.1, 1)]


@pytest.mark.parametrize("detector", [None, Detector(0.3, 1, "flag")])
def test_run_jobs_equals_certify_sequential(detector):
    clf = SmoothedClassifier(Toy(), NOISE, 2, batch_size=64)
    records = _records(9)
    question = SequentialQuestion(NOISE, 2, 0.01, 3000, targets=CELLS, detector=detector,
                                  boundary="looks", price=300)
    jobs = [Job(r, 100 + i, {"q": question.new_rule(), "other": SequentialQuestion(
        NOISE, 2, 0.01, 3000, targets=CELLS, boundary="mixture").new_rule()})
        for i, r in enumerate(records)]
    run_jobs(clf, jobs, batch_size=16, window=4)
    for i, (job, record) in enumerate(zip(jobs, records, strict=True)):
        assert job.done and job.drawn >= job.rules["q"].queries
        mine = question.result(job.rules["q"], NOISE.noised_positions(job.record)).to_row()
        alone = certify_sequential(clf, record, 0.01, 100 + i, targets=CELLS, detector=detector,
                                   n_max=3000, boundary="looks", price=300).to_row()
        for key in ("predict", "decision", "p_lower", "p_upper", "queries", "targets",
                    "frontier", "counts"):
            assert mine[key] == alone[key], (i, key)


def test_count_copies_counts_the_first_copies_of_each_stream():
    clf = SmoothedClassifier(Toy(), NOISE, 2)
    records = _records(5, seed=3)
    counts = count_copies(clf, records, [7, 8, 9, 10, 11], 40, batch_size=64)
    for i, record in enumerate(records):
        labels = clf.stream(clf.validate(record), 7 + i, Stage.SELECTION).labels(40)
        assert np.array_equal(counts[i], np.bincount(labels, minlength=2))
    with pytest.raises(ValueError, match="copies"):
        count_copies(clf, records, [1] * 5, 0)
    with pytest.raises(ValueError, match="seeds"):
        count_copies(clf, records, [1], 4)


def test_run_jobs_arguments():
    clf = SmoothedClassifier(Toy(), NOISE, 2)
    with pytest.raises(ValueError, match="batch_size"):
        run_jobs(clf, [], batch_size=0)
    with pytest.raises(ValueError, match="no rules"):
        run_jobs(clf, [Job(_records(1)[0], 0, {})])


@pytest.fixture(scope="module")
def tiny_filter():
    torch.manual_seed(0)
    return fusion.SafetyFilter(fusion.FilterConfig(text_layers=1, hidden=16)).eval()


def test_cached_modality_equals_the_full_model(tiny_filter):
    from hybridcert.datasets import safety

    data = safety.build(6, seed=2)
    records = [data.record(i) for i in range(6)]
    fast = FastFilter(tiny_filter)
    gen = torch.Generator().manual_seed(0)
    owners = np.repeat(np.arange(6), 3)
    batch = {"image": torch.stack([records[o]["image"] for o in owners]),
             "text": torch.stack([records[o]["text"].ids for o in owners]),
             "text_attention": torch.stack([records[o]["text"].attention for o in owners])}
    with torch.no_grad():
        for fixed in ("image", "text"):
            noisy = dict(batch)
            if fixed == "text":
                noisy["image"] = batch["image"] + 0.3 * torch.randn(batch["image"].shape,
                                                                    generator=gen)
            else:
                noisy["text"] = torch.where(batch["text_attention"] > 0,
                                            torch.randint(999, 30522, batch["text"].shape,
                                                          generator=gen), batch["text"])
            full = tiny_filter(noisy)
            cached = CachedModality(fast, fixed, records)(noisy, owners)
            assert torch.equal(cached, full.argmax(1))
            assert torch.allclose(fast(noisy), full, atol=1e-5)
    with pytest.raises(ValueError, match="fixed"):
        CachedModality(fast, "audio", records)
