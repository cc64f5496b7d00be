"""A tiled guard end to end: ``hybridcert certify`` and ``report`` on a user's JSONL, and
``serve`` over HTTP; both say the certified L2 ball is in raw pixels at the guard's raw size."""

import json

import httpx
import numpy as np
import pytest
from PIL import Image

from hybridcert.cli.main import main
from hybridcert.runs.store import RunStore

FACTORIES = ["hybridcert.adapters.examples:tiny_llava_onevision_guard",
             "hybridcert.adapters.examples:tiny_llava_next_guard"]
SPACE = "raw pixels in [0, 1] at 64x48, before "


@pytest.fixture
def user_data(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i, text in enumerate(["how do i hurt them", "we bake a cake"]):
        size = (48, 64) if i else (60, 50)
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png")
        rows.append({"id": f"r{i}", "image": f"{i}.png", "text": text, "label": 1 - i})
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path / "data.jsonl"


@pytest.mark.parametrize("factory", FACTORIES)
def test_certify_and_report_through_the_cli(factory, user_data, tmp_path, capsys):
    store = tmp_path / "guard.sqlite"
    code = main(["certify", "--model", factory, "--dataset", str(user_data),
                 "--sigma", "0.5", "--keep-prob", "0.75", "--threat", "append",
                 "--append-slots", "2", "--append-placeholder", "!", "--rule", "flag",
                 "--threshold", "4.6e-5", "--flagged-class", "1", "--n", "40",
                 "--alpha", "0.01", "--batch-size", "20", "--store", str(store)])
    assert code == 0
    assert f"image block image: certified L2 radii are in {SPACE}" in capsys.readouterr().err
    with RunStore(store, readonly=True) as s:
        rows = s.rows()
    assert [r["id"] for r in rows] == ["r0", "r1"]
    assert rows[0]["notes"] == ["image: resize 50x60 -> 64x48"] and not rows[1].get("notes")
    assert all(r["queries"] >= 40 for r in rows)
    assert main(["report", str(store), "--out", str(tmp_path / "report")]) == 0
    report = (tmp_path / "report" / "REPORT.md").read_text()
    assert f"Image radii: the L2 radius of block image is in {SPACE}" in report


def test_serve_a_tiled_guard():
    from hybridcert.adapters.examples import tiny_llava_onevision_guard
    from tests.serve.conftest import b64, live_service, png

    adapter = tiny_llava_onevision_guard()
    with live_service(adapter=adapter, sigma=0.5, keep_prob=0.75, n=48,
                      targets=[[0.0, 0]]) as (url, service):
        info = httpx.get(url + "/v1/info").json()
        assert info["image_size"] == [48, 64] and info["image_space"].startswith(SPACE)
        body = {"image": b64(png(0.4, size=(30, 20))), "text": "we bake a cake"}
        answer = httpx.post(url + "/v1/moderate", json=body, timeout=120).json()
        assert answer["decision"] in ("safe", "unsafe", "abstain")
        assert 1 <= answer["queries"] <= 48
        assert answer["notes"] == ["resize 30x20 -> 64x48"]
