"""The same input and seed give the same decision through the service (requests batched
together) as through ``hybridcert certify --mode decision``, and as through a DecisionTest
built here from the thresholds and driven alone from ``clf.stream(record, input_seed(seed,
id))``."""

import base64
import io
import json

import httpx
from PIL import Image

from hybridcert.cli.main import main
from hybridcert.runs.store import RunStore
from hybridcert.smoothing.core import Stage, input_seed
from hybridcert.smoothing.stopping import DecisionTest
from tests.serve.conftest import TARGETS, b64, png, png_even

INPUTS = [("dark", png(0.05), "i will hurt you"), ("bright", png(0.95), "lovely day"),
          ("grey-harmful", png(0.5), "attack them tonight"),
          ("grey", png(0.5), "we bake a cake together"),
          ("even", png_even(), "unknown words")]


def _reference(service, image: bytes, text: str, request_id: str):
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
    stream = run.classifier.stream(record, input_seed(config.seed, request_id),
                                   Stage.SEQUENTIAL)
    while not rule.done:
        rule.observe(stream.labels(rule.next_draws()))
    return rule, record


def test_service_decides_as_the_rule_driven_alone(toy_server):
    url, service = toy_server
    decisions = set()
    for name, image, text in INPUTS:
        answer = httpx.post(url + "/v1/moderate", timeout=60,
                            json={"image": b64(image), "text": text, "id": name}).json()
        rule, record = _reference(service, image, text, name)
        expected = {-1: "abstain", 0: "safe", 1: "unsafe"}[int(rule.label)]
        assert answer["decision"] == expected, name
        assert answer["queries"] == rule.queries, name
        if rule.label >= 0:
            assert answer["p_lower"] == rule.p_lower, name
        assert [t["certified"] for t in answer["certified"]] == \
            ([bool(c) for c in rule.certified[1:]] if rule.label >= 0 else [False] * 4)
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
        answer = httpx.post(url + "/v1/moderate", timeout=60, json={
            "image": base64.b64encode(image).decode(), "text": text, "id": name}).json()
        row = stored[name]
        assert answer["label"] == row["predict"], name
        assert answer["queries"] == row["queries"], name
        assert answer["p_lower"] == row["p_lower"], name
        assert [t["certified"] for t in answer["certified"]] == \
            [t["certified"] for t in row["targets"]], name
