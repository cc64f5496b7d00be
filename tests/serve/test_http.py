"""The HTTP contract against a live server on 127.0.0.1: endpoints, authentication, every
class of bad input, the 503 and timeout paths, metrics, the audit log and concurrent load."""

import base64
import gc
import json
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from hybridcert.sequential.driver import Job
from hybridcert.serve.service import Limits, ServeSettings, input_hash
from hybridcert.smoothing.core import LabelStream
from tests.serve.conftest import KEY, TARGETS, b64, live_service, png, png_even

UNSAFE = {"image": b64(png(0.95)), "text": "we bake a cake"}       # bright: unsafe always
SAFE = {"image": b64(png(0.05)), "text": "i will hurt you"}        # dark: safe always


def moderate(url, body=None, **kwargs):
    return httpx.post(url + "/v1/moderate", json=body, timeout=60, **kwargs)


def test_engine_defaults_on_a_cpu(toy_server):
    _, service = toy_server
    assert service.driver.group_rows == 32 and service.driver.speculation == 0.0


def test_healthz_and_decision_contract(toy_server):
    url, service = toy_server
    assert httpx.get(url + "/healthz").json() == {"status": "ok"}
    for body, decision in ((UNSAFE, "unsafe"), (SAFE, "safe")):
        response = moderate(url, body)
        assert response.status_code == 200
        answer = response.json()
        assert answer["decision"] == decision
        assert [{"l2": t["l2"], "tokens": t["tokens"]} for t in answer["certified"]] == \
            [{"l2": eps, "tokens": r} for eps, r in TARGETS]
        assert all(isinstance(t["certified"], bool) for t in answer["certified"])
        assert answer["certified"][0]["certified"]           # (0, 0): the input itself
        assert 0.5 < answer["p_lower"] <= 1
        assert answer["queries"] >= 1 and answer["latency_ms"] > 0
        image = base64.b64decode(body["image"])
        assert answer["input_hash"] == input_hash(image, body["text"]) == answer["id"]
        assert answer["region"] and answer["region"][0]["tokens"] == 0


def test_info_names_the_sequential_boundary_and_price():
    """A service configured with the spending boundary and a price says so, and decides."""
    with live_service(boundary="spending", price=500.0) as (url, service):
        info = httpx.get(url + "/v1/info").json()
        assert info["boundary"] == "spending" and info["price"] == 500.0
        assert service.rules.new().boundary == "spending"
        assert moderate(url, UNSAFE).json()["decision"] == "unsafe"


def test_multipart_upload_gives_the_same_answer(toy_server):
    url, _ = toy_server
    as_json = moderate(url, UNSAFE).json()
    response = httpx.post(url + "/v1/moderate", timeout=60,
                          files={"image": ("x.png", base64.b64decode(UNSAFE["image"]),
                                           "image/png")}, data={"text": UNSAFE["text"]})
    assert response.status_code == 200
    answer = response.json()
    for key in ("decision", "certified", "p_lower", "queries", "seed", "input_hash"):
        assert answer[key] == as_json[key]


def test_client_id_is_echoed_and_jpeg_is_accepted(toy_server):
    url, _ = toy_server
    a = moderate(url, {**UNSAFE, "id": "ticket-1"}).json()
    assert a["id"] == "ticket-1"
    jpeg = moderate(url, {"image": b64(png(0.95, kind="JPEG")), "text": "hello"})
    assert jpeg.status_code == 200 and jpeg.json()["decision"] == "unsafe"
    data_url = moderate(url, {"image": "data:image/png;base64," + UNSAFE["image"],
                              "text": "hello"})
    assert data_url.status_code == 200


def test_abstains_where_nothing_can_be_certified(toy_server):
    url, _ = toy_server
    answer = moderate(url, {"image": b64(png_even()), "text": "unknown words"}).json()
    assert answer["decision"] == "abstain"
    assert not any(t["certified"] for t in answer["certified"]) and answer["region"] == []
    # and each target asking token changes says it covers none there (issue 22 review)
    assert answer["notes"] == ["text: no noisable token; certified on the image alone"] + [
        f"text: target {j} asks 1 token change(s); the text has 0 noisable position(s), so "
        f"it covers no change there" for j, (_, r) in enumerate(TARGETS, start=1) if r]


def test_a_text_without_a_noisable_token_is_refused_unless_allowed():
    """A text with no noisable token (empty, or only unknown words) would be certified on the
    image alone: refused 422 naming the text, unless serve --allow-empty-text (then noted)."""
    with live_service(allow_empty_text=False) as (url, _):
        for text in ("", "unknown words"):
            response = moderate(url, {"image": b64(png_even()), "text": text})
            assert response.status_code == 422 and response.json()["field"] == "text"
            assert "no noisable token" in response.json()["error"]
        answer = moderate(url, {"image": b64(png(0.9)), "text": "we bake a cake"})
        assert answer.status_code == 200 and answer.json()["notes"] == []


BAD = [
    ("not json", {"content": b"{not json", "headers": {"content-type": "application/json"}},
     400, "body"),
    ("json list", {"json": [1, 2]}, 422, "body"),
    ("deeply nested json", {"content": b"[" * 100_000 + b"]" * 100_000,
                            "headers": {"content-type": "application/json"}}, 400, "body"),
    ("not utf-8", {"content": b'{"text": "\xff"}',
                   "headers": {"content-type": "application/json"}}, 400, "body"),
    ("missing image", {"json": {"text": "hello"}}, 422, "image"),
    ("missing text", {"json": {"image": UNSAFE["image"]}}, 422, "text"),
    ("unknown field", {"json": {**UNSAFE, "imgae": "x"}}, 422, "imgae"),
    ("bad base64", {"json": {"image": "%%%not base64%%%", "text": "x"}}, 422, "image"),
    ("image not a string", {"json": {"image": 12, "text": "x"}}, 422, "image"),
    ("not an image", {"json": {"image": b64(b"hello world"), "text": "x"}}, 422, "image"),
    ("truncated png", {"json": {"image": b64(png(0.5)[:40]), "text": "x"}}, 422, "image"),
    ("gif", {"json": {"image": b64(png(0.5, kind="GIF")), "text": "x"}}, 422, "image"),
    ("text not a string", {"json": {"image": UNSAFE["image"], "text": 5}}, 422, "text"),
    ("lone surrogate", {"content": b'{"image": "' + UNSAFE["image"].encode() +
                        b'", "text": "\\ud800"}', "headers": {"content-type": "application/json"}},
     422, "text"),
    ("too many tokens", {"json": {"image": UNSAFE["image"], "text": "a " * 40}}, 422, "text"),
    ("text over limit", {"json": {"image": UNSAFE["image"], "text": "a" * 5000}}, 413, "text"),
    ("id not a string", {"json": {**UNSAFE, "id": 5}}, 422, "id"),
    ("wrong content type", {"content": b"image=1", "headers": {"content-type": "text/plain"}},
     415, "content-type"),
    ("multipart without image", {"data": {"text": "x"}, "files": {"other": ("a", b"b")}},
     422, "other"),
]


@pytest.mark.parametrize("name,request_kwargs,status,field", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_4xx_naming_the_field(toy_server, name, request_kwargs, status, field):
    url, _ = toy_server
    response = httpx.post(url + "/v1/moderate", timeout=30, **request_kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["field"] == field and body["error"]
    assert "Traceback" not in response.text and 'File "' not in response.text


def test_size_limits_refuse_before_decoding():
    limits = Limits(max_image_bytes=2000, max_image_pixels=64 * 64, max_text_chars=50)
    with live_service(ServeSettings(limits=limits)) as (url, _):
        big = moderate(url, {"image": b64(png(0.5, size=(400, 400), kind="JPEG") * 3),
                             "text": "x"})
        assert big.status_code == 413 and big.json()["field"] in ("image", "body")
        wide = moderate(url, {"image": b64(png(0.5, size=(100, 100))), "text": "x"})
        assert wide.status_code == 413 and wide.json()["field"] == "image"
        assert "pixels" in wide.json()["error"]
        huge = httpx.post(url + "/v1/moderate", content=b"{" + b" " * 200_000 + b"}",
                          headers={"content-type": "application/json"})
        assert huge.status_code == 413 and huge.json()["field"] == "body"


def test_unknown_routes_and_methods_answer_json_naming_a_field(toy_server):
    url, _ = toy_server
    missing = httpx.get(url + "/nope")
    assert missing.status_code == 404 and missing.json()["field"] == "path"
    wrong = httpx.get(url + "/v1/moderate")
    assert wrong.status_code == 405 and wrong.json()["field"] == "method"
    assert "error" in wrong.json() and "POST" in wrong.headers["allow"]


def test_api_keys(keyed_server, caplog):
    url, _ = keyed_server
    assert moderate(url, UNSAFE).status_code == 401
    assert moderate(url, UNSAFE, headers={"Authorization": "Bearer wrong-key-0123456789"}
                    ).status_code == 401
    assert moderate(url, UNSAFE, headers={"Authorization": KEY}).status_code == 401
    refused = moderate(url, UNSAFE, headers={"Authorization": f"Basic {KEY}"})
    assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
    ok = moderate(url, UNSAFE, headers={"Authorization": f"Bearer {KEY}"})
    assert ok.status_code == 200 and KEY not in ok.text
    assert httpx.get(url + "/metrics").status_code == 401
    assert httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {KEY}"}
                     ).status_code == 200
    assert httpx.get(url + "/healthz").status_code == 200        # probes need no key
    assert KEY not in caplog.text


def test_key_file_checks(tmp_path):
    from hybridcert.runs.config import ConfigError
    from hybridcert.serve.service import read_api_keys

    good = tmp_path / "keys"
    good.write_text(f"# moderation team\n{KEY}\n\n{KEY[::-1]}\n")
    good.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by other users.*chmod 600"):
        read_api_keys(good)
    good.chmod(0o600)
    assert read_api_keys(good) == (KEY, KEY[::-1])
    for text, match in (("\n# only comments\n", "no key"), ("short\n", "shorter")):
        good.write_text(text)
        with pytest.raises(ConfigError, match=match):
            read_api_keys(good)
    with pytest.raises(ConfigError, match="not found"):
        read_api_keys(tmp_path / "absent")


def test_metrics_in_prometheus_format(toy_server):
    url, _ = toy_server
    moderate(url, UNSAFE)
    moderate(url, {"image": "x", "text": 1})
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(url + "/metrics")
                                                                   .text)}
    for name in ("hybridcert_requests", "hybridcert_decisions", "hybridcert_abstentions",
                 "hybridcert_request_latency_seconds", "hybridcert_queries_per_decision",
                 "hybridcert_batch_fill", "hybridcert_queue_depth", "hybridcert_timeouts",
                 "hybridcert_rejected"):
        assert name in families, name
    statuses = {s.labels.get("status") for s in families["hybridcert_requests"].samples}
    assert {"200", "422"} <= statuses
    fill = [s for s in families["hybridcert_batch_fill"].samples if s.name.endswith("_count")]
    assert fill[0].value >= 1


def test_busy_service_answers_503_with_retry_after():
    settings = ServeSettings(max_pending=1, batch_size=16, timeout_s=1.0)
    with live_service(settings, delay=0.05) as (url, _):
        slow = {"image": b64(png_even()), "text": "unknown words"}      # runs to the cap

        def send(i):
            return moderate(url, {**slow, "id": f"r{i}"})

        with ThreadPoolExecutor(4) as pool:
            responses = list(pool.map(send, range(4)))
        codes = sorted(r.status_code for r in responses)
        busy = [r for r in responses if r.status_code == 503]
        assert busy, codes
        assert all(r.headers["Retry-After"].isdigit() and "error" in r.json() for r in busy)
        assert set(codes) <= {200, 503, 504}


def test_timeout_answers_504_and_stops_sampling():
    settings = ServeSettings(timeout_s=1.5, batch_size=16, speculation=1.0)
    with live_service(settings, delay=0.05) as (url, service):
        response = moderate(url, {"image": b64(png_even()), "text": "unknown words"})
        assert response.status_code == 504
        assert "no decision within" in response.json()["error"]
        deadline = time.monotonic() + 5
        while service.driver.pending and time.monotonic() < deadline:
            time.sleep(0.01)                              # dropped before the next batch
        assert service.driver.pending == 0
        drawn = service.driver.stats.drawn
        time.sleep(0.5)
        assert service.driver.stats.drawn == drawn        # its copies stopped being drawn
        quick = {"image": b64(png(0.5)), "text": "lovely day"}    # decided in ~100 draws
        assert moderate(url, quick).status_code == 200    # and the service goes on


def test_audit_log_holds_the_decision_and_nothing_of_the_input(tmp_path):
    path = tmp_path / "audit.sqlite"
    with live_service(ServeSettings(audit_path=path)) as (url, service):
        answer = moderate(url, {**UNSAFE, "text": "i will hurt you secretly"}).json()
    with sqlite3.connect(path) as db:
        db.row_factory = sqlite3.Row
        rows = [dict(r) for r in db.execute("SELECT * FROM decisions")]
    assert len(rows) == 1
    row = rows[0]
    assert row["input_hash"] == answer["input_hash"] and row["decision"] == "unsafe"
    assert row["alpha"] == answer["alpha"] and row["config_hash"] == service.config_hash
    assert row["model"] == service.model_id and row["seed"] == answer["seed"]
    assert json.loads(row["targets"]) == answer["certified"]
    assert json.loads(row["region"]) == answer["region"]
    dump = json.dumps(rows)
    assert "hurt" not in dump and UNSAFE["image"][:40] not in dump


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def test_concurrent_load_loses_nothing_and_memory_stays_bounded(toy_server):
    url, service = toy_server
    inputs = [(0.05, "i will hurt you"), (0.95, "lovely day"), (0.5, "attack them"),
              (0.5, "we bake a cake")]
    finished_before = service.driver.stats.finished

    def send(i):
        brightness, text = inputs[i % len(inputs)]
        with httpx.Client(timeout=60) as client:
            return i, client.post(url + "/v1/moderate", json={
                "image": b64(png(brightness)), "text": text, "id": f"load-{i}"})

    def burst():
        with ThreadPoolExecutor(16) as pool:
            return list(pool.map(send, range(64)))

    first = burst()
    after_first = _rss_mb()
    second = burst()
    after_second = _rss_mb()
    for i, response in first + second:
        assert response.status_code == 200, response.text
        assert response.json()["id"] == f"load-{i}"          # each answer is its own
    assert service.driver.stats.finished - finished_before == 128
    assert service.driver.pending == 0
    # Nothing of a finished request stays referenced: no job, no label stream ...
    gc.collect()
    alive = [o for o in gc.get_objects() if type(o) in (Job, LabelStream)]
    assert not alive, alive[:3]
    # ... and the process does not grow with the requests (allocator noise only)
    assert after_second - after_first < 100, (after_first, after_second)


def test_page_and_its_assets_are_served(toy_server):
    url, _ = toy_server
    page = httpx.get(url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="moderate-form"' in page.text and "http" not in page.text.replace(
        "http://www.w3.org", "")                          # nothing from a CDN
    for name, kind in (("app.js", "javascript"), ("style.css", "css")):
        asset = httpx.get(f"{url}/static/{name}")
        assert asset.status_code == 200 and kind in asset.headers["content-type"]
    assert httpx.get(url + "/static/../app.py").status_code == 404
