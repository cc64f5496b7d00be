"""Sequential certification through the smoothed classifier keeps the fixed-n guarantee: the
same closed-form checks as test_validity.py (the stopping rules themselves are pinned in
test_rules.py, including the exact worst case over the stopping boundary)."""

import numpy as np
import pytest
import torch
from scipy.stats import binom, norm

from hybridcert import Gaussian, Substitution
from hybridcert.certificate.baselines import discrete_threshold as threshold
from hybridcert.sequential import SequentialQuestion, certify_sequential
from hybridcert.smoothing import ABSTAIN, Detector, SmoothedClassifier, TokenBlock, Vocabulary
from hybridcert.smoothing.core import Stage

RUNS, ALPHA = 300, 0.1
ALLOWED = int(binom.ppf(1 - 1e-6, RUNS, ALPHA))   # see test_validity.py for the argument
SIGMA = 0.5
W = torch.tensor([0.6, 0.8])


def linear_classifier():
    return SmoothedClassifier(lambda b: (b["image"] @ W - 1.0 > 0).long(),
                              {"image": Gaussian(SIGMA)}, 2)


def test_threshold_closed_forms():
    # Gaussian only: p* = Phi(eps / sigma).
    assert threshold(Gaussian(0.5).likelihood_ratio(0.3)) == pytest.approx(norm.cdf(0.6),
                                                                           abs=1e-12)
    # Substitution, r = 1, eps = 0: p* = 1/2 + (a - beta).
    a, v = 0.2, 256
    assert threshold(Substitution(a, v).likelihood_ratio(1)) == pytest.approx(
        0.5 + a - (1 - a) / (v - 1), abs=1e-11)


@pytest.mark.parametrize("margin", [0.35, 0.6])
def test_decision_mode_is_valid(margin):
    """Target eps = 0.25: truly certified iff the true margin exceeds 0.25.  A run fails
    when it claims the target although the true margin does not reach it, or returns the
    wrong class."""
    clf = linear_classifier()
    record = {"image": (margin + 1.0) * W}
    failures = certified = 0
    queries = []
    for seed in range(RUNS):
        result = certify_sequential(clf, record, ALPHA, seed=seed, targets=[(0.25, 0)],
                                    n_max=3200)
        queries.append(result.queries)
        if result.certified_targets[0]:
            certified += 1
            failures += result.label != 1 or margin <= 0.25
    assert failures <= ALLOWED
    assert certified >= RUNS // 2
    if margin == 0.6:         # an easy decision stops long before the cap
        assert np.median(queries) < 3200 / 4


def test_decision_mode_rarely_claims_an_unreachable_target():
    """True margin 0.2 < target 0.25: every certified claim is a failure."""
    clf = linear_classifier()
    record = {"image": (0.2 + 1.0) * W}
    claims = sum(certify_sequential(clf, record, ALPHA, seed=s, targets=[(0.25, 0)],
                                    n_max=3200).certified_targets[0] for s in range(RUNS))
    assert claims <= ALLOWED


@pytest.mark.parametrize(("side", "margin"), [("flag", -0.5), ("benign", -1.3)])
def test_sequential_detector_is_valid(side, margin):
    """Detector with tau = 0.05 on the linear rule: P(flag) = Phi(margin / sigma).  Target eps
    0.1: the flag (benign) claim is wrong if P(flag) at margin - 0.1 (+ 0.1) is below (at or
    above) tau."""
    tau = 0.05
    clf = linear_classifier()
    record = {"image": (margin + 1.0) * W}
    detector = Detector(tau, flagged_class=1, sides="both")
    truth_at = norm.cdf((margin - 0.1 * (1 if side == "flag" else -1)) / SIGMA)
    truly = truth_at >= tau if side == "flag" else truth_at < tau
    failures = decided = 0
    for seed in range(RUNS // 2):
        result = certify_sequential(clf, record, ALPHA, seed=seed, targets=[(0.1, 0)],
                                    detector=detector, n_max=20_000)
        decided += result.decision == side
        assert (result.status == "certified") == (result.decision != "abstain")
        assert [t["status"] == "certified" for t in result.targets] == \
            result.certified_targets
        if result.decision == side and result.certified_targets[0]:
            failures += not truly
        if result.decision not in (side, "abstain"):
            failures += 1
    assert decided >= RUNS // 4
    assert failures <= int(binom.ppf(1 - 1e-6, RUNS // 2, ALPHA))


def test_radius_mode_is_valid_and_saves_queries():
    clf = linear_classifier()
    margin = 0.5
    record = {"image": (margin + 1.0) * W}
    failures = 0
    queries = []
    for seed in range(RUNS // 2):
        result = certify_sequential(clf, record, ALPHA, seed=seed, tolerance=0.1, n_max=6400)
        queries.append(result.queries)
        assert (result.status == "certified") == (result.label != ABSTAIN)
        assert result.status in ("certified", "refuted", "cap")
        assert result.decided_at == result.queries
        if result.label != ABSTAIN:
            failures += result.label != 1 or result.l2_radius[0] > margin
    assert failures <= int(binom.ppf(1 - 1e-6, RUNS // 2, ALPHA))
    assert np.median(queries) < 6400


def test_hybrid_targets_use_the_joint_threshold():
    vocab = Vocabulary(torch.arange(5))
    clf = SmoothedClassifier(lambda b: torch.ones(len(b["text"]), dtype=torch.long),
                             {"image": Gaussian(SIGMA), "text": Substitution(0.3, 5)}, 2,
                             {"text": vocab})
    record = {"image": torch.zeros(2), "text": TokenBlock(torch.tensor([0, 1, 2]))}
    result = certify_sequential(clf, record, 0.01, targets=[(0.25, 1), (0.5, 2)], n_max=20000)
    assert result.label == 1 and all(result.certified_targets)
    assert result.queries < 20000
    # A target beyond what the cap can ever show is given up at once ("cap": the model is
    # always right, so the target is true, not refuted), and the run stops there:
    # the class at the zero budget is not settled within that one draw, so the answer abstains
    # (bounded effort: "not certified" is never wrong).
    far = certify_sequential(clf, record, 0.01, targets=[(3.0, 0)], n_max=20000)
    assert far.certified_targets == [False] and far.queries == 1
    assert far.targets[0]["status"] == "cap" and far.targets[0]["decided_at"] == 1
    assert far.label == ABSTAIN and (far.status, far.decided_at) == ("gave_up", 1)


def test_answers_do_not_depend_on_how_the_draws_are_batched():
    """The service feeds each request's labels in whatever pieces shared batches produce:
    the answer must equal certify_sequential's for the same record and seed."""
    clf = linear_classifier()
    record = clf.validate({"image": (0.4 + 1.0) * W})
    question = SequentialQuestion(clf.noise, 2, ALPHA, 5000, targets=[(0.1, 0), (0.3, 0)])
    rng = np.random.default_rng(0)
    for seed in range(20):
        reference = certify_sequential(clf, record, ALPHA, seed=seed,
                                       targets=[(0.1, 0), (0.3, 0)], n_max=5000)
        rule, stream = question.new_rule(), clf.stream(record, seed, Stage.SEQUENTIAL)
        while not rule.done:
            rule.observe(stream.labels(int(rng.integers(1, 300))))
        result = question.result(rule, {})
        assert (result.label, result.certified_targets, result.queries, result.p_lower) == \
            (reference.label, reference.certified_targets, reference.queries,
             reference.p_lower)


def test_arguments_are_checked():
    clf = linear_classifier()
    with pytest.raises(ValueError, match="tolerance"):
        certify_sequential(clf, {"image": W}, 0.01, tolerance=0)
    with pytest.raises(ValueError, match="tolerance"):
        certify_sequential(clf, {"image": W}, 0.01, tolerance=float("inf"))
    with pytest.raises(ValueError, match="max_radius"):
        certify_sequential(clf, {"image": W}, 0.01, max_radius=-1.0)
    with pytest.raises(ValueError, match="needs targets"):
        certify_sequential(clf, {"image": W}, 0.01, detector=Detector(0.1))
    with pytest.raises(ValueError, match="spending is for the decision mode"):
        certify_sequential(clf, {"image": W}, 0.01, boundary="spending")


@pytest.mark.parametrize("boundary", ["looks", "spending"])
def test_long_run_boundaries_and_price_reach_the_rule(boundary):
    """The options for long runs and tables are passed through (and a grid of targets is
    answered with the same guarantee: a target beyond the true margin is never claimed)."""
    clf = linear_classifier()
    record = {"image": (0.4 + 1.0) * W}
    targets = [(eps, 0) for eps in (0.1, 0.2, 0.3, 0.5)]
    result = certify_sequential(clf, record, 0.01, seed=3, targets=targets, n_max=20_000,
                                boundary=boundary, price=2000)
    assert result.label == 1
    assert result.certified_targets[-1] is False          # 0.5 > the true margin 0.4
    assert result.certified_targets[0] is True


def test_an_ambiguous_input_stops_once_the_target_is_settled():
    """Margin 0: P(class 1) = 1/2 exactly.  The target (0.25, 0) is given up within a few
    hundred draws and the run stops there (it used to settle the class at the zero budget
    as well: tens of thousands of draws); the class is left open: abstain, status gave_up."""
    clf = linear_classifier()
    record = {"image": 1.0 * W}
    for seed in range(3):
        result = certify_sequential(clf, record, 0.001, seed=seed, targets=[(0.25, 0)],
                                    n_max=100_000)
        assert result.queries < 1000
        assert result.targets[0]["status"] in ("refuted", "cap")
        assert result.targets[0]["decided_at"] == result.queries
        assert result.label == ABSTAIN and result.status == "gave_up"
        row = result.to_row()
        assert (row["status"], row["decided_at"]) == ("gave_up", result.queries)
        assert row["targets"][0]["status"] == result.targets[0]["status"]


def test_every_status_through_the_smoothed_classifier():
    """The closed-form linear rule, P(class 1) = Phi(margin / sigma): certified (margin 0.6,
    target 0.25), refuted (margin 0 against eps 1.0: P = 1/2 for both classes against
    p* = 0.977), cap (margin 0.1 < 0.25: false, but given up before its upper bound at the
    futility level fell below p*: not certifiable within the cap), gave_up (a price of 20
    draws on a target just below the margin); the class says the same at the zero budget as
    a target (0, 0) at margin 0 with a cap of 3,000."""
    clf = linear_classifier()

    def run(margin, targets, n_max=20_000, **kw):
        return certify_sequential(clf, {"image": (margin + 1.0) * W}, 0.01, seed=1,
                                  targets=targets, n_max=n_max, **kw)

    sure = run(0.6, [(0.25, 0)])
    assert [t["status"] for t in sure.targets] == ["certified"] and sure.status == "certified"
    assert sure.decided_at <= sure.targets[0]["decided_at"] == sure.queries
    low = run(0.1, [(0.25, 0)])
    assert low.targets[0]["status"] == "cap" and not low.certified_targets[0]
    false = run(0.0, [(1.0, 0)], n_max=100_000)
    assert false.targets[0]["status"] == "refuted" and not false.certified_targets[0]
    priced = run(0.6, [(0.1, 0), (0.55, 0)], price=20)
    assert [t["status"] for t in priced.targets] == ["certified", "gave_up"]
    zero = run(0.0, [(0.0, 0)], n_max=3000)
    assert zero.label == ABSTAIN and zero.decided_at < 3000
    assert zero.status == zero.targets[0]["status"] in ("refuted", "cap")


@pytest.mark.parametrize("margin", [-0.1, 0.05])
def test_the_class_claim_is_valid_near_one_half(margin):
    """Near P = 1/2 the class at the zero budget is certified only within the target's draws
    (at a tenth of alpha): over many seeds, a certified class is the true one and its region
    holds (certified radius at most the true margin) outside the alpha event."""
    clf = linear_classifier()
    record = {"image": (margin + 1.0) * W}
    truth = int(margin > 0)
    failures = 0
    for seed in range(RUNS):
        result = certify_sequential(clf, record, ALPHA, seed=seed, targets=[(0.1, 0)],
                                    n_max=3200)
        if result.label != ABSTAIN:
            failures += result.label != truth or result.l2_radius[0] > abs(margin)
        assert result.status in ("certified", "refuted", "gave_up", "cap")
    assert failures <= ALLOWED


@pytest.mark.parametrize(("question", "config", "message"), [
    ({"boundary": "spending"}, {"mode": "radius", "boundary": "spending"},
     "spending is for the decision mode"),
    ({"detector": Detector(0.1)}, {"mode": "radius", "rule": "flag", "threshold": 0.1},
     "radius mode is for majority votes"),
    ({"alpha": 1.5, "targets": [(0.1, 0)]}, {"mode": "decision", "alpha": 1.5,
                                             "targets": [[0.1, 0]]},
     r"alpha must lie in \(0, 1\)"),
    ({"alpha": 1e-250, "targets": [(0.1, 0)], "boundary": "spending"},
     {"mode": "decision", "alpha": 1e-250, "targets": [[0.1, 0]], "boundary": "spending"},
     "alpha must be >= 1e-200 with boundary 'spending'"),
    ({"targets": [(0.1, 0)], "boundary": "stitched"},
     {"mode": "decision", "targets": [[0.1, 0]], "boundary": "stitched"},
     "boundary must be one of mixture, looks, spending"),
])
def test_one_check_of_a_question_for_the_library_and_the_config(question, config, message):
    """Issue 23: mode x rule x boundary x targets x alpha is checked in one place
    (check_question): the library and the run config refuse the same question alike."""
    from hybridcert.runs.config import ConfigError, RunConfig

    question = {"alpha": 0.01, **question}
    clf = linear_classifier()
    with pytest.raises(ValueError, match=message):
        SequentialQuestion(clf.noise, 2, question.pop("alpha"), 1000, **question)
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict({"model": "tests.runs.toy_model:factory", "sigma": 0.25,
                             "keep_prob": 0.3, **config})


def test_streams_draw_larger_chunks_on_an_accelerator_only():
    """A CPU stream's chunks stay at STREAM_CHUNK copies (a seed names the same copies as
    before); on an accelerator they grow to ACCELERATOR_CHUNK copies, bounded by
    ACCELERATOR_CHUNK_BYTES of noisy copies, never below STREAM_CHUNK."""
    import torch

    from hybridcert.blocks import TokenBlock
    from hybridcert.smoothing.core import (
        ACCELERATOR_CHUNK,
        ACCELERATOR_CHUNK_BYTES,
        STREAM_CHUNK,
        stream_chunk,
    )

    small = {"image": torch.zeros(3, 48, 48), "text": TokenBlock(torch.ones(16, dtype=torch.long))}
    large = {"image": torch.zeros(3, 112, 112)}      # 150,528 bytes a copy: 222 fit in 32 MiB
    huge = {"image": torch.zeros(3, 2048, 2048)}
    assert stream_chunk(torch.device("cpu"), small) == STREAM_CHUNK == 64
    assert stream_chunk(torch.device("cuda"), small) == ACCELERATOR_CHUNK
    assert ACCELERATOR_CHUNK_BYTES == 32 * 2**20
    assert stream_chunk(torch.device("cuda"), large) == 128
    assert stream_chunk(torch.device("cuda"), huge) == STREAM_CHUNK
