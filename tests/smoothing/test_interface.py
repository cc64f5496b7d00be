"""Bad inputs, reproducibility, adapters and exports of the smoothed classifier."""

import csv
import json
import math

import numpy as np
import pytest
import torch

from hybridcert import Gaussian, Mask, Substitution
from hybridcert.smoothing import (
    ABSTAIN,
    Detector,
    SmoothedClassifier,
    TokenBlock,
    Vocabulary,
    certification_rows,
    check_can_certify,
    max_certifiable_radius,
    write_json,
    write_tsv,
)

VOCAB = Vocabulary(torch.arange(10, 60), mask_id=3)


def model(batch):
    score = batch["image"].flatten(1).mean(1) + 0.05 * (batch["text"] == 12).sum(1)
    return torch.stack([-score, score - 0.5], dim=1)   # logits


def classifier(batch_size=64, noise=None, prefetch=True, parallel_batches=1):
    return SmoothedClassifier(model, {"image": Gaussian(0.25),
                                      "text": noise or Substitution(0.2, 50)},
                              2, {"text": VOCAB}, batch_size=batch_size, prefetch=prefetch,
                              parallel_batches=parallel_batches)


def record(**overrides):
    base = {"image": torch.full((1, 4, 4), 0.8),
            "text": TokenBlock(torch.tensor([1, 12, 12, 30, 2]))}
    base.update(overrides)
    return base


@pytest.mark.parametrize(("x", "match"), [
    (record(image=torch.full((1, 4, 4), math.nan)), "NaN or infinite"),
    (record(image=torch.full((1, 4, 4), math.inf)), "NaN or infinite"),
    (record(image=torch.ones((1, 4, 4), dtype=torch.long)), "floating point"),
    (record(image=[[0.5]]), "must be a tensor or array"),
    (record(image=torch.zeros(0)), "empty"),
    (record(text=TokenBlock(torch.tensor([], dtype=torch.long))), "empty"),
    (record(text=TokenBlock(torch.tensor([[12, 13]]))), "1-D"),
    (record(text=TokenBlock(torch.tensor([0.5, 1.5]))), "integer ids"),
    (record(text=TokenBlock(torch.tensor([12, -4]))), "negative id"),
    (record(text=TokenBlock(torch.tensor([12, 75]), torch.tensor([True, True]))),
     "id 75 is marked noisable but is not among the vocabulary's 50"),
    (record(text=TokenBlock(torch.tensor([12, 13]), torch.tensor([True]))), "noisable mask"),
    ({"image": torch.zeros(1, 4, 4)}, "lacks the noised block"),
    ({}, "non-empty dict"),
])
def test_bad_records_are_refused(x, match):
    with pytest.raises(ValueError, match=match):
        classifier().certify(x, 10, 100, 0.01)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"n0": 0, "n": 100, "alpha": 0.01}, "n0 must be an integer >= 1"),
    ({"n0": 10, "n": 0, "alpha": 0.01}, "n must be an integer >= 1"),
    ({"n0": 10, "n": 2.5, "alpha": 0.01}, "n must be an integer"),
    ({"n0": 10, "n": 100, "alpha": 0.0}, r"alpha must lie in \(0, 1\)"),
    ({"n0": 10, "n": 100, "alpha": 1.0}, "alpha"),
    ({"n0": 10, "n": 9, "alpha": 0.001}, "n=9 can never certify at alpha=0.001"),
])
def test_bad_sampling_parameters_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        classifier().certify(record(), **kwargs)


def test_parameters_that_can_never_predict_are_refused():
    with pytest.raises(ValueError, match="n=10 can never predict at alpha=0.001"):
        classifier().predict(record(), 10, 0.001)


def test_largest_certifiable_radius_and_refusal_agree():
    assert max_certifiable_radius(10, 0.001, 1.0) == pytest.approx(
        float(np.sqrt(2) * __import__("scipy").special.erfinv(2 * 0.001**0.1 - 1)))
    check_can_certify(10, 0.001)             # 0.001 ** (1/10) = 0.5012 > 1/2
    with pytest.raises(ValueError, match="use n >= 11"):
        check_can_certify(10, 0.0005)


def test_configuration_errors():
    with pytest.raises(ValueError, match="vocab_size 40 but its vocabulary holds 50"):
        SmoothedClassifier(model, {"text": Substitution(0.2, 40)}, 2, {"text": VOCAB})
    with pytest.raises(ValueError, match="has no vocabulary"):
        SmoothedClassifier(model, {"text": Substitution(0.2, 40)}, 2)
    with pytest.raises(ValueError, match="needs a Vocabulary with mask_id"):
        SmoothedClassifier(model, {"text": Mask(0.2)}, 2,
                           {"text": Vocabulary(torch.arange(10, 60))})
    with pytest.raises(ValueError, match="num_classes"):
        SmoothedClassifier(model, {}, 1)
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match="parallel_batches must be an integer >= 1"):
            SmoothedClassifier(model, {}, 2, parallel_batches=bad)
    assert SmoothedClassifier(model, {}, 2, parallel_batches=np.int64(2)).parallel_batches == 2
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            SmoothedClassifier(model, {}, 2, device="cuda")


def test_bad_model_outputs_are_reported():
    clf = SmoothedClassifier(lambda b: torch.full((len(b["image"]),), 7), {"image": Gaussian(1)}, 2)
    with pytest.raises(ValueError, match=r"label outside \[0, 1\]"):
        clf.certify({"image": torch.zeros(3)}, 10, 100, 0.01)
    clf = SmoothedClassifier(lambda b: torch.zeros(len(b["image"])), {"image": Gaussian(1)}, 2)
    with pytest.raises(ValueError, match="logits"):
        clf.certify({"image": torch.zeros(3)}, 10, 100, 0.01)
    late = SmoothedClassifier(lambda b: (b["image"][:, 0] > 3).long() * 7,   # rare bad label
                              {"image": Gaussian(1)}, 2, batch_size=16, parallel_batches=3)
    with pytest.raises(ValueError, match=r"label outside \[0, 1\]"):
        late.certify({"image": torch.zeros(3)}, 10, 20_000, 0.01)


def test_same_seed_same_result_whatever_the_batch_size():
    x = record(image=torch.full((1, 4, 4), 0.22))   # borderline: counts vary with the seed
    results = [classifier(batch_size, prefetch=prefetch).certify(x, 100, 1000, 0.01, seed=5)
               for batch_size, prefetch in ((1000, True), (256, False), (100, True), (7, False),
                                            (7, True))]
    for other in results[1:]:
        assert np.array_equal(other.counts, results[0].counts)
        assert other.l2_radius == results[0].l2_radius
    assert 0 < results[0].counts[0] < 1000
    different = classifier().certify(x, 100, 1000, 0.01, seed=6)
    assert not np.array_equal(different.counts, results[0].counts)


def test_numpy_models_labels_modules_and_masks_all_work():
    labels = SmoothedClassifier(lambda b: np.ones(len(b["image"]), dtype=np.int64),
                                {"image": Gaussian(0.5)}, 3)
    result = labels.certify({"image": np.zeros(2, dtype=np.float32)}, 10, 100, 0.01,
                            p_upper="bonferroni")
    assert result.label == 1 and result.p_upper is not None and result.p_upper < 0.06
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    wrapped = SmoothedClassifier(lambda b: module(b["image"]), {"image": Gaussian(0.5)}, 2)
    assert wrapped.predict({"image": torch.zeros(1, 4, 4)}, 100, 0.5).label in (0, 1, ABSTAIN)
    masked = classifier(noise=Mask(0.3)).certify(record(), 20, 200, 0.01)
    assert masked.label in (0, 1, ABSTAIN)


def test_abstains_when_the_base_classifier_is_a_coin():
    coin = SmoothedClassifier(lambda b: (b["image"][:, 0] > 0).long(), {"image": Gaussian(1)}, 2)
    result = coin.certify({"image": torch.zeros(1)}, 50, 500, 0.01)
    assert result.label == ABSTAIN and result.max_tokens == -1 and result.l2_radius == []
    assert coin.predict({"image": torch.zeros(1)}, 500, 0.01).label == ABSTAIN


def test_exports(tmp_path):
    clf = classifier()
    results = [clf.certify(record(), 50, 500, 0.01, seed=s) for s in range(3)]
    rows = certification_rows(results, labels=[1, 0, 1])
    write_tsv(tmp_path / "out.tsv", rows)
    write_json(tmp_path / "out.json", rows)
    with open(tmp_path / "out.tsv") as handle:
        table = list(csv.DictReader(handle, delimiter="\t"))
    assert list(table[0])[:6] == ["idx", "label", "predict", "radius", "correct", "time"]
    assert [int(row["correct"]) for row in table] == [int(r.label == lab) for r, lab in
                                                      zip(results, [1, 0, 1], strict=True)]
    assert float(table[0]["radius_r0"]) == pytest.approx(results[0].l2_radius[0], rel=1e-5)
    data = json.loads((tmp_path / "out.json").read_text())
    assert data[2]["frontier"] == results[2].frontier()


def test_certify_many_shares_batches_and_matches_certify():
    clf = classifier(batch_size=300)
    records = [record(image=torch.full((1, 4, 4), v)) for v in (0.2, 0.22, 0.25)]
    records.append(record(text=TokenBlock(torch.tensor([1, 12, 30, 2]))))   # other length
    records.append(record(image=torch.full((1, 4, 4), 0.21),
                          text=TokenBlock(torch.tensor([1, 12, 12, 12, 12, 30, 2]))))
    seeds = [3, 4, 5, 6, 7]
    many = clf.certify_many(records, 50, 700, 0.01, seeds)
    for x, seed, result in zip(records, seeds, many, strict=True):
        single = classifier(batch_size=64).certify(x, 50, 700, 0.01, seed=seed)
        assert np.array_equal(single.counts, result.counts)
        assert single.l2_radius == result.l2_radius
    with pytest.raises(ValueError, match="one entry per record"):
        clf.certify_many(records, 50, 700, 0.01, seeds[:2])
    for parallel_batches in (2, 3):      # batches run in threads: the same counts
        threaded = classifier(batch_size=100, parallel_batches=parallel_batches)
        for single, result in zip(many, threaded.certify_many(records, 50, 700, 0.01, seeds),
                                  strict=True):
            assert np.array_equal(single.counts, result.counts)


def test_parallel_batches_leave_the_thread_count_of_later_threads_alone():
    """The workers run with one intra-op thread each; torch.set_num_threads is process-wide
    (a thread started afterwards takes the last value set), so the caller's count must be
    put back."""
    import threading

    def in_a_new_thread() -> int:
        seen = []
        thread = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        thread.start()
        thread.join()
        return seen[0]

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        classifier(batch_size=50, parallel_batches=2).certify(record(), 20, 200, 0.01)
        assert torch.get_num_threads() == 2
        assert in_a_new_thread() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("detector", [None, Detector(0.3, 1, "both")])
def test_certify_each_hands_back_each_record_as_soon_as_its_draws_are_counted(detector):
    """Batches of n0 + n rows (n alone for a detector) hold one record's draws each: the
    first result comes back after one forward pass, not after the whole group's."""
    records = [record(image=torch.full((1, 4, 4), v)) for v in (0.2, 0.5, 0.8, 0.35)]
    seeds = [3, 4, 5, 6]
    calls = []

    def counted(batch):
        calls.append(len(batch["image"]))
        return model(batch)

    rows = 600 if detector is None else 550
    clf = SmoothedClassifier(counted, {"image": Gaussian(0.25), "text": Substitution(0.2, 50)},
                             2, {"text": VOCAB}, batch_size=rows)
    each = clf.certify_each(records, 50, 550, 0.01, seeds) if detector is None else \
        clf.certify_detector_each(records, 550, 0.01, detector, seeds)
    seen = []
    for i, result in each:
        assert len(calls) == i + 1 == len(seen) + 1       # one pass per finished record
        seen.append(result)
    alone = classifier()
    for x, seed, result in zip(records, seeds, seen, strict=True):
        single = alone.certify(x, 50, 550, 0.01, seed=seed) if detector is None else \
            alone.certify_detector(x, 550, 0.01, detector, seed=seed)
        assert np.array_equal(single.counts, result.counts)
        assert single.p_lower == result.p_lower and single.label == result.label


def test_non_finite_model_outputs_are_refused_not_counted():
    """Issue 11.2: NaN logits were counted as class 0 (argmax of NaN) and certified."""
    from hybridcert.smoothing import ModelOutputError

    def nan_model(batch):
        out = torch.zeros(len(batch["image"]), 2)
        out[-1, 0] = float("nan")
        return out

    def inf_model(batch):
        return torch.full((len(batch["image"]), 2), float("inf"))

    for bad in (nan_model, inf_model):
        clf = SmoothedClassifier(bad, {"image": Gaussian(0.5)}, 2)
        with pytest.raises(ModelOutputError, match=r"NaN or infinite logits \(batch 1, row"):
            clf.certify({"image": torch.zeros(3)}, 10, 100, 0.01)
        with pytest.raises(ModelOutputError, match="never counted"):
            clf.predict({"image": torch.zeros(3)}, 100, 0.01)
