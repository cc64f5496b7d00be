"""Issue 24 item 5: the benchmark attacks each certified input inside and beyond its OWN
certified region with ``hybridcert attack``'s per-input core, and its "certified and evaded"
count can fail: a deliberately over-claimed region is evaded and counted.

The toy filter flags an image iff its mean pixel exceeds 0.5 (text ignored).  Under Gaussian
noise sigma per pixel on d pixels its smoothed flag probability is exactly
``Phi((m - 0.5) sqrt(d) / sigma)`` and moving the image by L2 ``delta`` against the mean lowers
it to ``Phi(Phi^-1(p) - delta / sigma)``: the flag-side certificate is tight, so an attack
inside the region cannot evade, and one at twice its radius (in the mean's direction) can.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.stats import norm

from hybridcert.bench.attack_eval import (
    AttackSettings,
    attack_unit,
    certified_flagged,
    figure,
    report_lines,
)
from hybridcert.bench.threats import CELLS, noise_for
from hybridcert.bench.units import Settings, certify_fixed, unit_rows
from hybridcert.blocks import TokenBlock
from hybridcert.datasets import safety
from hybridcert.smoothing import SmoothedClassifier

LEVEL = (0.25, 0.5)
SIDE = 8                                 # 3 x 8 x 8 images: d = 192
TAU = 0.6
TINY = AttackSettings(inputs=10, steps=20, samples=16, candidates=4, n=2000)


class MeanFilter(torch.nn.Module):
    """Logits ``(-s, s)``, ``s = 40 (mean pixel - 0.5)``: class 1 (flag) iff bright."""

    config = SimpleNamespace(modalities=("image", "text"))

    def forward(self, batch):
        score = 40.0 * (batch["image"].flatten(1).mean(1) - 0.5)
        return torch.stack([-score, score], 1)


def _data(means, labels) -> safety.SafetyData:
    count = len(means)
    pixels = np.stack([np.full((3, SIDE, SIDE), round(255 * m), np.uint8) for m in means])
    ids = safety.vocabulary().noisable_ids[:6].numpy()
    tokens = np.zeros((count, 10), np.int64)
    tokens[:, :6] = ids
    attention = (tokens != 0).astype(np.int64)
    return safety.SafetyData(pixels, tokens, attention, np.asarray(labels), np.array([""] * count),
                             {})


def _unit(data, n=20_000):
    """A fixed-n flag-side unit of every record (the benchmark's ``certify_fixed``)."""
    noise = noise_for(LEVEL, "anywhere")
    clf = SmoothedClassifier(MeanFilter(), noise, 2, batch_size=512)
    ids = [f"test-{i:05d}" for i in range(len(data))]
    records = [{"image": data.image(i),
                "text": TokenBlock(torch.from_numpy(data.tokens[i]),
                                   attention=torch.from_numpy(data.attention[i]))}
               for i in range(len(data))]
    unit = certify_fixed(clf, records, list(range(len(data))), CELLS,
                         Settings(n_max=n, mode="fixed"), TAU, majority=False, baselines=False)
    return noise, {"rows": unit_rows(unit, data.labels, ids), "calibration": {"tau": TAU},
                   "level": list(LEVEL)}


@pytest.fixture(scope="module")
def certified():
    # unsafe 0.56 / 0.58 / 0.6 certified flagged; a benign input flagged (0.58) and an unsafe
    # one not flagged (0.45) are not attacked
    data = _data([0.56, 0.58, 0.6, 0.58, 0.45], [1, 1, 1, 0, 1])
    noise, unit = _unit(data)
    return data, noise, unit


def test_only_unsafe_certified_flags_are_attacked_and_counted(certified, tmp_path):
    data, noise, unit = certified
    rows = {r["id"]: r for r in unit["rows"]["detector"]}
    assert rows["test-00003"]["decision"] == "flag" and rows["test-00004"]["decision"] != "flag"
    assert [r["id"] for r in certified_flagged(unit)] == ["test-00000", "test-00001",
                                                         "test-00002"]
    log = []
    out = attack_unit(MeanFilter(), noise, data, unit, TINY, 0.001, 0, log=log.append)
    assert out["available"] == 3 and out["ids"] == ["test-00000", "test-00001", "test-00002"]
    assert [r["kind"] for r in out["rows"]] == ["inside", "beyond"] * 3
    sigma, d = LEVEL[0], 3 * SIDE * SIDE
    for row in out["rows"]:
        stored = {f["tokens"]: f["l2_radius"] for f in rows[row["id"]]["frontier"]}
        eps = row["budget"]["image"]
        # the budget is the input's own region: r = min(1, its largest r), eps*(r) inside;
        # twice that and at least one token beyond
        r_in = min(1, max(stored))
        if row["kind"] == "inside":
            assert row["budget"]["text"] == r_in and eps == pytest.approx(stored[r_in])
            assert row["certified_budget"] and row["outcome"] != "flipped"
        else:
            assert row["budget"]["text"] == max(2 * r_in, 1)
            assert eps == pytest.approx(2 * stored[r_in]) and not row["certified_budget"]
        assert row["l2_used"] <= eps + 1e-4
        # the attacked flag probability against the closed form (PGD along the mean)
        m = data.pixels[int(row["id"][-5:])].mean() / 255
        exact = norm.cdf((m - 0.5) * np.sqrt(d) / sigma - row["l2_used"] / sigma)
        assert row["estimate_after"] == pytest.approx(exact, abs=0.05)
    summary = out["summary"]
    assert summary["inside"]["certified_and_evaded"] == 0
    assert summary["inside"]["attacked"] == summary["beyond"]["attacked"] == 3
    assert summary["beyond"]["evaded"] >= 2           # the attack is strong enough to evade
    assert sum(summary["beyond"][k] for k in ("still_flagged", "evaded", "undecided")) == 3
    assert not any("SOUNDNESS ALARM" in line for line in log)
    text = "\n".join(report_lines({"settings": {"inputs": 10}, "levels": {"0": out}}))
    assert "| 0 (0.25, 0.5) | inside | 3 | 3 |" in text and "SOUNDNESS ALARM" not in text
    assert figure({"levels": {"0": out}}, tmp_path) == "attacks.png"
    assert (tmp_path / "attacks.png").stat().st_size > 1000


def test_an_over_claimed_region_is_evaded_and_counted(certified):
    """Every stored region inflated fivefold (a broken certificate): the attack inside the
    claimed region evades, "certified and evaded" is nonzero, the log and the report say
    SOUNDNESS ALARM — the check can fail."""
    data, noise, unit = certified
    broken = {**unit, "rows": {"detector": [
        {**row, "frontier": [{**f, "gamma": 5 * f["gamma"], "l2_radius": 5 * f["l2_radius"]}
                             for f in row["frontier"]]}
        for row in unit["rows"]["detector"]]}}
    log = []
    settings = AttackSettings(inputs=10, steps=20, samples=16, candidates=4, n=2000)
    out = attack_unit(MeanFilter(), noise, data, broken, settings, 0.001, 0, log=log.append)
    inside = out["summary"]["inside"]
    assert inside["certified_and_evaded"] >= 2
    evaded = [r for r in out["rows"] if r["kind"] == "inside" and r["outcome"] == "flipped"]
    assert all(r["certified_budget"] and r["upper_after"] < TAU for r in evaded)
    assert any(line.startswith("SOUNDNESS ALARM") for line in log)
    text = "\n".join(report_lines({"settings": {}, "levels": {"0": out}}))
    assert "**SOUNDNESS ALARM: the attack evaded certified flags" in text
    assert f"**{inside['certified_and_evaded']} (SOUNDNESS ALARM)**" in text


def test_fewer_certified_inputs_than_asked_and_a_seeded_draw(certified):
    data, noise, unit = certified
    few = AttackSettings(inputs=2, steps=1, samples=2, candidates=2, n=50)
    first = attack_unit(MeanFilter(), noise, data, unit, few, 0.001, 0, log=lambda m: None)
    again = attack_unit(MeanFilter(), noise, data, unit, few, 0.001, 0, log=lambda m: None)
    assert first["available"] == 3 and len(first["ids"]) == 2
    assert first["ids"] == again["ids"] == sorted(first["ids"])
    assert report_lines(None) == [] and report_lines({"levels": {}}) == []
    benign = {**unit, "rows": {"detector": [r for r in unit["rows"]["detector"]
                                            if r["label"] == 0 or r["decision"] != "flag"]}}
    none = attack_unit(MeanFilter(), noise, data, benign, few, 0.001, 0, log=lambda m: None)
    assert none["available"] == 0 and none["rows"] == [] and none["summary"] == {}
    assert "| 0 (0.25, 0.5) | none (no unsafe input certified flagged) | 0 | 0 |" in \
        "\n".join(report_lines({"levels": {"0": none}}))
    assert figure({"levels": {"0": none}}, ".") is None
    assert figure(None, ".") is None


@pytest.mark.parametrize("kwargs, message", [
    ({"inputs": -1}, "inputs must be an integer >= 0"),
    ({"beyond": 1.0}, "--beyond must be a factor > 1"),
    ({"steps": 0}, "--steps must be an integer >= 1"),
    ({"beyond_tokens": -1}, "--beyond_tokens must be an integer >= 0"),
    ({"seeds": ()}, "seeds must be distinct integers"),
    ({"seeds": (0, 0)}, "seeds must be distinct integers"),
    ({"seeds": (0, 1.0)}, "seeds must be distinct integers")])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AttackSettings(**kwargs)
