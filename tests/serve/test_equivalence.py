"""The same input and seed give the same decision through the service (requests batched
together) as through a DecisionTest built here from the thresholds and driven alone from
``clf.stream(record, seed)``, and, at ``certify``'s seed ``input_seed(run seed, id)``, as
``hybridcert certify --mode decision``."""

import dataclasses
import io
import json
import time

import httpx
from PIL import Image

from hybridcert.cli.main import main
from hybridcert.runs.store import RunStore
from hybridcert.sequential.rules import DecisionTest
from hybridcert.smoothing.core import Stage, input_seed
from tests.serve.conftest import TARGETS, b64, png, png_even

INPUTS = [("dark", png(0.05), "i will hurt you"), ("bright", png(0.95), "lovely day"),
          ("grey-harmful", png(0.5), "attack them tonight"),
          ("grey", png(0.5), "we bake a cake together"),
          ("even", png_even(), "unknown words")]


def _reference(service, image: bytes, text: str, seed: int):
    """Decide one input without the service: a DecisionTest built from the thresholds
    (noise.threshold of the zero budget, then of each target) and driven from the input's
    own label stream."""
    run = service.plan
    config = run.config
    picture, _ = run.adapter.images["image"].process(Image.open(io.BytesIO(image)))
    record = run.classifier.validate({"image": picture,
                                      "text": run.adapter.text["text"].encode(text)})
    budgets = [run.noise.budget({})] + [run.noise.pair_budget(eps, r) for eps, r in TARGETS]
    thresholds = [run.noise.threshold(b) for b in budgets]      # zero budget first
    rule = DecisionTest(thresholds, config.alpha, config.n, config.num_classes)
    stream = run.classifier.stream(record, seed, Stage.SEQUENTIAL)
    while not rule.done:
        rule.observe(stream.labels(rule.next_draws()))
    return rule, record


def test_service_decides_as_the_rule_driven_alone(toy_server):
    url, service = toy_server
    decisions = set()
    for name, image, text in INPUTS:
        answer = httpx.post(url + "/v1/moderate", timeout=60,
                            json={"image": b64(image), "text": text, "id": name}).json()
        rule, record = _reference(service, image, text, answer["seed"])
        assert answer["seed"] == service.seed_of(record), name
        expected = {-1: "abstain", 0: "safe", 1: "unsafe"}[int(rule.label)]
        assert answer["decision"] == expected, name
        assert answer["queries"] == rule.queries, name
        if rule.label >= 0:
            assert answer["p_lower"] == rule.p_lower, name
        assert [t["certified"] for t in answer["certified"]] == \
            ([bool(c) for c in rule.certified[1:]] if rule.label >= 0 else [False] * 4)
        # how each target and the decision at the input itself ended, and when
        assert [(t["status"], t["decided_at"]) for t in answer["certified"]] == \
            list(zip(rule.status[1:], rule.decided_at[1:].tolist(), strict=True)), name
        assert (answer["status"], answer["decided_at"]) == \
            (rule.status[0], int(rule.decided_at[0])), name
        assert (answer["status"] == "certified") == (answer["decision"] != "abstain")
        if rule.label >= 0:
            region = service.plan.noise.frontier(
                [rule.p_lower], max_tokens=service.config.max_tokens,
                noised_positions=[service.plan.noise.noised_positions(record)])[0]
            assert answer["region"] == region.rows()
        decisions.add(answer["decision"])
    assert decisions == {"safe", "unsafe", "abstain"}


def test_service_decides_as_certify_in_decision_mode(toy_server, tmp_path):
    url, service = toy_server
    rows = []
    for name, image, text in INPUTS:
        (tmp_path / f"{name}.png").write_bytes(image)
        rows.append({"id": name, "image": f"{name}.png", "text": text, "label": 0})
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    config = service.config
    targets = [arg for eps, r in TARGETS for arg in ("--target", f"{eps},{r}")]
    code = main(["certify", "--dataset", str(tmp_path / "data.jsonl"), "--model",
                 config.model, "--sigma", str(config.sigma), "--keep-prob",
                 str(config.keep_prob), "--mode", "decision", "--n", str(config.n),
                 "--alpha", str(config.alpha), "--seed", str(config.seed), *targets,
                 "--store", str(tmp_path / "run.sqlite"), "--quiet",
                 "--allow-empty-text"])        # "unknown words": no noisable token
    assert code == 0
    store = RunStore(tmp_path / "run.sqlite", None)
    stored = {row["id"]: row for row in store.rows()}
    store.close()
    for name, image, text in INPUTS:
        # The service keys its seeds by its secret; at certify's seed for this id (the
        # service itself never takes a seed from a client) its engine and rules decide as
        # certify does.
        prepared = service.prepare(image, text, name)
        prepared = dataclasses.replace(prepared, seed=input_seed(config.seed, name))
        outcome = service.submit(prepared).future.result(60)
        answer = service.answer(prepared, outcome, time.perf_counter())
        row = stored[name]
        assert answer["label"] == row["predict"], name
        assert answer["queries"] == row["queries"], name
        assert answer["p_lower"] == row["p_lower"], name
        assert [t["certified"] for t in answer["certified"]] == \
            [t["certified"] for t in row["targets"]], name
        assert [(t["status"], t["decided_at"]) for t in answer["certified"]] == \
            [(t["status"], t["decided_at"]) for t in row["targets"]], name
        assert (answer["status"], answer["decided_at"]) == \
            (row["status"], row["decided_at"]), name
        # the same coverage notes (targets beyond the text's noisable positions)
        covering = [n for n in answer["notes"] if "target" in n]
        assert covering == [n for n in row.get("notes", []) if "target" in n], name
        assert bool(covering) == (text == "unknown words"), name


def test_targets_without_the_input_itself_stop_when_the_targets_are_settled():
    """Issue 22 item 4, through the service: targets (0.1, 0) and (0.1, 1) only.  At the
    ambiguous input (P(unsafe) = 1/2) both targets are given up within a few hundred
    evaluations and the service stops there: abstain, the decision's status gave_up (the
    rule that also settles the input itself, one DecisionTest over the three thresholds, runs
    3,278 on this stream).  The answer is that of certify --mode decision's rule
    (SequentialQuestion) driven alone."""
    from tests.serve.conftest import live_service

    with live_service(targets=[[0.1, 0], [0.1, 1]]) as (url, service):
        answer = httpx.post(url + "/v1/moderate", timeout=60, json={
            "image": b64(png_even()), "text": "unknown words", "id": "even"}).json()
        assert answer["decision"] == "abstain" and answer["queries"] < 1000
        assert {t["status"] for t in answer["certified"]} <= {"refuted", "cap"}
        assert (answer["status"], answer["decided_at"]) == ("gave_up", answer["queries"])
        rule = service.rules.question.new_rule()
        _, record = _reference(service, png_even(), "unknown words", "even")
        assert answer["seed"] == service.seed_of(record)
        stream = service.plan.classifier.stream(record, answer["seed"], Stage.SEQUENTIAL)
        while not rule.done:
            rule.observe(stream.labels(rule.next_draws()))
        assert answer["queries"] == rule.queries and rule.status[0] == "gave_up"
        run = service.plan
        budgets = [run.noise.budget({})] + [run.noise.pair_budget(0.1, r) for r in (0, 1)]
        both = DecisionTest([run.noise.threshold(b) for b in budgets], 0.001, 10_000)
        stream = run.classifier.stream(record, answer["seed"], Stage.SEQUENTIAL)
        while not both.done:
            both.observe(stream.labels(both.next_draws()))
        assert both.queries > 3 * answer["queries"]
        sure = httpx.post(url + "/v1/moderate", timeout=60, json={
            "image": b64(png(0.95)), "text": "lovely day", "id": "bright"}).json()
        assert sure["decision"] == "unsafe" and sure["status"] == "certified"
