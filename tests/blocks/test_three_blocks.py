"""Issue 12: a record of three blocks (an image and two text fields, each with its own noise
and budget) certified end to end, every cell of its region checked against the brute-force
linear program; per-block budgets through the CLI, the store and the report."""

import itertools
import json

import numpy as np
import pytest
import torch

from hybridcert import Gaussian, Mask, Substitution
from hybridcert.adapters import ModelAdapter
from hybridcert.blocks import Continuous, HybridNoise, TextEncoder, TokenBlock, Tokens, Vocabulary
from hybridcert.cli.main import main
from hybridcert.smoothing import SmoothedClassifier
from tests.certificate.brute_force import MASK, greedy_lower_bound, joint_block_outcomes

SIGMA, CAPTION_KEEP, OCR_KEEP = 0.5, 0.5, 0.3
CAPTION_V, OCR_V = 3, 2
W = torch.tensor([0.6, 0.8])
MASK_ID = 9


def noise():
    return HybridNoise([
        Continuous("image", Gaussian(SIGMA)),
        Tokens("caption", Substitution(CAPTION_KEEP, CAPTION_V), Vocabulary(torch.arange(3))),
        Tokens("ocr", Mask(OCR_KEEP), Vocabulary(torch.arange(3, 5), mask_id=MASK_ID)),
    ])


def model(batch):
    score = batch["image"] @ W - 1.0 + 0.3 * (batch["caption"] == 0).sum(1) \
        + 0.4 * (batch["ocr"] == 3).sum(1)
    return (score > 0).long()


def brute_lower(p, r_caption, r_ocr, gamma):
    mu, nu = joint_block_outcomes([("substitution", CAPTION_KEEP, CAPTION_V, r_caption),
                                   (MASK, OCR_KEEP, OCR_V, r_ocr)], gamma, 300)
    return greedy_lower_bound(p, mu, nu)


def test_three_block_region_against_brute_force():
    clf = SmoothedClassifier(model, noise(), 2, batch_size=2048)
    record = {"image": 1.4 * W, "caption": TokenBlock(torch.tensor([0, 0, 1])),
              "ocr": TokenBlock(torch.tensor([3, 3]))}
    result = clf.certify(record, 64, 20_000, 0.001, seed=0)
    assert result.label == 1
    region = result.region
    assert region.token_blocks == ("caption", "ocr")
    assert region.gamma.shape == (4, 3)          # at most 3 caption and 2 ocr positions
    p = result.p_lower
    checked = 0
    for r1, r2 in itertools.product(range(4), range(3)):
        gamma = region.gamma[r1, r2]
        exact_zero = brute_lower(p, r1, r2, 0.0)
        if np.isnan(gamma):
            # Not certified: some budget at or below this one fails at shift 0.
            assert any(brute_lower(p, a, b, 0.0) <= 0.5 + 1e-9
                       for a in range(r1 + 1) for b in range(r2 + 1)), (r1, r2)
            continue
        assert exact_zero > 0.5
        assert brute_lower(p, r1, r2, gamma) > 0.5             # sound
        beyond = gamma * 1.01 + 0.05                            # and tight
        assert any(brute_lower(p, a, b, beyond) <= 0.5
                   for a in range(r1 + 1) for b in range(r2 + 1))
        checked += 1
    assert checked >= 4
    # Budgets per block: an image change eps uses gamma = eps / sigma.
    g = region.gamma[1, 1]
    assert region.certifies({"image": 0.99 * SIGMA * g, "caption": 1, "ocr": 1})
    assert not region.certifies({"image": 1.01 * SIGMA * g, "caption": 1, "ocr": 1})
    assert not region.certifies({"caption": 4})                # beyond the positions


def test_per_block_frontier_is_monotone_in_every_budget():
    regions = noise().frontier(np.linspace(0.6, 0.999, 40), max_tokens=4)
    for region in regions:
        g = np.nan_to_num(region.gamma, nan=-1.0)
        assert np.all(np.diff(g, axis=0) <= 0) and np.all(np.diff(g, axis=1) <= 0)


def three_block_factory():
    words = {"zero": 0, "one": 1, "two": 2}
    caption = TextEncoder(lambda t: [words[w] for w in t.split()], Vocabulary(torch.arange(3)),
                          pad_id=7, max_length=3, name="caption-words")
    ocr = TextEncoder(lambda t: [3 if w == "three" else 4 for w in t.split()],
                      Vocabulary(torch.arange(3, 5), mask_id=MASK_ID), pad_id=8, max_length=2,
                      name="ocr-words")
    return ModelAdapter(model, text={"caption": caption, "ocr": ocr}, num_classes=2)


def test_three_blocks_through_the_cli_store_and_report(tmp_path):
    rows = [{"id": f"r{i}", "image": [1.4 * 0.6 - 0.05 * i, 1.4 * 0.8],
             "caption": "zero zero one", "ocr": "three three", "label": 1} for i in range(3)]
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    store = tmp_path / "three.sqlite"
    argv = ["certify", "--dataset", str(data), "--store", str(store), "--model",
            "tests.blocks.test_three_blocks:three_block_factory", "--block",
            "image=gaussian:0.5", "--block", "caption=substitution:0.5", "--block",
            "ocr=mask:0.3", "--n0", "32", "--n", "4000", "--alpha", "0.01",
            "--target", "image=0.1,caption=1,ocr=1", "--quiet"]
    assert main(argv) == 0, "three-block certify failed"
    from hybridcert.runs.store import RunStore

    with RunStore(store, readonly=True) as s:
        stored = s.rows()
    assert len(stored) == 3
    for row in stored:
        assert row["max_tokens"].keys() == {"caption", "ocr"}
        assert all(set(item["tokens"]) == {"caption", "ocr"} for item in row["frontier"])
        assert row["targets"][0]["budget"] == {"image": 0.1, "caption": 1, "ocr": 1}
    assert main(["report", str(store), "--out", str(tmp_path / "report")]) == 0
    header, first = (tmp_path / "report" / "certify.tsv").read_text().splitlines()[:2]
    column = header.split("\t").index("radius[caption=0,ocr=0]")
    origin = next(item for item in stored[0]["frontier"]
                  if item["tokens"] == {"caption": 0, "ocr": 0})
    assert float(first.split("\t")[column]) == pytest.approx(origin["l2_radius"], rel=1e-5)
    report = (tmp_path / "report" / "REPORT.md").read_text()
    assert "token block caption" in report and "token block ocr" in report


if __name__ == "__main__":
    pytest.main([__file__])
