"""Hostile clients against a live server on 127.0.0.1, each answered as docs/SERVICE.md says:
a request the model fails on fails alone, ids are checked like text, every response is
counted, slow clients are closed, a client that goes away logs no error, bombs are refused by
their header, file parts name their field, and the page sends its security headers."""

import io
import json
import logging
import socket
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from hybridcert.serve.service import ServeSettings, header_size
from tests.serve.conftest import b64, live_service, png
from tests.serve.toy_model import MARKER, fragile_factory

UNSAFE = {"image": b64(png(0.95)), "text": "we bake a cake"}


def moderate(url, body=None, **kwargs):
    return httpx.post(url + "/v1/moderate", json=body, timeout=60, **kwargs)


def requests_by_status(url) -> dict[str, float]:
    families = text_string_to_metric_families(httpx.get(url + "/metrics").text)
    return {s.labels["status"]: s.value for f in families if f.name == "hybridcert_requests"
            for s in f.samples if s.name.endswith("_total")}


def read_timeouts(url) -> dict[str, float]:
    families = text_string_to_metric_families(httpx.get(url + "/metrics").text)
    return {s.labels["phase"]: s.value for f in families if f.name == "hybridcert_read_timeouts"
            for s in f.samples if s.name.endswith("_total")}


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)

    def errors(self) -> list[str]:
        return [f"{r.name}: {r.getMessage()} {'(traceback)' if r.exc_info else ''}"
                for r in self.records if r.levelno >= logging.ERROR]


@contextmanager
def logged():
    """Every log record of the service, uvicorn (which does not propagate) and the rest."""
    handler = _Records()
    loggers = [logging.getLogger(), logging.getLogger("uvicorn")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


# -- isolation --------------------------------------------------------------------------------

def test_a_request_the_model_fails_on_does_not_fail_the_others():
    """Four benign requests and one whose text the model cannot take, sent together: the
    benign ones answer 200 with the decision they get alone, the other a JSON 500 naming
    the model's error."""
    adapter = fragile_factory(delay=0.02)
    benign = [{"image": b64(png(0.95)), "text": "we bake a cake"},
              {"image": b64(png(0.05)), "text": "i will hurt you"},
              {"image": b64(png(0.5)), "text": "attack them tonight"},
              {"image": b64(png(0.5)), "text": "lovely day at the park"}]
    hostile = {"image": b64(png(0.5)), "text": f"look {MARKER} here"}
    with live_service(ServeSettings(batch_size=64), adapter=adapter) as (url, _):
        with ThreadPoolExecutor(5) as pool:
            running = [pool.submit(moderate, url, body) for body in benign]
            time.sleep(0.15)                      # the benign ones are deciding by now
            failed = moderate(url, hostile)
            together = [future.result() for future in running]
        assert adapter.model.mixed_failures >= 1  # the hostile rows shared their batches
        alone = [moderate(url, body) for body in benign]
        for shared, single in zip(together, alone, strict=True):
            assert shared.status_code == 200 == single.status_code, shared.text
            for key in ("decision", "queries", "p_lower", "seed", "certified", "region"):
                assert shared.json()[key] == single.json()[key], key
        assert failed.status_code == 500
        assert failed.json()["field"] == "model"
        assert "image tokens do not match" in failed.json()["error"]


# -- ids, counting, internal errors -------------------------------------------------------------

@pytest.mark.parametrize("raw_id", ["\\ud800", "tab\\there", "nul\\u0000"])
def test_an_id_is_checked_like_text(toy_server, raw_id):
    url, _ = toy_server
    before = requests_by_status(url).get("422", 0)
    body = b'{"image": "' + UNSAFE["image"].encode() + b'", "text": "hi", "id": "' + \
        raw_id.encode() + b'"}'
    with logged() as log:
        response = httpx.post(url + "/v1/moderate", content=body, timeout=30,
                              headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "id" and "U+" in response.json()["error"]
    assert requests_by_status(url)["422"] == before + 1
    assert not log.errors()


def test_every_response_is_counted_and_an_internal_error_is_one_log_line():
    with live_service() as (url, service):
        def broken(*args, **kwargs):
            raise RuntimeError("the answer could not be built")

        service.answer = broken
        with logged() as log:
            response = moderate(url, UNSAFE)
            wrong_method = httpx.get(url + "/v1/moderate")
        assert response.status_code == 500 and response.json() == {"error": "internal error"}
        assert wrong_method.status_code == 405
        assert requests_by_status(url) == {"500": 1, "405": 1}
        errors = log.errors()
        assert len(errors) == 1 and "RuntimeError" in errors[0], errors
        assert "(traceback)" not in errors[0]


# -- slow and vanishing clients -----------------------------------------------------------------

HEAD = (b"POST /v1/moderate HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n")


def _trickle(port: int, clients: dict[str, tuple[bytes, bytes]], seconds: float,
             interval: float = 0.2) -> dict[str, tuple[float | None, bytes]]:
    """Open one socket per client, send its first bytes, then one byte of its rest every
    ``interval`` s; return for each when the server closed it (None: still open after
    ``seconds``) and what it answered."""
    sockets = {}
    for name, (first, _) in clients.items():
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.setblocking(False)
        if first:
            sock.sendall(first)
        sockets[name] = sock
    start = time.monotonic()
    closed: dict[str, float] = {}
    answers = {name: b"" for name in clients}
    step = 0
    try:
        while time.monotonic() - start < seconds and len(closed) < len(clients):
            for name, sock in sockets.items():
                if name in closed:
                    continue
                try:
                    while chunk := sock.recv(65536):
                        answers[name] += chunk
                    closed[name] = time.monotonic() - start         # EOF
                    continue
                except BlockingIOError:
                    pass
                except OSError:
                    closed[name] = time.monotonic() - start
                    continue
                rest = clients[name][1]
                if step < len(rest):
                    try:
                        sock.send(rest[step:step + 1])
                    except OSError:
                        closed[name] = time.monotonic() - start
            step += 1
            time.sleep(interval)
    finally:
        for sock in sockets.values():
            sock.close()
    return {name: (closed.get(name), answers[name]) for name in clients}


def test_slow_clients_are_closed():
    """Idle, header-trickling and body-trickling sockets (a byte every 0.2 s) are closed at
    the header (1 s) and body (2.5 s) deadlines, and so is one that trickles the headers of
    its second request (the header deadline starts again after each response); nothing is
    logged as an error.  The idle one, which sent no byte, gets no answer."""
    settings = ServeSettings(header_timeout_s=1.0, body_timeout_s=2.5)
    with live_service(settings) as (url, _), logged() as log:
        port = int(url.rsplit(":", 1)[1])
        trickle = b"X-Slow: " + b"a" * 200
        clients = {
            "idle": (b"", b""),
            "headers": (b"POST /v1/moderate HTTP/1.1\r\n", trickle),
            "body": (HEAD, b"{" + b" " * 200),
            # an 8-byte body in 1.4 s (past the first header deadline), then slow headers
            "second request": (HEAD.replace(b"100000", b"8"),
                               b"[1,2,34]POST /v1/moderate HTTP/1.1\r\n" + trickle),
        }
        outcome = _trickle(port, clients, seconds=7.0)
        for name, (closed, _) in outcome.items():
            assert closed is not None and closed < 5.0, (name, outcome)
        assert outcome["idle"][1] == b""            # no byte of a request: closed silently
        for name in ("headers", "second request"):
            assert b"408 Request Timeout" in outcome[name][1], (name, outcome[name])
            assert b'"field":"headers"' in outcome[name][1]
        assert outcome["idle"][0] < 2.0 and outcome["headers"][0] < 2.0
        assert outcome["second request"][1].startswith(b"HTTP/1.1 422")
        assert outcome["second request"][0] > 2.0
        answer = outcome["body"][1]
        assert answer.startswith(b"HTTP/1.1 408") and b'"field":"body"' in answer
        assert 2.0 < outcome["body"][0] < 4.0
        assert read_timeouts(url) == {"idle": 1, "headers": 2, "body": 1}
        assert requests_by_status(url) == {"408": 1, "422": 1}
        assert not log.errors()


def test_a_client_that_goes_away_logs_no_error():
    with live_service() as (url, _), logged() as log:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(HEAD + b'{"image": "')
            time.sleep(0.3)
        deadline = time.monotonic() + 5
        while "499" not in requests_by_status(url) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert requests_by_status(url) == {"499": 1}
        assert not log.errors()
        assert moderate(url, UNSAFE).status_code == 200           # and the service goes on


def test_a_slow_but_steady_body_within_the_deadline_is_read():
    settings = ServeSettings(header_timeout_s=1.0, body_timeout_s=3.0)
    body = json.dumps(UNSAFE).encode()

    def chunks():
        for i in range(0, len(body), len(body) // 4 + 1):
            time.sleep(0.2)
            yield body[i:i + len(body) // 4 + 1]

    with live_service(settings) as (url, _):
        response = httpx.post(url + "/v1/moderate", content=chunks(), timeout=30,
                              headers={"content-type": "application/json",
                                       "content-length": str(len(body))})
        assert response.status_code == 200 and response.json()["decision"] == "unsafe"


# -- bombs, multipart files, headers ------------------------------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int, height: int) -> bytes:
    """A valid 1-bit greyscale PNG of ``width`` x ``height`` black pixels (a few kB per 10^8
    pixels compressed)."""
    row = b"\x00" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data)
            + _chunk(b"IEND", b""))


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header claims ``width`` x ``height``."""
    data = bytearray(png(0.5, kind="JPEG"))
    i = 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    data[i + 5:i + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_the_bomb_helpers_are_what_they_claim():
    bomb = png_bomb(20_000, 20_000)
    assert len(bomb) < 200_000 and header_size(bomb) == (20_000, 20_000)
    with pytest.raises(Image.DecompressionBombError):       # Pillow's own check refuses it
        Image.open(io.BytesIO(bomb))
    small = png_bomb(64, 48)
    assert Image.open(io.BytesIO(small)).size == (64, 48) == header_size(small)
    assert header_size(jpeg_claiming(30_000, 30_000)) == (30_000, 30_000)


@pytest.mark.parametrize("name,image", [("png 20000x20000", lambda: png_bomb(20_000, 20_000)),
                                        ("png 5000x5000", lambda: png_bomb(5_000, 5_000)),
                                        ("jpeg 30000x30000",
                                         lambda: jpeg_claiming(30_000, 30_000))])
def test_a_pixel_bomb_answers_413_before_pillow_looks(toy_server, name, image):
    url, _ = toy_server
    response = moderate(url, {"image": b64(image()), "text": "hello"})
    assert response.status_code == 413, response.text
    assert response.json()["field"] == "image" and "pixels" in response.json()["error"]


@pytest.mark.parametrize("field", ["text", "id"])
def test_a_text_field_sent_as_a_file_names_the_field(toy_server, field):
    url, _ = toy_server
    data = {"text": "hello"}
    data.pop(field, None)
    response = httpx.post(url + "/v1/moderate", timeout=30, data=data, files={
        "image": ("x.png", png(0.5), "image/png"), field: ("t.txt", b"hello", "text/plain")})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field and "not a file" in response.json()["error"]


def test_the_page_and_the_api_send_security_headers(toy_server):
    url, _ = toy_server
    for response in (httpx.get(url + "/"), moderate(url, UNSAFE),
                     httpx.get(url + "/static/app.js")):
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"


def test_a_header_deadline_leaves_a_steady_keep_alive_client_alone():
    """Three requests on one connection, 0.6 s apart, under a 1 s header deadline."""
    settings = ServeSettings(header_timeout_s=1.0)
    with live_service(settings) as (url, _), httpx.Client(timeout=30) as client:
        for _ in range(3):
            assert client.post(url + "/v1/moderate", json=UNSAFE).status_code == 200
            time.sleep(0.6)


# -- foreign hosts and origins ------------------------------------------------------------------

def _multipart(url, headers):
    return httpx.post(url + "/v1/moderate", timeout=60, headers=headers,
                      files={"image": ("a.png", png(0.95), "image/png")},
                      data={"text": "we bake a cake"})


def test_a_foreign_host_or_origin_cannot_drive_the_service():
    """A page on another site posts a simple (no preflight) multipart form, and a DNS
    rebinding page reads answers under its own host name: both are refused before any route
    runs; the service's own page (same origin) and loopback names keep working."""
    with live_service() as (url, _):
        port = int(url.rsplit(":", 1)[1])
        evil = {"Origin": "http://evil.example", "Host": "evil.example"}
        for headers in (evil, {"Host": "evil.example"}, {"Host": f"evil.example:{port}"},
                        {"Host": "127.0.0.1.evil.example"}):
            refused = _multipart(url, headers)
            assert refused.status_code == 400, (headers, refused.text)
            assert refused.json()["field"] == "host"
        rebound = httpx.get(url + "/v1/info", headers={"Host": f"evil.example:{port}"})
        assert rebound.status_code == 400 and rebound.json()["field"] == "host"
        for origin in ("http://evil.example", f"http://evil.example:{port}", "null",
                       f"http://localhost:{port}", f"https://127.0.0.1:{port}",
                       f"http://127.0.0.1:{port + 1}"):
            refused = _multipart(url, {"Origin": origin})
            assert refused.status_code == 403, (origin, refused.text)
            assert refused.json()["field"] == "origin"
        for host in (f"127.0.0.1:{port}", "127.0.0.1", "localhost", f"localhost:{port}",
                     f"[::1]:{port}", "LOCALHOST"):
            answer = _multipart(url, {"Host": host, "Origin": f"http://{host}"})
            assert answer.status_code == 200, (host, answer.text)
        assert _multipart(url, {}).status_code == 200              # no Origin: not a page
        assert requests_by_status(url) == {"400": 4, "403": 6, "200": 7}


def test_allowed_hosts_and_origins_extend_the_lists():
    settings = ServeSettings(allowed_hosts=("moderation.example",),
                             allowed_origins=("https://app.example",))
    with live_service(settings) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        for host in ("moderation.example", f"moderation.example:{port}"):
            assert _multipart(url, {"Host": host}).status_code == 200
        assert _multipart(url, {"Host": "evil.example"}).status_code == 400
        assert _multipart(url, {"Origin": "https://app.example"}).status_code == 200
        assert _multipart(url, {"Origin": "https://app.example:443"}).status_code == 200
        assert _multipart(url, {"Origin": "http://app.example"}).status_code == 403
    with live_service(ServeSettings(allowed_hosts=("*",))) as (url, _):
        assert _multipart(url, {"Host": "anything.example"}).status_code == 200
        assert _multipart(url, {"Host": "anything.example",
                                "Origin": "http://anything.example"}).status_code == 200
        assert _multipart(url, {"Origin": "http://evil.example"}).status_code == 403


# -- what the protocol answers itself -----------------------------------------------------------

def _read_until_closed(sock: socket.socket, seconds: float) -> tuple[bytes, bool]:
    """Everything the server sends within ``seconds``, and whether it closed the socket."""
    sock.settimeout(0.1)
    data, end = b"", time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def _one_response(sock: socket.socket) -> bytes:
    """One complete response with a Content-Length (within 10 s)."""
    sock.settimeout(0.1)
    data, end = b"", time.monotonic() + 10
    while time.monotonic() < end:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if sep:
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            if len(rest) >= length:
                return data
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            break
        data += chunk
    raise AssertionError(f"no complete response: {data!r}")


def test_a_malformed_body_is_counted_as_the_400_it_got():
    """A bad chunk size gets a JSON 400 naming the body, and /metrics records that 400 (not
    499); a malformed header line gets a JSON 400 naming the headers and, never reaching a
    route, is not counted."""
    with live_service() as (url, _):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"POST /v1/moderate HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                         b"\r\nzz\r\n")
            answer, closed = _read_until_closed(sock, 5)
        assert closed and answer.startswith(b"HTTP/1.1 400"), answer
        deadline = time.monotonic() + 5
        while not requests_by_status(url) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert requests_by_status(url) == {"400": 1}
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["field"] == "body"
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"POST /v1/moderate HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"no colon here\r\n\r\n")
            answer, closed = _read_until_closed(sock, 5)
        assert closed and answer.startswith(b"HTTP/1.1 400"), answer
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["field"] == "headers"
        time.sleep(0.3)
        assert requests_by_status(url) == {"400": 1}


def test_an_idle_keep_alive_connection_is_closed_without_a_response():
    """After a 200 on a keep-alive connection, no byte of a next request: closed at the
    header deadline with nothing sent (a client reusing the connection must not read a 408
    as the answer to its next request).  Part of a next request's headers: 408."""
    settings = ServeSettings(header_timeout_s=1.0)
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with live_service(settings) as (url, _), logged() as log:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as idle, \
                socket.create_connection(("127.0.0.1", port), timeout=5) as partial:
            for sock in (idle, partial):
                sock.sendall(request)
                assert _one_response(sock).startswith(b"HTTP/1.1 200")
            partial.sendall(request[:20])
            start = time.monotonic()
            idle_after, idle_closed = _read_until_closed(idle, 3)
            partial_after, partial_closed = _read_until_closed(partial, 3)
            took = time.monotonic() - start
        assert idle_closed and idle_after == b"", idle_after
        assert partial_closed and partial_after.startswith(b"HTTP/1.1 408"), partial_after
        assert b'"field":"headers"' in partial_after
        assert took < 3.0
        assert read_timeouts(url) == {"idle": 1, "headers": 1}
        assert not log.errors()
