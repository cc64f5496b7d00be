"""Decisions clients cannot re-draw: a request's noise seed is an HMAC, under the server's
secret, of the record the model sees; no client field takes part, so re-sending an input
(under any id, encoding or form) gets the same draws and the same decision."""

import base64
import io
import json
import logging

import httpx
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from hybridcert.runs.config import ConfigError
from hybridcert.runs.runner import plan
from hybridcert.serve.service import (
    ModerationService,
    ServeSettings,
    read_seed_key,
    record_digest,
    request_seed,
)
from hybridcert.smoothing.core import Stage
from tests.serve.conftest import b64, live_service, png, png_even, toy_config
from tests.serve.toy_model import factory

KEY = b"0123456789abcdef0123456789abcdef-test-seed-key"
GREY = png(0.5)                       # the harmful word decides: a few hundred draws
TEXT = "attack them tonight"


def _png_variant(data: bytes) -> bytes:
    """The same pixels in another PNG file: no compression and a text chunk."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "re-encoded to draw the noise again")
    out = io.BytesIO()
    Image.open(io.BytesIO(data)).save(out, "PNG", compress_level=0, pnginfo=info)
    assert out.getvalue() != data
    return out.getvalue()


def _decision(answer: dict) -> tuple:
    return (answer["decision"], answer["seed"], answer["queries"], answer["p_lower"],
            [t["certified"] for t in answer["certified"]], answer["region"])


def test_the_same_input_gets_the_same_decision_however_it_is_sent():
    """Ids, repeats, JSON or multipart, a data URL, another PNG file of the same pixels and
    another spelling of the same tokens: one seed, one decision, one query count."""
    with live_service(ServeSettings(seed_key=KEY)) as (url, service):
        variant = _png_variant(GREY)
        sends = [{"json": {"image": b64(GREY), "text": TEXT}}]
        sends += [{"json": {"image": b64(GREY), "text": TEXT, "id": f"retry-{i}"}}
                  for i in range(6)]
        sends += [{"json": {"image": "data:image/png;base64," + b64(GREY), "text": TEXT,
                            "id": "data-url"}},
                  {"json": {"image": b64(variant), "text": TEXT, "id": "re-encoded"}},
                  {"json": {"image": b64(GREY), "text": "  Attack THEM   tonight ",
                            "id": "respelled"}},
                  {"files": {"image": ("x.png", variant, "image/png")},
                   "data": {"text": TEXT, "id": "multipart"}}]
        answers = []
        for send in sends:
            response = httpx.post(url + "/v1/moderate", timeout=60, **send)
            assert response.status_code == 200, response.text
            answers.append(response.json())
        assert len({json.dumps(_decision(a)) for a in answers}) == 1, \
            [_decision(a) for a in answers]
        assert {a["id"] for a in answers[1:7]} == {f"retry-{i}" for i in range(6)}
        # the seed is the HMAC of the decoded record, whatever the file bytes were
        record = service.prepare(variant, TEXT).record
        assert answers[0]["seed"] == request_seed(KEY, service.config.seed, record)
        assert answers[0]["input_hash"] != answers[8]["input_hash"]    # other file bytes


def _services(*keys):
    out = []
    for key in keys:
        run = plan(toy_config(), batch_size=256, adapter=factory(0.0))
        out.append(ModerationService(run, ServeSettings(seed_key=key)))
    return out


def test_seeds_depend_on_the_server_secret_only():
    """The same key gives the same seeds in another process (a restart); another key, or a
    generated one, gives other seeds and so independent draws of the noise."""
    same, again, other, fresh_a, fresh_b = _services(KEY, KEY, KEY[::-1], None, None)
    inputs = [(png(v), t) for v in (0.05, 0.5, 0.95) for t in ("lovely day", TEXT)]
    inputs.append((png_even(), "unknown words"))
    records = [same.prepare(image, text).record for image, text in inputs]
    seeds = {name: [service.seed_of(r) for r in records] for name, service in
             (("same", same), ("again", again), ("other", other), ("fresh_a", fresh_a),
              ("fresh_b", fresh_b))}
    assert seeds["same"] == seeds["again"]
    assert len(set(seeds["same"])) == len(records)                 # one seed per input
    for name in ("other", "fresh_a", "fresh_b"):
        assert all(a != b for a, b in zip(seeds["same"], seeds[name], strict=True)), name
    assert seeds["fresh_a"] != seeds["fresh_b"]
    # P(unsafe) = 1/2 on png_even: the first 256 labels under two keys' seeds differ
    clf = same.plan.classifier
    draws = [clf.stream(records[-1], seeds[name][-1], Stage.SEQUENTIAL).labels(256)
             for name in ("same", "other")]
    assert 0.35 < draws[0].mean() < 0.65 and not np.array_equal(*draws)


def test_request_seed_is_an_hmac_of_the_record_digest():
    """Against an independent computation with hmac and hashlib."""
    import hashlib
    import hmac
    import struct

    (service,) = _services(KEY)
    record = service.prepare(GREY, TEXT).record
    digest = hashlib.sha256(b"hybridcert-record-v1\0")
    for name in ("image", "text"):
        digest.update(struct.pack("<Q", len(name)) + name.encode())
        value = record[name]
        parts = ([("tensor", value)] if name == "image" else
                 [("ids", value.ids), ("noisable", value.noisable),
                  ("attention", value.attention)])
        for tag, tensor in parts:
            digest.update(f"{tag}:{tensor.dtype}:{tuple(tensor.shape)}\0".encode())
            digest.update(tensor.contiguous().numpy().tobytes())
    assert record_digest(record) == digest.digest()
    mac = hmac.new(KEY, b"hybridcert-serve-seed-v1\0" + struct.pack("<q", 7) + digest.digest(),
                   hashlib.sha256).digest()
    assert service.seed_of(record) == int.from_bytes(mac[:8], "little") & 0x7FFF_FFFF
    # one changed pixel value is another record, and another seed
    changed = dict(record, image=record["image"].clone())
    changed["image"][0, 0, 0] += 1 / 255
    assert service.seed_of(changed) != service.seed_of(record)


def test_the_seed_key_is_never_shown(tmp_path, caplog):
    path = tmp_path / "seed.key"
    key = "ab" * 32
    path.write_text(key + "\n")
    path.chmod(0o600)
    assert read_seed_key(path) == key.encode()
    settings = ServeSettings(seed_key=read_seed_key(path))
    assert key not in repr(settings)
    caplog.set_level(logging.DEBUG)
    with live_service(settings) as (url, service):
        info = httpx.get(url + "/v1/info").text
        answer = httpx.post(url + "/v1/moderate", timeout=60,
                            json={"image": b64(GREY), "text": TEXT}).text
        metrics = httpx.get(url + "/metrics").text
    for shown in (info, answer, metrics, caplog.text):
        assert key not in shown and base64.b64encode(key.encode()).decode() not in shown


@pytest.mark.parametrize("content,match", [("short-key\n", "at least 32"),
                                           (None, "not found")])
def test_seed_key_file_checks(tmp_path, content, match):
    path = tmp_path / "seed.key"
    if content is not None:
        path.write_text(content)
        path.chmod(0o600)
    with pytest.raises(ConfigError, match=match):
        read_seed_key(path)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_seed_key_file_others_may_read_is_refused(tmp_path, mode):
    """As ssh refuses an open private key: one line naming the file and the fix."""
    path = tmp_path / "seed.key"
    path.write_text("ab" * 32)
    path.chmod(mode)
    with pytest.raises(ConfigError) as refused:
        read_seed_key(path)
    message = str(refused.value)
    assert "\n" not in message and str(path) in message and "chmod 600" in message
    path.chmod(0o600)
    assert read_seed_key(path) == b"ab" * 32
    path.chmod(0o400)
    assert read_seed_key(path) == b"ab" * 32

